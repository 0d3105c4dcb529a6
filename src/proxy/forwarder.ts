/**
 * Forwarding one request upstream and its response back.
 *
 * Built on http-proxy 1.18.1 (its ws passes tunnel WebSockets; the
 * options its `setupOutgoing` would give an upstream request are shaped per
 * instance at load, in ./outgoing.ts) but not on its web "stream" pass,
 * whose flaws are fixed here by construction rather than patched around
 * (PERFORMANCE.md explains why we keep http-proxy at all):
 *  - the `deleteLength` pass rewrites a chunked DELETE/OPTIONS to
 *    `Content-Length: 0` and still pipes the body, which the upstream reads
 *    as a second request (request smuggling): it is never run;
 *  - its abort listens for the request's 'aborted', which Node no longer
 *    emits once the request body is complete: the response's 'close' is used;
 *  - its timeouts surface as ECONNRESET: our deadline answers 504 itself;
 *  - a throw in an event listener would crash the process: there are no
 *    emitted events, and the listeners below cannot throw past their guard.
 * It also costs less per request than the pass it replaces: two listeners
 * per request, against six listeners and three emitted events. A client can
 * only abort an HTTP/1.1 request by closing its connection, and an upstream
 * that dies mid-body closes its socket, so those are watched once per
 * connection: each socket points at the exchange using it now.
 */
import type { ClientRequest, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import type { Duplex, Readable } from 'node:stream'
import httpProxy from 'http-proxy'
import type { Logger } from 'pino'
import { GatewayError } from '../errors'
import { type Exchange, kExchange } from '../exchange'
import { kRecord, type RequestRecord } from '../observability/requests'
import { hasBody } from './body'
import type { Instance } from '../upstream/service'

export interface ForwarderHooks {
  /** The upstream failed before answering; the exchange is settled by the hook. */
  onFailure (ex: Exchange, error: GatewayError, cause: unknown): void
  /** The upstream answered an exchange with `intercept` set: the hook decides and writes. */
  onResponse (ex: Exchange, upstream: IncomingMessage): void
  /** The client went away while its request was with the upstream. */
  onClientGone (ex: Exchange): void
}

export interface Forwarder {
  web (ex: Exchange, instance: Instance, body?: Readable): void
  /** Sends an upstream response on as it is (the path without interception). */
  pass (ex: Exchange, upstream: IncomingMessage): void
  /** Called by a service's DeadlineQueue when a request's `timeout_ms` passed without response headers. */
  expire (ex: Exchange): void
  ws (req: IncomingMessage, socket: Duplex, head: Buffer, instance: Instance, onError: (err: Error) => void): void
}

type Carrier<T> = T & { [kExchange]?: Exchange }

/** The exchange a socket serves now, and whether its listeners are on. */
const kActive = Symbol('sluice.active')
const kWatched = Symbol('sluice.watched')
type Watched = Socket & { [kActive]?: Exchange, [kWatched]?: true }

// Response headers that belong to the upstream connection, not the client's
// (RFC 9110 §7.6.1). Node frames the client response itself.
const HOP_BY_HOP_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'trailer', 'te'])

function listedInConnection (connection: string | undefined): Set<string> | undefined {
  return connection === undefined || connection === 'keep-alive' || connection === 'close'
    ? undefined
    : new Set(connection.toLowerCase().split(',').map(t => t.trim()))
}

/** The upstream response's end-to-end headers, as a new object outbound pipes may change. */
export function endToEndHeaders (upstream: IncomingMessage): OutgoingHttpHeaders {
  const headers = upstream.headers
  const named = listedInConnection(headers.connection)
  const out: OutgoingHttpHeaders = {}
  for (const name in headers) {
    if (HOP_BY_HOP_RESPONSE.has(name) || named?.has(name) === true) continue
    out[name] = headers[name]
  }
  return out
}

/**
 * Copies status and end-to-end headers of the upstream response. The
 * upstream's `headers` object is left as it is: Node's agent reads its
 * Keep-Alive hint from there when the socket goes back to the pool.
 */
function writeResponseHead (res: ServerResponse, upstream: IncomingMessage): void {
  const headers = upstream.headers
  const named = listedInConnection(headers.connection)
  for (const name in headers) {
    if (HOP_BY_HOP_RESPONSE.has(name) || named?.has(name) === true) continue
    const value = headers[name]
    if (value !== undefined) res.setHeader(name, value)
  }
  res.statusCode = upstream.statusCode ?? 502
  if (upstream.statusMessage !== undefined && upstream.statusMessage !== '') res.statusMessage = upstream.statusMessage
}

const kRelayTo = Symbol('sluice.relayTo')
type Relayed = IncomingMessage & { [kRelayTo]?: ServerResponse }

/**
 * Sends an upstream response's body on to the client: what
 * `upstream.pipe(res)` does for one source and one destination, with two
 * shared listeners instead of the eight closures and seven listeners pipe()
 * adds and removes per response. Backpressure as with pipe(): a write the
 * client cannot take yet pauses the upstream until the response drains. A
 * client that goes away is seen per connection (its upstream request is
 * destroyed, so no more data comes), and an upstream that dies mid-body
 * destroys the response (watchUpstreamSocket below).
 */
export function relay (upstream: IncomingMessage, res: ServerResponse): void {
  // A body read to its end by whoever read its start (an outbound pipe's over-limit read).
  if (upstream.readableEnded) { res.end(); return }
  ;(upstream as Relayed)[kRelayTo] = res
  upstream.on('data', onRelayData)
  upstream.on('end', onRelayEnd)
  // As pipe() does: chunks written before the relay began may have filled
  // the response; a body paused by whoever read its start must flow again.
  if (res.writableNeedDrain) awaitDrain(upstream, res)
  else if (upstream.readableFlowing !== true) upstream.resume()
}

function onRelayData (this: Relayed, chunk: Buffer): void {
  const res = this[kRelayTo] as ServerResponse
  if (!res.write(chunk) && !res.destroyed) awaitDrain(this, res)
}

function onRelayEnd (this: Relayed): void {
  const res = this[kRelayTo] as ServerResponse
  if (!res.destroyed) res.end()
}

function awaitDrain (upstream: IncomingMessage, res: ServerResponse): void {
  upstream.pause()
  res.once('drain', () => upstream.resume())
}

export function createForwarder (hooks: ForwarderHooks, log: Logger): Forwarder {
  const wsProxy = httpProxy.createProxyServer({})
  // What the upstream answered an upgrade with, for its access line: 101 and a tunnel, or a refusal passed on.
  wsProxy.on('proxyReqWs', (proxyReq: ClientRequest, req: IncomingMessage & { [kRecord]?: RequestRecord }) => {
    const record = req[kRecord]
    if (record === undefined) return
    const sentAt = performance.now()
    const answered = (status: number): void => {
      record.status = status
      record.fromUpstream = true
      record.upstreamMs = performance.now() - sentAt
    }
    proxyReq.once('upgrade', () => answered(101))
    proxyReq.once('response', (res: IncomingMessage) => answered(res.statusCode ?? 502))
  })

  function release (ex: Exchange): void {
    if (ex.released) return
    ex.released = true
    if (ex.instance !== undefined) ex.instance.inflight--
  }

  function fail (ex: Exchange, error: GatewayError, cause: unknown): void {
    if (ex.settled || ex.clientGone) return
    ex.settled = true
    ex.service.deadlines.remove(ex)
    try {
      hooks.onFailure(ex, error, cause)
    } catch (err) {
      log.error({ err, request_id: ex.requestId }, 'failure hook threw')
      ex.res.destroy()
    }
  }

  function onUpstreamError (this: Carrier<ClientRequest>, err: Error): void {
    const ex = this[kExchange]
    if (ex === undefined) return
    release(ex)
    if (ex.clientGone) return
    if (ex.settled) {
      // Mid-response (or after our own 504): the client's response cannot be repaired.
      if (!ex.res.writableFinished) ex.res.destroy()
      return
    }
    fail(ex, new GatewayError('UpstreamUnreachable', `service "${ex.service.name}" could not be reached`), err)
  }

  function onUpstreamResponse (this: Carrier<ClientRequest>, upstream: Carrier<IncomingMessage>): void {
    const ex = this[kExchange]
    if (ex === undefined) { upstream.destroy(); return }
    ex.service.deadlines.remove(ex)
    if (ex.settled || ex.clientGone) { upstream.destroy(); return }
    ex.settled = true
    const ms = performance.now() - ex.sentAt
    ex.upstreamMs = ms
    ex.service.observeUpstream(ms / 1000)
    ex.upstreamStatus = upstream.statusCode ?? 0
    ex.upstreamRes = upstream
    watchUpstreamSocket(this.socket as Watched | null, ex)
    if (ex.intercept) {
      hooks.onResponse(ex, upstream)
      return
    }
    pass(ex, upstream)
  }

  function pass (ex: Exchange, upstream: IncomingMessage): void {
    const res = ex.res
    if (res.headersSent) { upstream.destroy(); return }
    try {
      writeResponseHead(res, upstream)
    } catch (err) {
      // e.g. a header value Node refuses to write: the client gets a 502, not a crash.
      log.warn({ err, request_id: ex.requestId }, 'upstream response headers could not be written')
      upstream.destroy()
      ex.settled = false
      fail(ex, new GatewayError('UpstreamUnreachable', `service "${ex.service.name}" sent a response that could not be forwarded`), err)
      return
    }
    ex.fromUpstream = true
    relay(upstream, res)
  }

  function watchUpstreamSocket (socket: Watched | null, ex: Exchange): void {
    if (socket === null) return
    socket[kActive] = ex
    if (socket[kWatched] === undefined) {
      socket[kWatched] = true
      socket.on('free', onUpstreamSocketFree)
      socket.on('close', onUpstreamSocketClose)
    }
  }

  /** The agent took the socket back: the exchange's upstream work is done. */
  function onUpstreamSocketFree (this: Watched): void {
    const ex = this[kActive]
    this[kActive] = undefined
    if (ex !== undefined) release(ex)
  }

  /** An upstream that dies mid-body must not leave the client waiting. */
  function onUpstreamSocketClose (this: Watched): void {
    const ex = this[kActive]
    this[kActive] = undefined
    if (ex === undefined) return
    release(ex)
    if (ex.upstreamRes !== undefined && !ex.upstreamRes.complete) ex.res.destroy()
  }

  /** The client closed its connection: abort what it was waiting for. */
  function onClientSocketClose (this: Watched): void {
    const ex = this[kActive]
    this[kActive] = undefined
    if (ex === undefined || ex.res.writableFinished) return
    ex.clientGone = true
    ex.service.deadlines.remove(ex)
    ex.proxyReq?.destroy()
    release(ex)
    hooks.onClientGone(ex)
  }

  function onDeadline (ex: Exchange): void {
    const ms = ex.service.config.timeout_ms
    fail(ex, new GatewayError('UpstreamTimeout', `service "${ex.service.name}" did not answer within ${ms} ms`), undefined)
    ex.proxyReq?.destroy()
  }

  function onBodyError (this: Carrier<Readable>, err: Error): void {
    const ex = this[kExchange]
    if (ex === undefined) return
    fail(ex, err instanceof GatewayError ? err : new GatewayError('BadRequest', 'the request body could not be read'), err)
    ex.proxyReq?.destroy()
  }

  return {
    web (ex, instance, body) {
      const { req, res } = ex
      ex.instance = instance
      instance.inflight++
      const client = req.socket as Watched
      client[kActive] = ex
      if (client[kWatched] === undefined) {
        client[kWatched] = true
        client.on('close', onClientSocketClose)
      }
      let upstream: Carrier<ClientRequest>
      try {
        upstream = instance.request(instance.outgoing(req))
      } catch (err) {
        // Node refused the request as built (e.g. a header a pipe set badly).
        log.error({ err, request_id: ex.requestId }, 'upstream request could not be built')
        release(ex)
        fail(ex, new GatewayError('InternalServerError'), err)
        return
      }
      ex.proxyReq = upstream
      ex.sentAt = performance.now()
      upstream[kExchange] = ex
      upstream.on('error', onUpstreamError)
      upstream.on('response', onUpstreamResponse)
      ex.service.deadlines.add(ex)
      if (body === undefined) {
        // A request without a body has nothing to pipe: ending the upstream
        // request sends its head at once and spares pipe()'s seven
        // listeners. Node reads the (empty) request to its end when the
        // response finishes.
        if (hasBody(req.headers)) req.pipe(upstream)
        else upstream.end()
      } else {
        ;(body as Carrier<Readable>)[kExchange] = ex
        body.on('error', onBodyError)
        body.pipe(upstream)
      }
    },
    expire: onDeadline,
    pass,
    ws (req, socket, head, instance, onError) {
      wsProxy.ws(req, socket, head, instance.proxyOptions, (err: Error) => onError(err))
    },
  }
}
