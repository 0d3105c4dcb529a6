/**
 * The state of one request on its way through the gateway. One object per
 * request with a fixed shape; the proxy's event listeners find it through
 * the request (`req[kExchange]`), so no closure is allocated per request.
 */
import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http'
import type { Instance, Service } from './upstream/service'

export const kExchange = Symbol('sluice.exchange')

export interface ExchangeCarrier { [kExchange]?: Exchange }

export class Exchange {
  /** The instance the request was sent to. */
  instance: Instance | undefined = undefined
  proxyReq: ClientRequest | undefined = undefined
  /** Deadline until upstream response headers (`timeout_ms`). */
  timer: NodeJS.Timeout | undefined = undefined
  /** Set once a response (or an error response) has been decided. */
  settled = false
  clientGone = false
  upstreamStatus = 0

  constructor (
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly requestId: string,
    readonly routeName: string,
    readonly service: Service,
    readonly startedAt: number,
  ) {}
}

export function exchangeOf (req: IncomingMessage): Exchange | undefined {
  return (req as IncomingMessage & ExchangeCarrier)[kExchange]
}
