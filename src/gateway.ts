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
import type { AddressInfo } from 'node:net'
import { PassThrough, type Duplex, type Readable } from 'node:stream'
import { performance } from 'node:perf_hooks'
import { ConfigError, loadConfigFile, problemAt } from './config'
import type { ConfigProblem, LoadedConfig } from './config/types'
import { GatewayError, isGatewayError } from './errors'
import { Exchange } from './exchange'
import { silentLogger, type Logger } from './observability/logger'
import { createMetrics, type GatewayMetrics } from './observability/metrics'
import { createRequestRecorder, secretQueryParams } from './observability/requests'
import { createListener } from './listener'
import { declaredTooLarge, hasBody, LimitStream, readBody, readUpTo, tooLarge } from './proxy/body'
import { createForwarder, endToEndHeaders, relay } from './proxy/forwarder'
import { compileTrust, prepareRequestHeaders, requestIdFor, type TrustCheck } from './proxy/headers'
import { sendError, sendUpgradeError } from './respond'
import { compileRoutes, type CompiledRoute } from './routing/compile'
import { bodyCanHold, fromBody, fromHeadersAndQuery } from './routing/extra-params'
import { checkValue } from './routing/params'
import type { RouteTable } from './routing/table'
import { createPipeCatalog, type LoadedPipeCatalog } from './pipes/catalog'
import { compilePipelines, type CompiledPipeline, type Stage } from './pipes/compile'
import { Context, RequestView, Respond, ResponseView } from './pipes/context'
import { isAlreadyAnswered } from './pipes/middleware'
import { createMemoryStore } from './store/memory'
import type { Store } from './store/types'
import { ClientGone } from './upstream/breaker'
import { createService, type Service, type ServiceObserver } from './upstream/service'

export interface GatewayOptions {
  config: LoadedConfig
  /** Loads the config again for `reload()`; by default the file `config` came from. */
  loadConfig?: () => LoadedConfig
  logger?: Logger
  /** The pipes the config names; by default the built-ins and the modules of `pipes_dir`. */
  pipes?: LoadedPipeCatalog
  /** Shared state for rate limits; by default the embedded memory store. */
  store?: Store
  /** Where requests, breakers, health and reloads are counted; by default a registry of the gateway's own. */
  metrics?: GatewayMetrics
  /** The number of the first generation (a cluster worker started after reloads continues the count). */
  generation?: number
}

/** Everything compiled from one version of the config; swapped whole on reload. */
export interface Generation {
  readonly loaded: LoadedConfig
  readonly routes: readonly CompiledRoute[]
  readonly table: RouteTable<CompiledRoute>
  readonly services: ReadonlyMap<string, Service>
  readonly trust: TrustCheck | undefined
  readonly maxBody: number
  /** `server.route_label_header`, lower-cased. */
  readonly labelHeader: string
  /** Query parameters whose values access logs never show (defaults plus api-key `query_param`s). */
  readonly secretParams: ReadonlySet<string>
  /** False until the generation is swapped in and again once it is replaced: only the current one reports to the metrics. */
  readonly live: { current: boolean }
}

export type Next = (err?: unknown) => void

export interface Gateway {
  /** For a node:http server: answers every request, 404 included. */
  readonly handler: (req: IncomingMessage, res: ServerResponse) => void
  /** For Express/connect: a request no route matches goes on to `next()`. */
  readonly middleware: (req: IncomingMessage, res: ServerResponse, next: Next) => void
  /** For a server's 'upgrade' event: WebSocket routes. */
  readonly upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void
  /** The generation new requests are served by. */
  readonly generation: Generation
  /** How many configs were loaded (1 for the first). */
  readonly generationNumber: number
  readonly metrics: GatewayMetrics
  /**
   * Loads the config again and swaps it in atomically: requests in flight
   * finish on the generation they started on, whose breakers, health checks
   * and pools are closed once they drained. An invalid file changes nothing.
   * With a listener of its own, `server.tls` files are read again (the
   * certificate is swapped for new handshakes) and a moved port or host is
   * bound before the old listener drains; a file that cannot be read or an
   * address that cannot be bound fails the reload like an invalid file.
   */
  reload (): Promise<{ ok: true, generation: number } | { ok: false, errors: string[] }>
  /**
   * Starts the gateway's own listener (server.host/port unless given). A
   * port or host given here outranks the file's until a reload changes that
   * value in the file.
   */
  listen (options?: { port?: number, host?: string }): Promise<AddressInfo>
  /** Where the gateway's own listener is bound (undefined before listen() and after close()). */
  readonly address: AddressInfo | undefined
  close (): Promise<void>
}

export interface CompileOptions {
  /** Answers requests whose upstream timed out (none when only inspecting). */
  onDeadline?: (ex: Exchange) => void
  pipes?: LoadedPipeCatalog
  store?: Store
  logger?: Logger
  /** Where the generation's routes and services report; without it nothing is counted (sluice check, routes, explain). */
  metrics?: GatewayMetrics
}

/** Loads routes.yaml with the pipes its own pipes_dir holds (what `sluice` and a reload read). */
export function loadGatewayConfig (file: string): LoadedConfig {
  return loadConfigFile(file, { pipes: (pipesDir) => createPipeCatalog({ pipesDir }) })
}

/** Compiles a config into a generation; a pipe whose `create` fails is a ConfigError at its line. */
export function compileGeneration (loaded: LoadedConfig, options: CompileOptions = {}): Generation {
  const { config } = loaded
  const log = options.logger ?? silentLogger()
  const pipelines = compilePipelines(loaded, options.pipes ?? createPipeCatalog({ pipesDir: config.pipes_dir }), options.store ?? createMemoryStore(), log)
  const services = new Map<string, Service>()
  const onDeadline = options.onDeadline ?? (() => {})
  const metrics = options.metrics
  const live = { current: false }
  const problems: ConfigProblem[] = []
  for (const [name, svc] of Object.entries(config.services)) {
    try {
      services.set(name, createService(name, svc, onDeadline, log, metrics === undefined ? undefined : observeService(metrics, name, live)))
    } catch (err) {
      problems.push(problemAt(loaded, ['services', name, 'exception_handler'], (err as Error).message))
    }
  }
  if (problems.length > 0) {
    for (const service of services.values()) service.close()
    throw new ConfigError(problems)
  }
  const { routes, table } = compileRoutes(loaded, services, pipelines.forRoute, metrics === undefined ? undefined : (route, service) => metrics.route(route, service))
  return Object.freeze({
    loaded,
    routes,
    table,
    services,
    trust: compileTrust(config.server.trust_proxy),
    maxBody: config.server.limits.max_body_bytes,
    labelHeader: config.server.route_label_header.toLowerCase(),
    secretParams: secretQueryParams(config),
    live,
  })
}

/** A service's reports, bound to its labels at load; dropped unless its generation is the one serving. */
function observeService (metrics: GatewayMetrics, service: string, live: { current: boolean }): ServiceObserver {
  const upstreamSeconds = metrics.upstreamSeconds(service)
  return {
    upstreamSeconds,
    health (instance, state) { if (live.current) metrics.upstreamHealth(service, instance.url, state) },
    state (state) { if (live.current) metrics.circuitState(service, state) },
    event (event) { if (live.current) metrics.circuitEvent(service, event) },
  }
}

// Errors that mean the instance could not be connected to at all.
const CONNECT_FAILURES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNTIMEOUT'])

export function createGateway (options: GatewayOptions): Gateway {
  const log = options.logger ?? silentLogger()
  const store = options.store ?? createMemoryStore()
  const metrics = options.metrics ?? createMetrics({ defaultMetrics: false })
  const recorder = createRequestRecorder(metrics, log)
  const forwarder = createForwarder({
    onFailure (ex, error, cause) {
      log.warn({ request_id: ex.requestId, route: ex.routeName, service: ex.service.name, instance: ex.instance?.url, err: cause }, error.code)
      const code = (cause as NodeJS.ErrnoException | undefined)?.code
      const connectFailure = code !== undefined && CONNECT_FAILURES.has(code)
      if (ex.instance !== undefined && connectFailure) ex.service.ejectAfterConnectFailure(ex.instance)
      settleAttempt(ex, error)
      const retries = ex.service.config.retries
      if (retries !== undefined && mayRetry(ex) &&
        (connectFailure ? retries.on.includes('connect-failure') : retries.on.includes(error.status))) {
        retry(ex)
        return
      }
      failed(ex, error)
    },
    onResponse (ex, upstream) {
      const status = upstream.statusCode ?? 502
      const { breaker, config: { retries } } = ex.service
      const failure = breaker !== undefined && breaker.config.failure_statuses.includes(status)
      settleAttempt(ex, failure ? new GatewayError('UpstreamUnreachable', `status ${status}`) : undefined)
      if (retries !== undefined && retries.on.includes(status) && mayRetry(ex)) {
        upstream.resume() // this answer is dropped; the socket goes back to the pool
        retry(ex)
        return
      }
      if (ex.pipes !== undefined && ex.pipes.outbound.handlers.length > 0) outbound(ex, upstream)
      else forwarder.pass(ex, upstream)
    },
    onClientGone (ex) {
      settleAttempt(ex, new ClientGone('the client went away'))
    },
  }, log)
  let generation = compileGeneration(options.config, { onDeadline: forwarder.expire, pipes: options.pipes, store, logger: log, metrics })
  let generationNumber = options.generation ?? 1
  const retiring = new Set<Generation>()
  serve(generation)
  log.info({ event: 'config', result: 'loaded', file: generation.loaded.file, generation: generationNumber, routes: generation.routes.length, services: generation.services.size }, 'config loaded')

  /** Makes `gen` the generation that serves and reports. */
  function serve (gen: Generation): void {
    gen.live.current = true
    recorder.secretParams = gen.secretParams
    metrics.setGeneration(generationNumber)
    for (const service of gen.services.values()) service.start()
  }

  /** Closes a replaced generation once nothing it forwarded is still in flight. */
  function retire (old: Generation): void {
    retiring.add(old)
    const deadline = Date.now() + old.loaded.config.server.shutdown_timeout_ms
    const check = (): void => {
      let inflight = 0
      for (const service of old.services.values()) for (const i of service.instances) inflight += i.inflight
      if (inflight > 0 && Date.now() < deadline) { setTimeout(check, 100).unref(); return }
      for (const service of old.services.values()) service.close()
      retiring.delete(old)
    }
    check()
  }

  /** The reload under way: reloads run one at a time, since a rebind waits for a bind. */
  let reloading: Promise<unknown> | undefined

  function reload (): Promise<{ ok: true, generation: number } | { ok: false, errors: string[] }> {
    const run = reloading === undefined ? applyReload() : reloading.then(applyReload)
    const settled = run.then(() => undefined, () => undefined)
    reloading = settled
    void settled.then(() => { if (reloading === settled) reloading = undefined })
    return run
  }

  async function applyReload (): Promise<{ ok: true, generation: number } | { ok: false, errors: string[] }> {
    let next: Generation
    try {
      const loaded = options.loadConfig?.() ?? loadGatewayConfig(generation.loaded.file)
      next = compileGeneration(loaded, { onDeadline: forwarder.expire, store, logger: log, metrics })
    } catch (err) {
      return reloadFailed(err)
    }
    const old = generation
    let commitListener: (() => void) | undefined
    try {
      commitListener = await listener.prepare(old.loaded, next.loaded)
    } catch (err) {
      for (const service of next.services.values()) service.close()
      return reloadFailed(err)
    }
    old.live.current = false
    generation = next
    generationNumber++
    forgetRemoved(old, next)
    keepDrained(old, next)
    serve(next)
    commitListener?.()
    metrics.configReload('success')
    log.info({ event: 'reload', result: 'success', generation: generationNumber, routes: next.routes.length }, 'config reloaded')
    retire(old)
    return { ok: true, generation: generationNumber }
  }

  function reloadFailed (err: unknown): { ok: false, errors: string[] } {
    const errors = err instanceof ConfigError ? err.message.split('\n') : [(err as Error).message]
    log.error({ event: 'reload', result: 'failure', errors }, 'config reload failed; the running config is unchanged')
    metrics.configReload('failure')
    return { ok: false, errors }
  }

  /** An instance an operator drained stays drained across a reload (matched by service and URL). */
  function keepDrained (old: Generation, next: Generation): void {
    for (const [name, service] of old.services) {
      const now = next.services.get(name)
      if (now === undefined) continue
      for (const instance of service.instances) {
        if (!instance.drained) continue
        const same = now.instances.find(i => i.url === instance.url)
        if (same !== undefined) now.setDrained(same.id, true)
      }
    }
  }

  /** Series of instances and breakers the new generation no longer has would otherwise stay forever. */
  function forgetRemoved (old: Generation, next: Generation): void {
    for (const [name, service] of old.services) {
      const now = next.services.get(name)
      for (const instance of service.instances) {
        if (now?.instances.some(i => i.url === instance.url) !== true) metrics.forgetUpstream(name, instance.url)
      }
      if (service.breaker !== undefined && now?.breaker === undefined) metrics.forgetCircuit(name)
    }
  }

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
    const record = recorder.start(req, res, route.metrics, requestId)
    const ex = new Exchange(req, res, requestId, route.name, route.service)
    record.ex = ex
    ex.route = route
    ex.intercept = route.intercepts
    try {
      if (declaredTooLarge(req, gen.maxBody)) throw tooLarge(gen.maxBody)
      if (route.pipeline !== undefined) {
        try { piped(gen, ex, route, route.pipeline, match.params, path, query) } catch (err) { answerFromPipes(ex, err) }
        return
      }
      // A route without pipes: placeholders, then straight upstream.
      const values = match.params
      if (route.extraParams.length > 0) {
        const missing = fromHeadersAndQuery(route.extraParams, req, query.slice(1), values)
        if (missing.length > 0) { valuesFromBody(gen, ex, route, values, missing, query).catch(err => fail(ex, err)); return }
      }
      for (const [name, isPath] of route.checks) checkValue(name, values[name], isPath)
      req.url = route.upstreamPath(values) + query
      forward(gen, ex, route, undefined)
    } catch (err) {
      fail(ex, err)
    }
  }

  async function valuesFromBody (gen: Generation, ex: Exchange, route: CompiledRoute, values: Record<string, string>, missing: string[], query: string): Promise<void> {
    const body = await fillFromBody(ex, missing, values, () => readBody(ex.req, gen.maxBody))
    for (const [name, isPath] of route.checks) checkValue(name, values[name], isPath)
    ex.req.url = route.upstreamPath(values) + query
    forward(gen, ex, route, withLength(ex, body))
  }

  // ── inbound pipes ────────────────────────────────────────────────────────
  // Synchronous until something (a body to read, a pipe) returns a promise:
  // a pipeline of synchronous pipes costs no promise. respond/fail thrown
  // synchronously reach the caller's answerFromPipes.
  function piped (gen: Generation, ex: Exchange, route: CompiledRoute, pipeline: CompiledPipeline, params: Record<string, string>, path: string, query: string): void {
    const request = new RequestView(ex, path, query.slice(1), gen.maxBody, gen.trust)
    const ctx = new Context(ex, request, params, route.info, log)
    ex.pipes = pipeline
    ex.ctx = ctx
    const values = route.extraParams.length > 0 ? { ...params } : params
    if (route.extraParams.length > 0) {
      const missing = fromHeadersAndQuery(route.extraParams, ex.req, query.slice(1), values)
      if (missing.length > 0) {
        fillFromBody(ex, missing, values, () => request.body())
          .then(() => inboundPipes(gen, ex, route, pipeline, ctx, request, values))
          .catch((err) => answerFromPipes(ex, err))
        return
      }
    }
    inboundPipes(gen, ex, route, pipeline, ctx, request, values)
  }

  function inboundPipes (gen: Generation, ex: Exchange, route: CompiledRoute, pipeline: CompiledPipeline, ctx: Context, request: RequestView, values: Record<string, string>): void {
    for (const [name, isPath] of route.checks) checkValue(name, values[name], isPath)
    request.defaultUpstreamPath = route.upstreamPath(values)
    const send = (): void => {
      ex.req.url = request.upstreamPath + request.queryString()
      forward(gen, ex, route, request.outgoingBody === undefined ? undefined : withLength(ex, request.outgoingBody))
    }
    // The preflight stage runs on every request: cors also decorates refusals of pipes placed before it.
    const preflight = pipeline.preflight.handlers.length > 0 ? runStage(ctx, pipeline.preflight) : undefined
    if (preflight !== undefined) {
      preflight.then(() => runStage(ctx, pipeline.inbound)).then(send).catch((err) => answerFromPipes(ex, err))
      return
    }
    const inbound = runStage(ctx, pipeline.inbound)
    if (inbound !== undefined) { inbound.then(send).catch((err) => answerFromPipes(ex, err)); return }
    send()
  }

  // ── resolve → forward ────────────────────────────────────────────────────
  /** `bytes`: a body that was buffered (and so can be sent again on a retry). */
  function forward (gen: Generation, ex: Exchange, route: CompiledRoute, bytes: Buffer | undefined): void {
    ex.bodyBytes = bytes
    const breaker = route.service.breaker
    if (breaker === undefined) { attempt(gen, ex, route); return }
    breaker.run(() => new Promise<void>((resolve, reject) => {
      ex.outcome = { resolve, reject }
      attempt(gen, ex, route)
    })).catch((err: { code?: string }) => {
      // Open (or half-open with its trial under way): the upstream is not contacted.
      if (err?.code === 'EOPENBREAKER' && !ex.res.headersSent) {
        ex.settled = true
        failed(ex, new GatewayError('CircuitOpen', `service "${route.service.name}" is unavailable (circuit open)`, {
          headers: { 'retry-after': String(breaker.retryAfterSeconds()) },
        }))
      }
    })
  }

  function attempt (gen: Generation, ex: Exchange, route: CompiledRoute): void {
    ex.attempts++
    const label = ex.req.headers[gen.labelHeader]
    // A retry goes to another instance when there is one.
    const instance = route.service.pick(typeof label === 'string' ? label : undefined, ex.instance)
    if (instance === undefined) {
      // Not the upstream's failure: the breaker does not count it.
      settleAttempt(ex, new ClientGone('no instance was tried'))
      ex.settled = true
      failed(ex, new GatewayError('NoHealthyInstance', `service "${route.service.name}" has no instance available`))
      return
    }
    let body: Readable | undefined
    if (ex.bodyBytes !== undefined) body = bufferStream(ex.bodyBytes)
    else if (ex.req.headers['transfer-encoding'] !== undefined) body = ex.req.pipe(new LimitStream(gen.maxBody)) // counted as it streams
    forwarder.web(ex, instance, body)
  }

  // ── resilience: breaker accounting, retries, the exception handler ───────
  function settleAttempt (ex: Exchange, err: Error | undefined): void {
    const outcome = ex.outcome
    if (outcome === undefined) return
    ex.outcome = undefined
    if (err === undefined) outcome.resolve()
    else outcome.reject(err)
  }

  /**
   * http.md "Resilience": idempotent methods only, nothing sent to the
   * client yet, and never a body that was streamed and not kept.
   */
  function mayRetry (ex: Exchange): boolean {
    const retries = ex.service.config.retries
    if (retries === undefined || ex.attempts > retries.attempts || ex.clientGone || ex.res.headersSent) return false
    if (!IDEMPOTENT.has(ex.req.method ?? '')) return false
    return !hasBody(ex.req.headers) || ex.bodyBytes !== undefined
  }

  function retry (ex: Exchange): void {
    const route = ex.route as CompiledRoute
    const backoff = (ex.service.config.retries?.backoff_ms ?? 0) * 2 ** (ex.attempts - 1)
    const again = (): void => {
      if (ex.clientGone) return
      ex.settled = false
      ex.released = false
      ex.proxyReq = undefined
      ex.upstreamRes = undefined
      try { forward(generation, ex, route, ex.bodyBytes) } catch (err) { fail(ex, err) }
    }
    if (backoff > 0) setTimeout(again, backoff).unref()
    else again()
  }

  /** The service's exception handler answers first; when it does not, the default does. */
  function failed (ex: Exchange, error: GatewayError): void {
    const handler = ex.service.exceptionHandler
    if (handler === undefined) { defaultAnswer(ex, error); return }
    const ctx = ex.ctx ?? new Context(ex, new RequestView(ex, (ex.req.url ?? '/').split('?')[0], '', generation.maxBody, generation.trust), {}, ex.route?.info ?? { name: ex.routeName, service: ex.service.name }, log)
    ex.ctx = ctx
    Promise.resolve()
      .then(() => handler.handle({ code: error.code, status: error.status, message: error.message }, ctx))
      .then(() => defaultAnswer(ex, error), (signal: unknown) => {
        if (signal instanceof Respond || isGatewayError(signal) || isAlreadyAnswered(signal)) { answerFromPipes(ex, signal); return }
        log.error({ err: signal, request_id: ex.requestId, service: ex.service.name }, 'exception handler threw; answering with the default')
        defaultAnswer(ex, error)
      })
  }

  /** A JSON error, or while the circuit is open the service's fallback response. */
  function defaultAnswer (ex: Exchange, error: GatewayError): void {
    const res = ex.res
    if (res.headersSent || res.writableEnded) return
    const fallback = ex.service.breaker?.config.fallback
    if (error.code === 'CircuitOpen' && fallback !== undefined) {
      res.statusCode = fallback.status
      for (const name in fallback.headers) res.setHeader(name, fallback.headers[name])
      res.setHeader('content-length', Buffer.byteLength(fallback.body))
      res.end(ex.req.method === 'HEAD' ? undefined : fallback.body)
      return
    }
    sendError(res, error, ex.requestId, ex.req.method === 'HEAD')
  }

  // ── outbound pipes ───────────────────────────────────────────────────────
  function outbound (ex: Exchange, upstream: IncomingMessage): void {
    const ctx = ex.ctx as Context
    const pipeline = ex.pipes as CompiledPipeline
    const headers = endToEndHeaders(upstream)
    const limit = generation.maxBody
    // Pipes that need the body skip an event stream (never buffered), a HEAD
    // response (no body) and a body over the limit (passed on untouched).
    const canBuffer = pipeline.buffered.size > 0 &&
      ex.req.method !== 'HEAD' &&
      !String(headers['content-type'] ?? '').startsWith('text/event-stream') &&
      !(Number(headers['content-length'] ?? 0) > limit)
    const response = new ResponseView(upstream.statusCode ?? 502, headers, canBuffer)
    ctx.response = response
    const refuse = (err: unknown): void => { upstream.destroy(); answerFromPipes(ex, err) }
    if (canBuffer) {
      readUpTo(upstream, limit).then((read) => {
        let head: Buffer[] | undefined
        if (read.complete) response.buffered = read.chunks.length === 1 ? read.chunks[0] : Buffer.concat(read.chunks, read.size)
        else head = read.chunks
        const skip = read.complete ? undefined : pipeline.buffered
        return Promise.resolve(runStage(ctx, pipeline.outbound, 0, skip)).then(() => writeResponse(ex, upstream, response, head))
      }).catch(refuse)
      return
    }
    let pending: Promise<void> | undefined
    try { pending = runStage(ctx, pipeline.outbound, 0, pipeline.buffered) } catch (err) { refuse(err); return }
    if (pending !== undefined) { pending.then(() => writeResponse(ex, upstream, response, undefined), refuse); return }
    writeResponse(ex, upstream, response, undefined)
  }

  /** `head`: chunks already read from a body too large to buffer, sent before the rest. */
  function writeResponse (ex: Exchange, upstream: IncomingMessage, response: ResponseView, head: Buffer[] | undefined): void {
    const res = ex.res
    if (res.headersSent) { upstream.destroy(); return }
    ex.fromUpstream = true
    for (const name in response.headers) {
      const value = response.headers[name]
      if (value !== undefined) res.setHeader(name, value)
    }
    res.statusCode = response.status
    // RFC 9110 §6.4.1: no content with 1xx, 204 and 304 (a status-map may have made it so).
    if (response.status === 204 || response.status === 304 || response.status < 200) {
      res.removeHeader('content-length')
      upstream.resume()
      res.end()
      return
    }
    const bytes = response.replaced ?? response.buffered
    if (bytes !== undefined) {
      res.setHeader('content-length', bytes.length)
      res.end(bytes)
      return
    }
    if (head !== undefined) for (const chunk of head) res.write(chunk)
    relay(upstream, res)
  }

  /** An early answer from a pipe (respond/fail), or a pipe that threw. */
  function answerFromPipes (ex: Exchange, err: unknown): void {
    ex.settled = true
    if (isAlreadyAnswered(err)) return
    if (err instanceof Respond) {
      const res = ex.res
      if (res.headersSent) { res.destroy(); return }
      res.statusCode = err.status
      for (const name in err.headers) res.setHeader(name, err.headers[name])
      res.setHeader('content-length', err.body.length)
      res.end(ex.req.method === 'HEAD' ? undefined : err.body)
      return
    }
    if (!isGatewayError(err)) {
      log.error({ err, pipe: ex.ctx?.current, request_id: ex.requestId, route: ex.routeName }, 'pipe failed')
    } else if (err.code === 'RateLimited') {
      ex.route?.metrics.rateLimited()
    }
    sendError(ex.res, isGatewayError(err) ? err : new GatewayError('InternalServerError'), ex.requestId, ex.req.method === 'HEAD')
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
    if (why.kind === 'method' && isPreflight(req)) { preflightOnly(gen, req, res, path, query, why.allow); return }
    const requestId = requestIdFor(req)
    res.setHeader('x-request-id', requestId)
    recorder.start(req, res, metrics.unmatched, requestId)
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

  /**
   * A CORS preflight on a path whose routes do not declare OPTIONS: the
   * preflight pipes of the route that would serve the actual method answer
   * it; with none, it is the 405 it would otherwise be.
   */
  function preflightOnly (gen: Generation, req: IncomingMessage, res: ServerResponse, path: string, query: string, allow: string): void {
    const wanted = String(req.headers['access-control-request-method']).toUpperCase()
    const match = gen.table.find(allow.split(', ').includes(wanted) ? wanted : allow.split(', ')[0], path)
    const pipeline = match?.route.pipeline
    const requestId = prepareRequestHeaders(req, gen.trust, false)
    res.setHeader('x-request-id', requestId)
    const record = recorder.start(req, res, metrics.unmatched, requestId)
    if (match === null || pipeline === undefined || pipeline.preflight.handlers.length === 0) {
      sendError(res, new GatewayError('MethodNotAllowed', `method OPTIONS is not allowed here (allowed: ${allow})`, { headers: { allow } }), requestId)
      return
    }
    const route = match.route
    const ex = new Exchange(req, res, requestId, route.name, route.service)
    record.ex = ex
    const ctx = new Context(ex, new RequestView(ex, path, query.slice(1), gen.maxBody, gen.trust), match.params, route.info, log)
    ex.ctx = ctx
    // A pipe's respond/fail may throw synchronously: make it a rejection.
    new Promise<void>((resolve) => resolve(runStage(ctx, pipeline.preflight))).then(() => {
      sendError(res, new GatewayError('MethodNotAllowed', `method OPTIONS is not allowed here (allowed: ${allow})`, { headers: { allow } }), requestId)
    }, (err) => {
      // A preflight pipe answered: the request counts as the route's, not as a 405 of no route.
      record.route = route.metrics
      answerFromPipes(ex, err)
    })
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
    const record = recorder.startUpgrade(req, socket, requestId)
    // Headers pipes set (ctx.setResponseHeader) travel with a refusal.
    const holder = new http.ServerResponse(req)
    const refuse = (err: unknown): void => {
      record.status = err instanceof Respond ? err.status : isGatewayError(err) ? err.status : 500
      if (isGatewayError(err) && err.code === 'RateLimited') record.route.rateLimited()
      if (err instanceof Respond) {
        const headers = { ...holder.getHeaders(), ...err.headers }
        let head = `HTTP/1.1 ${err.status} ${http.STATUS_CODES[err.status] ?? ''}\r\nconnection: close\r\ncontent-length: ${err.body.length}\r\nx-request-id: ${requestId}\r\n`
        for (const name in headers) head += `${name}: ${String(headers[name])}\r\n`
        socket.end(Buffer.concat([Buffer.from(head + '\r\n'), err.body]))
        return
      }
      if (isAlreadyAnswered(err)) { socket.destroy(); return }
      if (!isGatewayError(err)) log.error({ err, request_id: requestId }, 'unexpected error in upgrade')
      const error = isGatewayError(err) ? err : new GatewayError('InternalServerError')
      const extra = holder.getHeaders() as Record<string, string>
      sendUpgradeError(socket, Object.keys(extra).length === 0 ? error : new GatewayError(error.code, error.message, { status: error.status, headers: { ...extra, ...error.headers }, extra: error.extra }), requestId)
    }
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
      record.route = route.metrics
      const values = route.extraParams.length > 0 ? { ...match.params } : match.params
      const missing = fromHeadersAndQuery(route.extraParams, req, query.slice(1), values)
      if (missing.length > 0) throw missingParameter(missing[0])
      for (const [name, isPath] of route.checks) checkValue(name, values[name], isPath)
      const tunnel = (upstreamUrl: string): void => {
        req.url = upstreamUrl
        const label = req.headers[gen.labelHeader]
        const instance = route.service.pick(typeof label === 'string' ? label : undefined)
        if (instance === undefined) throw new GatewayError('NoHealthyInstance', `service "${route.service.name}" has no instance available`)
        record.instance = instance.url
        forwarder.ws(req, socket, head, instance, (err) => {
          record.status = 502
          log.warn({ err, request_id: requestId, route: route.name, instance: instance.url }, 'websocket upstream failed')
          sendUpgradeError(socket, new GatewayError('UpstreamUnreachable', `service "${route.service.name}" could not be reached`), requestId)
        })
      }
      const pipeline = route.pipeline
      if (pipeline === undefined || pipeline.inbound.handlers.length + pipeline.preflight.handlers.length === 0) {
        tunnel(route.upstreamPath(values) + query)
        return
      }
      // The route's inbound pipes run on the upgrade request (http.md): auth
      // on a WebSocket route is not skipped by upgrading.
      const ex = new Exchange(req, holder, requestId, route.name, route.service)
      const request = new RequestView(ex, path, query.slice(1), gen.maxBody, gen.trust)
      const ctx = new Context(ex, request, match.params, route.info, log)
      request.defaultUpstreamPath = route.upstreamPath(values)
      new Promise<void>((resolve) => resolve(runStage(ctx, pipeline.preflight)))
        .then(() => runStage(ctx, pipeline.inbound))
        .then(() => tunnel(request.upstreamPath + request.queryString()))
        .catch(refuse)
    } catch (err) {
      refuse(err)
    }
  }

  const handler = (req: IncomingMessage, res: ServerResponse): void => dispatch(req, res, undefined)
  const middleware = (req: IncomingMessage, res: ServerResponse, next: Next): void => dispatch(req, res, next)
  const listener = createListener(handler, upgrade, log)

  return {
    handler,
    middleware,
    upgrade,
    get generation () { return generation },
    get generationNumber () { return generationNumber },
    metrics,
    reload,
    get address () { return listener.address },
    listen: (opts = {}) => listener.listen(generation.loaded, opts),
    async close () {
      // A rebind under way settles first, so the listener closed here is the last one.
      while (reloading !== undefined) await reloading
      await listener.close(generation.loaded.config.server.shutdown_timeout_ms)
      for (const service of generation.services.values()) service.close()
      for (const old of retiring) for (const service of old.services.values()) service.close()
      retiring.clear()
      if (options.store === undefined) await store.close()
    },
  }
}

/**
 * Runs one stage's handlers in order (but those in `skip`). Synchronous
 * until a handler returns a promise, so a pipeline of synchronous pipes
 * costs no promise at all.
 */
function runStage (ctx: Context, stage: Stage<unknown>, from = 0, skip?: ReadonlySet<number>): Promise<void> | undefined {
  const { handlers, names } = stage
  for (let i = from; i < handlers.length; i++) {
    if (skip !== undefined && skip.has(i)) continue
    ctx.current = names[i]
    const done = handlers[i](ctx as never)
    if (done !== undefined) return done.then(() => runStage(ctx, stage, i + 1, skip))
  }
  return undefined
}

function isPreflight (req: IncomingMessage): boolean {
  return req.method === 'OPTIONS' && req.headers.origin !== undefined && req.headers['access-control-request-method'] !== undefined
}

/** A buffered body goes on with its exact length. */
function withLength (ex: Exchange, body: Buffer): Buffer {
  delete ex.req.headers['transfer-encoding']
  ex.req.headers['content-length'] = String(body.length)
  return body
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE'])

/** Placeholder values still missing after headers and query, from a form or JSON body; returns the body. */
async function fillFromBody (ex: Exchange, missing: string[], values: Record<string, string>, read: () => Promise<Buffer>): Promise<Buffer> {
  if (!bodyCanHold(ex.req)) throw missingParameter(missing[0])
  const body = await read()
  const still = await fromBody(missing, ex.req, body, values)
  if (still.length > 0) throw missingParameter(still[0])
  return body
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
