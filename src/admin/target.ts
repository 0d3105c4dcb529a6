/** The running gateway as the admin app sees it (src/admin/types.ts). */
import type { Gateway } from '../gateway'
import { healthOf } from '../upstream/service'
import type { AdminService, AdminTarget } from './types'

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

export function adminTarget (gateway: Gateway, options: { ready: () => boolean, metrics: AdminTarget['metrics'] }): AdminTarget {
  return {
    routes: () => gateway.generation.routes.map(r => ({
      name: r.name,
      methods: [...r.methods],
      path: r.config.path,
      upstream_path: r.config.upstream_path,
      service: r.service.name,
      pipes: {
        inbound: r.pipeline?.inbound.names.slice() ?? [],
        outbound: r.pipeline?.outbound.names.slice() ?? [],
      },
    })),
    services: () => [...gateway.generation.services.values()].map((s): AdminService => ({
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
    })),
    config: () => redact(gateway.generation.loaded.config),
    reload: () => gateway.reload(),
    setDrained (service, instance, drained) {
      const s = gateway.generation.services.get(service)
      if (s === undefined) return 'no-service'
      return s.setDrained(instance, drained) ? 'ok' : 'no-instance'
    },
    ready: options.ready,
    metrics: options.metrics,
  }
}
