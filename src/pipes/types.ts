/**
 * The pipe SDK (pipes.md): what a pipe module exports and what it sees per
 * request. Exported from the package so custom pipes are typed end to end.
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import type { Store } from '../store/types'

export type Phase = 'inbound' | 'outbound'

/** The request as inbound pipes see and change it before it goes upstream. */
export interface PipeRequest {
  readonly method: string
  /** The client's path, as requested (no query). */
  readonly path: string
  /** Path sent upstream; defaults to the route's upstream_path with its values. Writable. */
  upstreamPath: string
  /** The query string sent upstream. Writable (it is re-encoded when changed). */
  readonly query: URLSearchParams
  /** Headers sent upstream (hop-by-hop ones already removed). Writable. */
  readonly headers: IncomingHttpHeaders
  /** The client's address: the socket's, or the first untrusted hop of X-Forwarded-For. */
  readonly ip: string
  /** Buffers the body within the limit; those bytes (or setBody's) then go upstream. */
  body (): Promise<Buffer>
  /** Replaces the body sent upstream (Content-Length follows). */
  setBody (body: Buffer | string): void
  /** The underlying Node request, for middleware adapters. */
  readonly raw: IncomingMessage
}

/** The upstream's response as outbound pipes see and change it. */
export interface PipeResponse {
  status: number
  /** Response headers for the client (hop-by-hop ones already removed). Writable. */
  readonly headers: OutgoingHttpHeaders
  /** The body, buffered; only for pipes that declare `buffer: true`. */
  body (): Promise<Buffer>
  /** Replaces the body (a non-Buffer, non-string value is sent as JSON). Needs `buffer: true`. */
  setBody (body: Buffer | string | object): void
}

export interface RouteInfo {
  readonly name: string
  readonly service: string
}

export interface PipeContext {
  readonly request: PipeRequest
  /** Present in outbound pipes only. */
  readonly response: PipeResponse | undefined
  /** Placeholder values matched from the URL. */
  readonly params: Readonly<Record<string, string>>
  readonly route: RouteInfo
  /** Shared by the pipes of one request (e.g. verified JWT claims under 'jwt.claims'). */
  readonly state: Map<string, unknown>
  /** A child logger carrying the request id. */
  readonly log: Logger
  readonly requestId: string
  /** Ends the request at the gateway: later pipes and the upstream are skipped. */
  respond (status: number, body?: Buffer | string | object, headers?: Record<string, string | string[]>): never
  /** Ends the request with the standard JSON error (`error_code` = code). */
  fail (status: number, code: string, message?: string, headers?: Record<string, string>): never
  /** Adds a header to the client's response, whatever answers it (upstream or gateway). */
  setResponseHeader (name: string, value: string | number | string[]): void
  /** The underlying Node objects, for adapters of Express/connect middleware. */
  readonly raw: { readonly req: IncomingMessage, readonly res: ServerResponse }
}

export type InboundContext = PipeContext & { readonly response: undefined }
export type OutboundContext = PipeContext & { readonly response: PipeResponse }

export type PipeHandler<C extends PipeContext = PipeContext> = (ctx: C) => void | Promise<void>

/** A pipe that acts both ways (e.g. cors: answers preflights, decorates responses). */
export interface PipeHandlers {
  inbound?: PipeHandler<InboundContext>
  outbound?: PipeHandler<OutboundContext>
  /**
   * Runs on every request before every other inbound pipe of the route
   * (global ones too), and for CORS preflights on a path whose routes do
   * not declare OPTIONS: preflights are answered before any auth pipe runs,
   * and headers it sets reach refusals by pipes placed before it.
   */
  preflight?: PipeHandler<InboundContext>
}

/** What `create` gets besides the properties: shared services of the gateway. */
export interface PipeCreateContext {
  /** The route the pipe is placed on; undefined for global pipes. */
  readonly route: RouteInfo | undefined
  /** The shared store (memory or Redis): counters with TTLs. */
  readonly store: Store
  readonly log: Logger
  /** Folder of routes.yaml, for pipes that read files named in their properties. */
  readonly configDir: string
}

// `any` by default so the spec's untyped `create (props)` reads props.header
// without a cast; give P (or annotate props) for real checking.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export interface PipeDefinition<P = Record<string, any>> {
  /** The name routes.yaml uses; for a module in pipes_dir it must be the file stem. */
  name: string
  /** Where it may be placed; 'both' for pipes that return PipeHandlers. */
  phase: Phase | 'both'
  /** JSON Schema of `properties`, checked (and defaults filled) at load. */
  schema?: object
  /** Outbound: the pipe reads or replaces the response body, so it is buffered. */
  buffer?: boolean
  /** Called once per placement at load; a throw is a config error at the pipe's line. */
  create (properties: P, context: PipeCreateContext): PipeHandler | PipeHandlers
}

/** Typing helper for pipe modules: `export default definePipe({...})`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function definePipe<P = Record<string, any>> (definition: PipeDefinition<P>): PipeDefinition<P> {
  return definition
}

/** What a service's custom exception handler gets (pipes.md "Custom exception handlers"). */
export interface ExceptionHandler {
  handle (error: { code: string, status: number, message: string }, ctx: PipeContext): void | Promise<void>
}

export function defineExceptionHandler (handler: ExceptionHandler): ExceptionHandler {
  return handler
}
