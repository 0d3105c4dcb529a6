/**
 * The context pipes see per request (pipes.md), and the signals that end a
 * request early: `respond` and `fail` throw, so a pipe's `never` return
 * type is honest and the runner has one place that answers.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { Logger } from 'pino'
import { GatewayError } from '../errors'
import type { Exchange } from '../exchange'
import { readBody } from '../proxy/body'
import type { TrustCheck } from '../proxy/headers'
import type { PipeContext, PipeRequest, PipeResponse, RouteInfo } from './types'

/** Thrown by `ctx.respond`: the gateway answers with this instead of the upstream. */
export class Respond {
  constructor (readonly status: number, readonly body: Buffer, readonly headers: Record<string, string | string[]>) {}
}

export function encodeBody (body: Buffer | string | object | undefined): { bytes: Buffer, json: boolean } {
  if (body === undefined) return { bytes: Buffer.alloc(0), json: false }
  if (Buffer.isBuffer(body)) return { bytes: body, json: false }
  if (typeof body === 'string') return { bytes: Buffer.from(body), json: false }
  return { bytes: Buffer.from(JSON.stringify(body)), json: true }
}

export class RequestView implements PipeRequest {
  /** The upstream path from upstream_path and the request's values. */
  defaultUpstreamPath = ''
  private override: string | undefined = undefined
  private search: URLSearchParams | undefined = undefined
  private searchAsParsed = ''
  private buffered: Promise<Buffer> | undefined = undefined
  /** Bytes to send upstream instead of the streamed body, once read or replaced. */
  outgoingBody: Buffer | undefined = undefined

  constructor (
    private readonly ex: Exchange,
    readonly path: string,
    /** The raw query string, without `?`. */
    private readonly rawQuery: string,
    private readonly maxBody: number,
    private readonly trust: TrustCheck | undefined,
  ) {}

  get method (): string { return this.ex.req.method ?? 'GET' }
  get headers (): IncomingHttpHeaders { return this.ex.req.headers }
  get raw () { return this.ex.req }

  get upstreamPath (): string { return this.override ?? this.defaultUpstreamPath }
  set upstreamPath (value: string) {
    if (!value.startsWith('/')) throw new GatewayError('InternalServerError', 'upstreamPath must start with "/"')
    this.override = value
  }

  get query (): URLSearchParams {
    if (this.search === undefined) {
      this.search = new URLSearchParams(this.rawQuery)
      this.searchAsParsed = this.search.toString()
    }
    return this.search
  }

  /** `?…` to send upstream: the client's own bytes unless a pipe changed the query. */
  queryString (): string {
    if (this.search !== undefined) {
      const now = this.search.toString()
      if (now !== this.searchAsParsed) return now === '' ? '' : `?${now}`
    }
    return this.rawQuery === '' ? '' : `?${this.rawQuery}`
  }

  /** The client: the socket's address, or with trusted proxies the first untrusted X-Forwarded-For hop. */
  get ip (): string {
    const address = this.ex.req.socket.remoteAddress ?? ''
    if (this.trust === undefined || !this.trust(address)) return address
    const hops = String(this.ex.req.headers['x-forwarded-for'] ?? '').split(',').map(h => h.trim()).filter(h => h !== '')
    for (let i = hops.length - 1; i >= 0; i--) if (!this.trust(hops[i])) return hops[i]
    return hops[0] ?? address
  }

  body (): Promise<Buffer> {
    this.buffered ??= readBody(this.ex.req, this.maxBody).then((bytes) => {
      this.outgoingBody ??= bytes
      return bytes
    })
    return this.buffered
  }

  setBody (body: Buffer | string): void {
    this.outgoingBody = typeof body === 'string' ? Buffer.from(body) : body
    this.buffered ??= Promise.resolve(this.outgoingBody)
  }
}

export class ResponseView implements PipeResponse {
  buffered: Buffer | undefined = undefined
  replaced: Buffer | undefined = undefined
  constructor (public status: number, readonly headers: OutgoingHttpHeaders, private readonly canBuffer: boolean) {}

  async body (): Promise<Buffer> {
    if (!this.canBuffer) throw new Error('response.body() needs a pipe with `buffer: true`')
    return this.replaced ?? this.buffered ?? Buffer.alloc(0)
  }

  setBody (body: Buffer | string | object): void {
    if (!this.canBuffer) throw new Error('response.setBody() needs a pipe with `buffer: true`')
    const { bytes, json } = encodeBody(body)
    this.replaced = bytes
    if (json) this.headers['content-type'] = 'application/json; charset=utf-8'
  }
}

export class Context implements PipeContext {
  response: ResponseView | undefined = undefined
  readonly state = new Map<string, unknown>()
  /** The pipe running now, for the log line of a pipe that throws. */
  current = ''
  private childLog: Logger | undefined = undefined

  constructor (
    private readonly ex: Exchange,
    readonly request: RequestView,
    readonly params: Readonly<Record<string, string>>,
    readonly route: RouteInfo,
    private readonly baseLog: Logger,
  ) {}

  get requestId (): string { return this.ex.requestId }
  get log (): Logger { return (this.childLog ??= this.baseLog.child({ request_id: this.ex.requestId, route: this.route.name })) }
  get raw () { return { req: this.ex.req, res: this.ex.res } }

  respond (status: number, body?: Buffer | string | object, headers: Record<string, string | string[]> = {}): never {
    const { bytes, json } = encodeBody(body)
    throw new Respond(status, bytes, json ? { 'content-type': 'application/json; charset=utf-8', ...headers } : headers)
  }

  fail (status: number, code: string, message?: string, headers?: Record<string, string>): never {
    throw new GatewayError(code, message, { status, headers })
  }

  setResponseHeader (name: string, value: string | number | string[]): void {
    if (!this.ex.res.headersSent) this.ex.res.setHeader(name, value)
  }
}
