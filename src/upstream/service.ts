/**
 * A service: its instances, one keep-alive connection pool, and the balancer
 * that picks an instance per request. Everything per instance that
 * http-proxy needs is built here, at load, so forwarding allocates nothing.
 */
import http from 'node:http'
import https from 'node:https'
import fs from 'node:fs'
import type { InstanceConfig, ServiceConfig } from '../config/types'
import type { Exchange } from '../exchange'
import { DeadlineQueue } from './deadlines'

export interface ProxyTarget {
  protocol: 'http:' | 'https:'
  /** host:port, as http-proxy's changeOrigin writes it into Host. */
  host: string
  hostname: string
  port: string
}

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
  inflight: number
}

export interface Service {
  readonly name: string
  readonly config: ServiceConfig
  readonly instances: readonly Instance[]
  /** In-flight requests waiting for response headers, in deadline order. */
  readonly deadlines: DeadlineQueue<Exchange>
  /** The next instance, or undefined when none can take the request. */
  pick (): Instance | undefined
  /** Frees pooled sockets; in-flight requests keep theirs until they finish. */
  close (): void
}

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
function keepSocketAlive (this: http.Agent, socket: import('node:net').Socket): boolean {
  // Node's returns whether the socket may be reused (its typings say void).
  const keep = (http.Agent.prototype.keepSocketAlive as unknown as (s: typeof socket) => boolean).call(this, socket)
  if (keep && socket.timeout === 0) socket.setTimeout(IDLE_SOCKET_MS)
  return keep
}

function createAgent (config: ServiceConfig): http.Agent {
  const common = { keepAlive: true, scheduling: 'lifo' as const }
  const secure = config.instances.some(i => i.url.startsWith('https:'))
  if (!secure) return Object.assign(new http.Agent(common), { keepSocketAlive })
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
    inflight: 0,
  }
}

export function createService (name: string, config: ServiceConfig, onDeadline: (ex: Exchange) => void): Service {
  const agent = createAgent(config)
  const secure = config.tls?.reject_unauthorized ?? true
  const instances = config.instances.map((inst, i) => createInstance(inst, `${name}-${i}`, agent, secure))
  let next = 0
  return {
    name,
    config,
    instances,
    deadlines: new DeadlineQueue<Exchange>(config.timeout_ms, onDeadline),
    pick () {
      if (instances.length === 0) return undefined
      const instance = instances[next]
      next = next + 1 === instances.length ? 0 : next + 1
      return instance
    },
    close () {
      this.deadlines.close()
      agent.destroy()
    },
  }
}
