/** The running gateway as the admin app sees it (src/admin/types.ts). */
import type { Gateway, Generation } from '../gateway'
import { healthOf } from '../upstream/service'
import type { AdminRoute, AdminService, AdminTarget, DrainResult } from './types'

const SECRET_KEYS = /^(token|registry_token|secret|password|key|api_key|keys|users|private_key)$/i

/** The effective config with secrets replaced: admin tokens, pipe secrets, keys, TLS key paths. */
export function redact (value: unknown, key = ''): unknown {
  if (SECRET_KEYS.test(key)) return '[redacted]'
  if (Array.isArray(value)) return value.map(v => redact(v))
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redact(v, k)]))
  }
  return value
}

export interface TargetOptions {
  ready: () => boolean
  metrics: AdminTarget['metrics']
  /** What POST /admin/reload runs; by default the gateway's own reload. */
  reload?: AdminTarget['reload']
}

/** The compiled route table as GET /admin/routes shows it. */
export function routesOf (gen: Generation): AdminRoute[] {
  return gen.routes.map(r => ({
      name: r.name,
      methods: [...r.methods],
      path: r.config.path,
      upstream_path: r.config.upstream_path,
      service: r.service.name,
      pipes: {
        inbound: r.pipeline?.inbound.names.slice() ?? [],
        outbound: r.pipeline?.outbound.names.slice() ?? [],
      },
    }))
}

/** Services and instances with their live state, as GET /admin/services shows them. */
export function servicesOf (gen: Generation): AdminService[] {
  return [...gen.services.values()].map((s): AdminService => ({
      name: s.name,
      balancer: s.config.balancer,
      breaker: s.breaker?.state() ?? null,
      instances: s.instances.map(i => ({
        id: i.id,
        url: i.url,
        weight: i.weight,
        labels: [...i.labels],
        health: healthOf(i),
        drained: i.drained,
        inflight: i.inflight,
        source: 'static',
      })),
    }))
}

/** Drains or undrains an instance of the serving generation. */
export function drain (gen: Generation, service: string, instance: string, drained: boolean): DrainResult {
  const s = gen.services.get(service)
  if (s === undefined) return 'no-service'
  return s.setDrained(instance, drained) ? 'ok' : 'no-instance'
}

export function adminTarget (gateway: Gateway, options: TargetOptions): AdminTarget {
  return {
    routes: () => routesOf(gateway.generation),
    services: () => servicesOf(gateway.generation),
    config: () => redact(gateway.generation.loaded.config),
    reload: options.reload ?? (() => gateway.reload()),
    setDrained: (service, instance, drained) => drain(gateway.generation, service, instance, drained),
    ready: options.ready,
    metrics: options.metrics,
  }
}
