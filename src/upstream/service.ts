/**
 * A service: its instances, one keep-alive connection pool, and the balancer
 * that picks an instance per request. Everything per instance that a
 * request to it needs (the pool's agent, http-proxy's options for
 * WebSockets, the shape of an upstream request) is built here, at load.
 */
import http from 'node:http'
import https from 'node:https'
import fs from 'node:fs'
import type { Socket } from 'node:net'
import type { InstanceConfig, ServiceConfig } from '../config/types'
import type { ExceptionHandler } from '../pipes/types'
import { createBreaker, type Breaker, type BreakerObserver } from './breaker'
import type { Exchange } from '../exchange'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import { createBalancer } from './balancers'
import { DeadlineQueue } from './deadlines'
import { createHealthChecker } from './health'
import { compileOutgoing, type Outgoing, type OutgoingTarget } from '../proxy/outgoing'

export type ProxyTarget = OutgoingTarget

export interface ProxyOptions {
  target: ProxyTarget
  agent: http.Agent
  changeOrigin: true
  /** For https targets: http-proxy's name for rejectUnauthorized (it overrides the agent's). */
  secure: boolean
  /**
   * Use `req.url` as the upstream path as it is: it was built from the
   * route's compiled upstream_path, so http-proxy's legacy url.parse of it
   * (the default) is work without a purpose.
   */
  toProxy: true
}

export interface Instance {
  readonly id: string
  readonly url: string
  readonly weight: number
  readonly labels: readonly string[]
  /** The options object handed to http-proxy for this instance, built once. */
  readonly proxyOptions: Readonly<ProxyOptions>
  /** http.request or https.request, matching the instance's scheme. */
  readonly request: typeof http.request
  /** The options of a request to this instance (what http-proxy's setupOutgoing makes of proxyOptions). */
  readonly outgoing: Outgoing
  inflight: number
  /** Active health checks' verdict (true without checks). */
  healthy: boolean
  /** Passive health: after a connect failure, no traffic until this time (performance.now()). */
  ejectedUntil: number
  /** Taken out of rotation by an operator: no new requests, in-flight ones finish. */
  drained: boolean
}

export type InstanceHealth = 'healthy' | 'unhealthy' | 'drained'

/** Where a service reports what metrics show (operations.md "Metrics"); the gateway binds one per service at load. */
export interface ServiceObserver extends BreakerObserver {
  /** Seconds from sending a request to its response headers; called detached, once per attempt. */
  readonly upstreamSeconds: (seconds: number) => void
  /** An instance's state as the balancer sees it, reported on every change and on start(). */
  health (instance: Instance, state: InstanceHealth): void
}

export interface Service {
  readonly name: string
  /** Time to response headers of each attempt (the forwarder calls it). */
  readonly observeUpstream: (seconds: number) => void
  readonly config: ServiceConfig
  readonly instances: readonly Instance[]
  /** In-flight requests waiting for response headers, in deadline order. */
  readonly deadlines: DeadlineQueue<Exchange>
  /** The service's circuit breaker, when `circuit_breaker` is configured. */
  readonly breaker: Breaker | undefined
  /** The module named by `exception_handler`, which answers failures first. */
  readonly exceptionHandler: ExceptionHandler | undefined
  /**
   * The next instance for a request carrying `label` (the route label
   * header's value) or none: labelled requests go only to instances with
   * that label, unlabelled ones only to instances without labels. Drained,
   * unhealthy and ejected instances are skipped, and so is `avoid` (the
   * instance a retry moves away from) when another one fits. Undefined when none fits.
   */
  pick (label?: string, avoid?: Instance): Instance | undefined
  /** A connect failure: the instance takes no traffic for a while (passive health). */
  ejectAfterConnectFailure (instance: Instance): void
  /** Takes an instance out of rotation (true) or puts it back (false); false when no such id. */
  setDrained (id: string, drained: boolean): boolean
  /** Reports every instance's state and the breaker's, then starts active health checks, if configured. */
  start (): void
  /** Stops checks and frees pooled sockets; in-flight requests keep theirs until they finish. */
  close (): void
}

/** How long a connect failure keeps an instance out of rotation without active checks. */
export const PASSIVE_EJECTION_MS = 10_000

function targetOf (url: string): ProxyTarget {
  const u = new URL(url)
  const protocol = u.protocol as 'http:' | 'https:'
  const port = u.port !== '' ? u.port : (protocol === 'https:' ? '443' : '80')
  // WHATWG keeps IPv6 literals bracketed; net.connect wants them bare.
  const hostname = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname
  return { protocol, host: `${u.hostname}:${port}`, hostname, port }
}

/** How long a pooled socket may sit idle when the upstream announced no Keep-Alive timeout. */
const IDLE_SOCKET_MS = 15_000

/**
 * Pooled sockets get an idle timeout once, when they go back to the pool:
 * the upstream's `Keep-Alive: timeout=` hint less a second (as Node does),
 * else IDLE_SOCKET_MS. Node's own `timeout` agent option would instead add
 * timeout listeners to every request.
 */
function keepSocketAlive (this: http.Agent, socket: Socket): boolean {
  // Node's returns whether the socket may be reused (its typings say void).
  const keep = (http.Agent.prototype.keepSocketAlive as unknown as (s: typeof socket) => boolean).call(this, socket)
  if (keep && socket.timeout === 0) socket.setTimeout(IDLE_SOCKET_MS)
  return keep
}

/**
 * `connect_timeout_ms` for a new connection: set where the agent creates
 * sockets, so it costs once per connection, not once per request. The
 * error surfaces on the request like a refused connection (502).
 */
function withConnectTimeout (agent: http.Agent, ms: number): http.Agent {
  const create = (agent as unknown as { createConnection: (...args: unknown[]) => Socket }).createConnection
  ;(agent as unknown as { createConnection: (...args: unknown[]) => Socket }).createConnection = function (this: unknown, ...args: unknown[]): Socket {
    const socket = create.apply(this, args)
    if (socket.connecting) {
      const timer = setTimeout(() => {
        socket.destroy(Object.assign(new Error(`connect timed out after ${ms} ms`), { code: 'ECONNTIMEOUT' }))
      }, ms)
      timer.unref()
      socket.once('connect', () => clearTimeout(timer))
      socket.once('close', () => clearTimeout(timer))
    }
    return socket
  }
  return agent
}

function createAgent (config: ServiceConfig, protocol: 'http:' | 'https:'): http.Agent {
  return withConnectTimeout(createPoolAgent(config, protocol), config.connect_timeout_ms)
}

function createPoolAgent (config: ServiceConfig, protocol: 'http:' | 'https:'): http.Agent {
  const common = { keepAlive: true, scheduling: 'lifo' as const }
  if (protocol === 'http:') return Object.assign(new http.Agent(common), { keepSocketAlive })
  const tls = config.tls
  return Object.assign(new https.Agent({
    ...common,
    ca: tls?.ca !== undefined ? fs.readFileSync(tls.ca) : undefined,
    cert: tls?.cert !== undefined ? fs.readFileSync(tls.cert) : undefined,
    key: tls?.key !== undefined ? fs.readFileSync(tls.key) : undefined,
    rejectUnauthorized: tls?.reject_unauthorized ?? true,
  }), { keepSocketAlive })
}

export function createInstance (config: InstanceConfig, id: string, agent: http.Agent, secure: boolean): Instance {
  const target = targetOf(config.url)
  return {
    id,
    url: config.url,
    weight: config.weight,
    labels: config.labels,
    proxyOptions: Object.freeze({ target, agent, changeOrigin: true as const, secure, toProxy: true as const }),
    request: target.protocol === 'https:' ? https.request : http.request,
    outgoing: compileOutgoing(target, agent, secure),
    inflight: 0,
    healthy: true,
    ejectedUntil: 0,
    drained: false,
  }
}

/** The balancer's view of an instance. */
export function healthOf (instance: Instance, now = performance.now()): InstanceHealth {
  return instance.drained ? 'drained' : instance.healthy && instance.ejectedUntil <= now ? 'healthy' : 'unhealthy'
}

export function createService (name: string, config: ServiceConfig, onDeadline: (ex: Exchange) => void, log?: Logger, observer?: ServiceObserver): Service {
  const agents = new Map<string, http.Agent>()
  const agentFor = (url: string): http.Agent => {
    const protocol = new URL(url).protocol as 'http:' | 'https:'
    let agent = agents.get(protocol)
    if (agent === undefined) { agent = createAgent(config, protocol); agents.set(protocol, agent) }
    return agent
  }
  const secure = config.tls?.reject_unauthorized ?? true
  const instances = config.instances.map((inst, i) => createInstance(inst, `${name}-${i}`, agentFor(inst.url), secure))
  const balancer = createBalancer(config.balancer, instances)

  // The predicate is built once; the request's label and the time are set
  // just before each (synchronous) pick, so a pick allocates nothing.
  let label: string | undefined
  let avoided: Instance | undefined
  let now = 0
  let ejections = 0
  const eligible = (i: Instance): boolean =>
    i !== avoided && !i.drained && i.healthy &&
    (ejections === 0 || i.ejectedUntil <= now) &&
    (label === undefined ? i.labels.length === 0 : i.labels.includes(label))

  const checker = config.health_check === undefined
    ? undefined
    : createHealthChecker(config.health_check, instances.map(i => ({ id: i.id, url: i.url, agent: i.proxyOptions.agent })), (target, state, reason) => {
      const instance = instances.find(i => i.id === target.id)
      if (instance !== undefined) { instance.healthy = state === 'healthy'; report(instance) }
      log?.warn({ event: 'health', service: name, instance: target.url, state, reason }, `instance ${state}`)
    })

  const report = (instance: Instance, now?: number): void => observer?.health(instance, healthOf(instance, now))
  const breaker = config.circuit_breaker === undefined ? undefined : createBreaker(name, config.circuit_breaker, log, observer)

  return {
    name,
    config,
    instances,
    observeUpstream: observer?.upstreamSeconds ?? (() => {}),
    deadlines: new DeadlineQueue<Exchange>(config.timeout_ms, onDeadline),
    breaker,
    exceptionHandler: config.exception_handler === undefined ? undefined : loadExceptionHandler(config.exception_handler),
    pick (requestLabel, avoid) {
      label = requestLabel
      if (ejections > 0) now = performance.now()
      if (avoid === undefined) return balancer.pick(eligible)
      avoided = avoid
      const other = balancer.pick(eligible)
      avoided = undefined
      return other ?? balancer.pick(eligible)
    },
    ejectAfterConnectFailure (instance) {
      const t = performance.now()
      if (instance.ejectedUntil <= t) ejections++
      instance.ejectedUntil = t + PASSIVE_EJECTION_MS
      report(instance)
      const timer = setTimeout(() => {
        if (instance.ejectedUntil > performance.now() + 1) return // ejected again meanwhile: that timer ends it
        ejections = Math.max(0, ejections - 1)
        report(instance, performance.now() + 1)
      }, PASSIVE_EJECTION_MS)
      timer.unref()
      log?.warn({ event: 'health', service: name, instance: instance.url, state: 'ejected', for_ms: PASSIVE_EJECTION_MS }, 'instance ejected after a connect failure')
    },
    setDrained (id, drained) {
      const instance = instances.find(i => i.id === id)
      if (instance === undefined) return false
      instance.drained = drained
      report(instance)
      return true
    },
    start () {
      for (const instance of instances) report(instance)
      if (breaker !== undefined) observer?.state(breaker.state())
      checker?.start()
    },
    close () {
      checker?.stop()
      this.breaker?.shutdown()
      this.deadlines.close()
      for (const agent of agents.values()) agent.destroy()
    },
  }
}

/** A module exporting `{ handle }` (defineExceptionHandler only adds types); a bad one is a load error. */
function loadExceptionHandler (file: string): ExceptionHandler {
  const loaded = require(file) as { default?: unknown }
  const handler = (loaded !== null && typeof loaded === 'object' && 'default' in loaded ? loaded.default : loaded) as ExceptionHandler
  if (handler === null || typeof handler !== 'object' || typeof handler.handle !== 'function') {
    throw new Error(`exception_handler ${file} does not export { handle (error, ctx) }`)
  }
  return handler
}
