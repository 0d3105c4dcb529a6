/**
 * The gateway: a request is matched, its inbound work done, an instance of
 * its service resolved, then it is forwarded; any failure becomes the JSON
 * error of http.md. Read `dispatch` top to bottom to follow a request:
 *
 *   match → inbound → resolve → forward → (outbound) → errors
 *
 * The data plane runs on plain node:http objects; `middleware` has the
 * (req, res, next) shape so the same handlers mount into an Express app.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import https from 'node:https'
import fs from 'node:fs'
import type { AddressInfo } from 'node:net'
import { PassThrough, type Duplex, type Readable } from 'node:stream'
import { performance } from 'node:perf_hooks'
import type { LoadedConfig } from './config/types'
import { GatewayError, isGatewayError } from './errors'
import { Exchange } from './exchange'
import { silentLogger, type Logger } from './observability/logger'
import { declaredTooLarge, LimitStream, readBody, tooLarge } from './proxy/body'
import { createForwarder } from './proxy/forwarder'
import { compileTrust, prepareRequestHeaders, requestIdFor, type TrustCheck } from './proxy/headers'
import { sendError, sendUpgradeError } from './respond'
import { compileRoutes, type CompiledRoute } from './routing/compile'
import { bodyCanHold, fromBody, fromHeadersAndQuery } from './routing/extra-params'
import { checkValue } from './routing/params'
import type { RouteTable } from './routing/table'
import { createService, type Service } from './upstream/service'

export interface GatewayOptions {
  config: LoadedConfig
  logger?: Logger
}

/** Everything compiled from one version of the config; swapped whole on reload. */
export interface Generation {
  readonly loaded: LoadedConfig
  readonly routes: readonly CompiledRoute[]
  readonly table: RouteTable<CompiledRoute>
  readonly services: ReadonlyMap<string, Service>
  readonly trust: TrustCheck | undefined
  readonly maxBody: number
}

export type Next = (err?: unknown) => void

export interface Gateway {
  /** For a node:http server: answers every request, 404 included. */
  readonly handler: (req: IncomingMessage, res: ServerResponse) => void
  /** For Express/connect: a request no route matches goes on to `next()`. */
  readonly middleware: (req: IncomingMessage, res: ServerResponse, next: Next) => void
  /** For a server's 'upgrade' event: WebSocket routes. */
  readonly upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void
  readonly generation: Generation
  /** Starts the gateway's own listener (server.host/port unless given). */
  listen (options?: { port?: number, host?: string }): Promise<AddressInfo>
  close (): Promise<void>
}

/** Compiles a config; `onDeadline` answers requests whose upstream timed out (none when only inspecting). */
export function compileGeneration (loaded: LoadedConfig, onDeadline: (ex: Exchange) => void = () => {}): Generation {
  const { config } = loaded
  const services = new Map<string, Service>()
  for (const [name, svc] of Object.entries(config.services)) services.set(name, createService(name, svc, onDeadline))
  const { routes, table } = compileRoutes(loaded, services)
  return Object.freeze({
    loaded,
    routes,
    table,
    services,
    trust: compileTrust(config.server.trust_proxy),
    maxBody: config.server.limits.max_body_bytes,
  })
}

export function createGateway (options: GatewayOptions): Gateway {
  const log = options.logger ?? silentLogger()
  const forwarder = createForwarder({
    onFailure (ex, error, cause) {
      log.warn({ request_id: ex.requestId, route: ex.routeName, service: ex.service.name, instance: ex.instance?.url, err: cause }, error.code)
      sendError(ex.res, error, ex.requestId, ex.req.method === 'HEAD')
    },
  }, log)
  const generation = compileGeneration(options.config, forwarder.expire)
  let server: http.Server | https.Server | undefined

  // ── match ────────────────────────────────────────────────────────────────
  function dispatch (req: IncomingMessage, res: ServerResponse, next: Next | undefined): void {
    const gen = generation
    const url = req.url ?? '/'
    const q = url.indexOf('?')
    const path = q === -1 ? url : url.slice(0, q)
    const query = q === -1 ? '' : url.slice(q)
    const match = gen.table.find(req.method ?? 'GET', path)
    if (match === null) { miss(gen, req, res, path, query, next); return }

    const route = match.route
    const requestId = prepareRequestHeaders(req, gen.trust, false)
    res.setHeader('x-request-id', requestId)
    const ex = new Exchange(req, res, requestId, route.name, route.service, performance.now())
    try {
      if (declaredTooLarge(req, gen.maxBody)) throw tooLarge(gen.maxBody)
      const values = match.params
      // ── inbound: placeholder values not in the URL ───────────────────────
      if (route.extraParams.length > 0) {
        const missing = fromHeadersAndQuery(route.extraParams, req, query.slice(1), values)
        if (missing.length > 0) { inboundFromBody(gen, ex, route, values, missing, query).catch(err => fail(ex, err)); return }
      }
      upstreamRequest(gen, ex, route, values, query, undefined)
    } catch (err) {
      fail(ex, err)
    }
  }

  async function inboundFromBody (gen: Generation, ex: Exchange, route: CompiledRoute, values: Record<string, string>, missing: string[], query: string): Promise<void> {
    if (!bodyCanHold(ex.req)) throw missingParameter(missing[0])
    const body = await readBody(ex.req, gen.maxBody)
    const still = await fromBody(missing, ex.req, body, values)
    if (still.length > 0) throw missingParameter(still[0])
    // The same bytes go on, now with their exact length.
    delete ex.req.headers['transfer-encoding']
    ex.req.headers['content-length'] = String(body.length)
    upstreamRequest(gen, ex, route, values, query, bufferStream(body))
  }

  // ── resolve → forward ────────────────────────────────────────────────────
  function upstreamRequest (gen: Generation, ex: Exchange, route: CompiledRoute, values: Record<string, string>, query: string, body: Readable | undefined): void {
    for (const [name, isPath] of route.checks) checkValue(name, values[name], isPath)
    ex.req.url = route.upstreamPath(values) + query
    const instance = route.service.pick()
    if (instance === undefined) throw new GatewayError('NoHealthyInstance', `service "${route.service.name}" has no instance available`)
    if (body === undefined && ex.req.headers['transfer-encoding'] !== undefined) {
      // A chunked body has no declared length: count it as it streams.
      body = ex.req.pipe(new LimitStream(gen.maxBody))
    }
    forwarder.web(ex, instance, body)
  }

  // ── errors ───────────────────────────────────────────────────────────────
  function fail (ex: Exchange, err: unknown): void {
    if (ex.settled) return
    ex.settled = true
    const error = isGatewayError(err) ? err : new GatewayError('InternalServerError')
    if (!isGatewayError(err)) log.error({ err, request_id: ex.requestId, route: ex.routeName }, 'unexpected error')
    sendError(ex.res, error, ex.requestId, ex.req.method === 'HEAD')
  }

  function miss (gen: Generation, req: IncomingMessage, res: ServerResponse, path: string, query: string, next: Next | undefined): void {
    const why = gen.table.explainMiss(path, query)
    if (why.kind === 'not-found' && next !== undefined) { next(); return }
    const requestId = requestIdFor(req)
    res.setHeader('x-request-id', requestId)
    const isHead = req.method === 'HEAD'
    switch (why.kind) {
      case 'redirect':
        res.writeHead(308, { location: why.location, 'content-length': '0' }).end()
        return
      case 'method':
        sendError(res, new GatewayError('MethodNotAllowed', `method ${req.method} is not allowed here (allowed: ${why.allow})`, { headers: { allow: why.allow } }), requestId, isHead)
        return
      case 'bad-url':
        sendError(res, new GatewayError('BadRequest', 'the URL is not validly percent-encoded'), requestId, isHead)
        return
      default:
        sendError(res, new GatewayError('RouteNotFound', 'no route matches this path'), requestId, isHead)
    }
  }

  // ── WebSocket upgrades: same match and placeholders, then a tunnel ───────
  function upgrade (req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', (err) => log.debug({ err }, 'client socket error during upgrade'))
    const gen = generation
    const url = req.url ?? '/'
    const q = url.indexOf('?')
    const path = q === -1 ? url : url.slice(0, q)
    const query = q === -1 ? '' : url.slice(q)
    const requestId = prepareRequestHeaders(req, gen.trust, true)
    try {
      if (String(req.headers.upgrade).toLowerCase() !== 'websocket') throw new GatewayError('BadRequest', 'only WebSocket upgrades are proxied')
      const match = req.method === 'GET' ? gen.table.find('GET', path) : null
      if (match === null) {
        const why = gen.table.explainMiss(path, query)
        throw why.kind === 'method'
          ? new GatewayError('MethodNotAllowed', undefined, { headers: { allow: why.allow } })
          : new GatewayError('RouteNotFound', 'no route matches this path')
      }
      const route = match.route
      const values = match.params
      const missing = fromHeadersAndQuery(route.extraParams, req, query.slice(1), values)
      if (missing.length > 0) throw missingParameter(missing[0])
      for (const [name, isPath] of route.checks) checkValue(name, values[name], isPath)
      req.url = route.upstreamPath(values) + query
      const instance = route.service.pick()
      if (instance === undefined) throw new GatewayError('NoHealthyInstance', `service "${route.service.name}" has no instance available`)
      forwarder.ws(req, socket, head, instance, (err) => {
        log.warn({ err, request_id: requestId, route: route.name, instance: instance.url }, 'websocket upstream failed')
        sendUpgradeError(socket, new GatewayError('UpstreamUnreachable', `service "${route.service.name}" could not be reached`), requestId)
      })
    } catch (err) {
      if (!isGatewayError(err)) log.error({ err, request_id: requestId }, 'unexpected error in upgrade')
      sendUpgradeError(socket, isGatewayError(err) ? err : new GatewayError('InternalServerError'), requestId)
    }
  }

  const handler = (req: IncomingMessage, res: ServerResponse): void => dispatch(req, res, undefined)
  const middleware = (req: IncomingMessage, res: ServerResponse, next: Next): void => dispatch(req, res, next)

  return {
    handler,
    middleware,
    upgrade,
    generation,
    async listen (opts = {}) {
      const { server: cfg } = generation.loaded.config
      const limits = {
        headersTimeout: cfg.limits.headers_timeout_ms,
        requestTimeout: cfg.limits.request_timeout_ms,
        keepAliveTimeout: cfg.limits.keep_alive_timeout_ms,
      }
      server = cfg.tls !== undefined
        ? https.createServer({ ...limits, cert: fs.readFileSync(cfg.tls.cert), key: fs.readFileSync(cfg.tls.key) }, handler)
        : http.createServer(limits, handler)
      server.on('upgrade', upgrade)
      const s = server
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject)
        s.listen(opts.port ?? cfg.port, opts.host ?? cfg.host, () => { s.off('error', reject); resolve() })
      })
      return s.address() as AddressInfo
    },
    async close () {
      if (server !== undefined) {
        const s = server
        await new Promise<void>((resolve) => { s.close(() => resolve()); s.closeIdleConnections() })
      }
      for (const service of generation.services.values()) service.close()
    },
  }
}

function missingParameter (name: string): GatewayError {
  return new GatewayError('MissingParameter', `no value for placeholder "${name}" (looked in headers, query, form and JSON body)`)
}

/** http-proxy pipes `options.buffer` into the upstream request instead of `req`. */
function bufferStream (body: Buffer): Readable {
  const stream = new PassThrough()
  stream.end(body)
  return stream
}
