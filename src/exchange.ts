/**
 * The state of one request on its way through the gateway. One object per
 * request with a fixed shape; listeners find it through the object they are
 * called on (`upstream[kExchange]`), so no closure is allocated per request.
 */
import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http'
import type { Context } from './pipes/context'
import type { CompiledPipeline } from './pipes/compile'
import type { CompiledRoute } from './routing/compile'
import type { DeadlineEntry } from './upstream/deadlines'
import type { Instance, Service } from './upstream/service'

export const kExchange = Symbol('sluice.exchange')

export class Exchange implements DeadlineEntry {
  /** The instance the request was sent to. */
  instance: Instance | undefined = undefined
  proxyReq: ClientRequest | undefined = undefined
  /** Deadline until upstream response headers (`timeout_ms`): the service's DeadlineQueue. */
  deadline = 0
  prevDeadline: DeadlineEntry | undefined = undefined
  nextDeadline: DeadlineEntry | undefined = undefined
  queued = false
  /** Set once a response (or an error response) has been decided. */
  settled = false
  clientGone = false
  /** The instance's in-flight count was given back. */
  released = false
  upstreamStatus = 0
  upstreamRes: IncomingMessage | undefined = undefined
  /** The route's pipes, and their per-request context, when it has any. */
  pipes: CompiledPipeline | undefined = undefined
  ctx: Context | undefined = undefined
  /** The gateway decides what an upstream response means (breaker, retries, outbound pipes). */
  intercept = false
  /** Settles the current attempt for the breaker; set on services with one. */
  outcome: { resolve (): void, reject (err: Error): void } | undefined = undefined
  /** Attempts made so far (retries). */
  attempts = 0
  /** The request body kept for replay, when it was buffered. */
  bodyBytes: Buffer | undefined = undefined
  route: CompiledRoute | undefined = undefined
  /** performance.now() when the current attempt was sent upstream. */
  sentAt = 0
  /** Milliseconds until the upstream's response headers (the last attempt's); -1 before any. */
  upstreamMs = -1
  /** The client's status came from an upstream response (metrics' source="upstream"). */
  fromUpstream = false

  constructor (
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly requestId: string,
    readonly routeName: string,
    readonly service: Service,
  ) {}
}
