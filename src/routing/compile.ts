/**
 * Routes from the config compiled once per generation: templates parsed,
 * upstream paths turned into builders, services bound, the radix table built.
 */
import type { HttpMethod, LoadedConfig, RouteConfig } from '../config/types'
import type { RouteMetrics } from '../observability/metrics'
import type { CompiledPipeline } from '../pipes/compile'
import type { RouteInfo } from '../pipes/types'
import type { Service } from '../upstream/service'
import { compileUpstreamPath, type UpstreamPathBuilder } from './params'
import { buildRouteTable, type RouteTable } from './table'
import { parseTemplate, type PathTemplate } from './template'

export interface CompiledRoute {
  readonly name: string
  readonly config: RouteConfig
  readonly service: Service
  readonly methods: readonly HttpMethod[]
  readonly path: PathTemplate
  readonly upstream: PathTemplate
  readonly upstreamPath: UpstreamPathBuilder
  /** Every value that is checked before substitution: [name, is a <path:> value]. */
  readonly checks: ReadonlyArray<readonly [string, boolean]>
  /** `upstream_path` placeholders that are not in `path`. */
  readonly extraParams: readonly string[]
  /** Global and route pipes together; undefined when there are none (the fast path). */
  readonly pipeline: CompiledPipeline | undefined
  readonly info: RouteInfo
  /** Upstream responses need a decision before they are passed on (outbound pipes, breaker, retries). */
  readonly intercepts: boolean
  /** The route's request counters, bound to its labels at load. */
  readonly metrics: RouteMetrics
}

/** Counters that count nothing, for routes compiled only to be inspected. */
const UNCOUNTED: RouteMetrics = Object.freeze({ route: '', service: '', done () {}, rateLimited () {} })

export function compileRoutes (
  loaded: LoadedConfig,
  services: ReadonlyMap<string, Service>,
  pipelineOf: (index: number) => CompiledPipeline | undefined = () => undefined,
  metricsOf: (route: string, service: string) => RouteMetrics = () => UNCOUNTED,
): { routes: CompiledRoute[], table: RouteTable<CompiledRoute> } {
  const routes = loaded.config.routes.map((config, index): CompiledRoute => {
    const path = parseTemplate(config.path, config.service_name)
    const upstream = parseTemplate(config.upstream_path, config.service_name)
    const service = services.get(config.service_name)
    if (service === undefined) throw new Error(`service "${config.service_name}" is not declared`)
    const multiSegment = new Set<string>()
    for (const t of [path, upstream]) {
      for (const s of t.segments) if (s.kind === 'param' && s.converter === 'path') multiSegment.add(s.name)
    }
    return Object.freeze({
      name: config.name,
      config,
      service,
      methods: config.methods,
      path,
      upstream,
      upstreamPath: compileUpstreamPath(upstream, multiSegment),
      checks: upstream.params.map(name => [name, multiSegment.has(name)] as const),
      extraParams: upstream.params.filter(name => !path.params.includes(name)),
      pipeline: pipelineOf(index),
      info: Object.freeze({ name: config.name, service: config.service_name }),
      intercepts: (pipelineOf(index)?.outbound.handlers.length ?? 0) > 0 || service.breaker !== undefined || service.config.retries !== undefined,
      metrics: metricsOf(config.name, config.service_name),
    })
  })
  const table = buildRouteTable(routes.map(route => ({ route, methods: route.methods, template: route.path })))
  return { routes, table }
}
