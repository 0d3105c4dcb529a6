/**
 * A service: its instances, one keep-alive connection pool, and the balancer
 * that picks an instance per request. Everything per instance that
 * http-proxy needs is built here, at load, so forwarding allocates nothing.
 */
import http from 'node:http'
import https from 'node:https'
import fs from 'node:fs'
import type { InstanceConfig, ServiceConfig } from '../config/types'

export interface ProxyTarget {
  protocol: 'http:' | 'https:'
  /** host:port, as http-proxy's changeOrigin writes it into Host. */
  host: string
  hostname: string
  port: string
}

export interface Instance {
  readonly id: string
  readonly url: string
  readonly weight: number
  readonly labels: readonly string[]
  /** The options object handed to http-proxy for this instance, built once. */
  readonly proxyOptions: Readonly<{ target: ProxyTarget, agent: http.Agent, changeOrigin: true, xfwd: false }>
  inflight: number
}

export interface Service {
  readonly name: string
  readonly config: ServiceConfig
  readonly instances: readonly Instance[]
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

function createAgent (config: ServiceConfig): http.Agent {
  const common = {
    keepAlive: true,
    // Idle pooled sockets are closed before typical upstream keep-alive
    // timeouts; Node also honours an upstream's `Keep-Alive: timeout=` hint.
    timeout: 30_000,
    scheduling: 'lifo' as const,
  }
  const secure = config.instances.some(i => i.url.startsWith('https:'))
  if (!secure) return new http.Agent(common)
  const tls = config.tls
  return new https.Agent({
    ...common,
    ca: tls?.ca !== undefined ? fs.readFileSync(tls.ca) : undefined,
    cert: tls?.cert !== undefined ? fs.readFileSync(tls.cert) : undefined,
    key: tls?.key !== undefined ? fs.readFileSync(tls.key) : undefined,
    rejectUnauthorized: tls?.reject_unauthorized ?? true,
  })
}

export function createInstance (config: InstanceConfig, id: string, agent: http.Agent): Instance {
  return {
    id,
    url: config.url,
    weight: config.weight,
    labels: config.labels,
    proxyOptions: Object.freeze({ target: targetOf(config.url), agent, changeOrigin: true as const, xfwd: false as const }),
    inflight: 0,
  }
}

export function createService (name: string, config: ServiceConfig): Service {
  const agent = createAgent(config)
  const instances = config.instances.map((inst, i) => createInstance(inst, `${name}-${i}`, agent))
  let next = 0
  return {
    name,
    config,
    instances,
    pick () {
      if (instances.length === 0) return undefined
      const instance = instances[next]
      next = next + 1 === instances.length ? 0 : next + 1
      return instance
    },
    close () { agent.destroy() },
  }
}
