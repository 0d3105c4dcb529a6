/**
 * Forwarding through http-proxy 1.18.1, with its known flaws fixed here
 * rather than by forking it (see ../shared/PERFORMANCE.md for why we keep it):
 *  - its `deleteLength` pass rewrites a chunked DELETE/OPTIONS to
 *    `Content-Length: 0` and still pipes the body, so the body is read by the
 *    upstream as a second request (request smuggling): the pass is removed;
 *  - it aborts the upstream on the request's 'aborted' event, which Node no
 *    longer emits once the request body is complete: the client's response
 *    'close' aborts it instead;
 *  - a deadline it would report as ECONNRESET is our own timer, answered 504;
 *  - an exception in one of its event listeners would crash the process:
 *    every listener is guarded.
 */
import httpProxy from 'http-proxy'
import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex, Readable } from 'node:stream'
import type { Logger } from 'pino'
import { GatewayError } from '../errors'
import { type Exchange, exchangeOf, kExchange } from '../exchange'
import type { Instance } from '../upstream/service'
import { stripResponseHeaders } from './headers'

export interface ForwarderHooks {
  /** The upstream failed before answering; the exchange is settled by the hook. */
  onFailure (ex: Exchange, error: GatewayError, cause: unknown): void
}

export interface Forwarder {
  web (ex: Exchange, instance: Instance, body?: Readable): void
  ws (req: IncomingMessage, socket: Duplex, head: Buffer, instance: Instance, onError: (err: Error) => void): void
}

type Pass = (...args: unknown[]) => unknown
interface ProxyWithPasses { webPasses: Pass[] }

/** Removes http-proxy's deleteLength pass; throws if it is not where we expect it. */
export function removeDeleteLengthPass (proxy: httpProxy): void {
  const passes = (proxy as unknown as ProxyWithPasses).webPasses
  const index = passes.findIndex(pass => pass.name === 'deleteLength')
  if (index === -1) throw new Error('http-proxy has no deleteLength pass any more: re-check the request-smuggling fix in src/proxy/forwarder.ts')
  passes.splice(index, 1)
}

const kUpstreamExchange = Symbol('sluice.upstream-exchange')
type Tagged<T> = T & { [kUpstreamExchange]?: Exchange }

export function createForwarder (hooks: ForwarderHooks, log: Logger): Forwarder {
  const proxy = httpProxy.createProxyServer({})
  removeDeleteLengthPass(proxy)

  function guard<A extends unknown[]> (name: string, fn: (this: unknown, ...args: A) => void) {
    return function (this: unknown, ...args: A): void {
      try { fn.apply(this, args) } catch (err) {
        log.error({ err, listener: name }, 'proxy listener failed')
        const res = args[2]
        if (res !== null && typeof res === 'object' && 'destroy' in res) (res as { destroy (): void }).destroy()
      }
    }
  }

  function fail (ex: Exchange, error: GatewayError, cause: unknown): void {
    if (ex.settled || ex.clientGone) return
    ex.settled = true
    if (ex.timer !== undefined) { clearTimeout(ex.timer); ex.timer = undefined }
    hooks.onFailure(ex, error, cause)
  }

  proxy.on('proxyReq', guard('proxyReq', (proxyReq: ClientRequest, req: IncomingMessage) => {
    const ex = exchangeOf(req)
    if (ex === undefined) return
    ex.proxyReq = proxyReq
    if (ex.clientGone || ex.settled) proxyReq.destroy()
  }))

  proxy.on('proxyRes', guard('proxyRes', (proxyRes: Tagged<IncomingMessage>, req: IncomingMessage, res: ServerResponse) => {
    const ex = exchangeOf(req)
    if (ex === undefined) return
    if (ex.timer !== undefined) { clearTimeout(ex.timer); ex.timer = undefined }
    if (ex.settled) { proxyRes.destroy(); return }
    ex.settled = true
    ex.upstreamStatus = proxyRes.statusCode ?? 0
    stripResponseHeaders(proxyRes.headers)
    // http-proxy copies the client's Connection header into the response,
    // but that header was removed on the way up: say what Node will do.
    proxyRes.headers.connection = res.shouldKeepAlive ? 'keep-alive' : 'close'
    proxyRes[kUpstreamExchange] = ex
    proxyRes.on('close', onUpstreamClose)
  }))

  proxy.on('error', guard('error', (err: Error, req: IncomingMessage, res: ServerResponse | Duplex) => {
    const ex = exchangeOf(req)
    if (ex === undefined) { log.warn({ err }, 'proxy error without an exchange'); res.destroy(); return }
    if (ex.settled && !ex.res.headersSent) return
    if (ex.res.headersSent) { ex.res.destroy(); return }
    fail(ex, new GatewayError('UpstreamUnreachable', `service "${ex.service.name}" could not be reached`), err)
  }))

  // The client went away before the upstream answered; http-proxy has
  // already aborted the upstream request for this case.
  proxy.on('econnreset', guard('econnreset', (_err: Error, req: IncomingMessage) => {
    const ex = exchangeOf(req)
    if (ex !== undefined) ex.clientGone = true
  }))

  /** An upstream that dies mid-body must not leave the client waiting. */
  function onUpstreamClose (this: Tagged<IncomingMessage>): void {
    if (!this.complete) this[kUpstreamExchange]?.res.destroy()
  }

  function onClientClose (this: ServerResponse): void {
    const ex = exchangeOf(this.req)
    if (ex === undefined) return
    if (ex.instance !== undefined) ex.instance.inflight--
    if (ex.timer !== undefined) { clearTimeout(ex.timer); ex.timer = undefined }
    if (!this.writableFinished) {
      ex.clientGone = true
      ex.proxyReq?.destroy()
    }
  }

  function onDeadline (ex: Exchange): void {
    ex.timer = undefined
    const ms = ex.service.config.timeout_ms
    fail(ex, new GatewayError('UpstreamTimeout', `service "${ex.service.name}" did not answer within ${ms} ms`), undefined)
    ex.proxyReq?.destroy()
  }

  function onBodyError (this: Readable & { [kUpstreamExchange]?: Exchange }, err: Error): void {
    const ex = this[kUpstreamExchange]
    if (ex === undefined) return
    fail(ex, err instanceof GatewayError ? err : new GatewayError('BadRequest', 'the request body could not be read'), err)
    ex.proxyReq?.destroy()
  }

  return {
    web (ex, instance, body) {
      const { req, res } = ex
      ex.instance = instance
      instance.inflight++
      ;(req as IncomingMessage & { [kExchange]?: Exchange })[kExchange] = ex
      res.on('close', onClientClose)
      const timeout = ex.service.config.timeout_ms
      if (timeout > 0) ex.timer = setTimeout(onDeadline, timeout, ex)
      if (body === undefined) {
        proxy.web(req, res, instance.proxyOptions)
      } else {
        ;(body as Readable & { [kUpstreamExchange]?: Exchange })[kUpstreamExchange] = ex
        body.on('error', onBodyError)
        proxy.web(req, res, { ...instance.proxyOptions, buffer: body })
      }
    },
    ws (req, socket, head, instance, onError) {
      proxy.ws(req, socket, head, instance.proxyOptions, (err: Error) => onError(err))
    },
  }
}
