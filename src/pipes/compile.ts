/**
 * Pipelines compiled at load: every placement's `create` runs once here, so
 * a request only calls handlers. Order (pipes.md): global inbound, route
 * inbound, [upstream], route outbound, global outbound. A pipe acting both
 * ways (cors) adds its outbound half after its own scope's outbound pipes,
 * and its preflight half before every inbound pipe.
 */
import path from 'node:path'
import type { Logger } from 'pino'
import { ConfigError, problemAt } from '../config'
import type { ConfigProblem, LoadedConfig, PipeRef } from '../config/types'
import type { Store } from '../store/types'
import type { LoadedPipeCatalog } from './catalog'
import type { InboundContext, OutboundContext, PipeHandler, PipeHandlers, RouteInfo } from './types'

export interface Stage<C> {
  readonly handlers: ReadonlyArray<PipeHandler<any>>
  readonly names: readonly string[]
  readonly _ctx?: C
}

export interface CompiledPipeline {
  readonly preflight: Stage<InboundContext>
  readonly inbound: Stage<InboundContext>
  readonly outbound: Stage<OutboundContext>
  /** Indexes into outbound of pipes that need the response body buffered. */
  readonly buffered: ReadonlySet<number>
}

interface Scope {
  preflight: Array<[string, PipeHandler<any>]>
  inbound: Array<[string, PipeHandler<any>]>
  outbound: Array<[string, PipeHandler<any>, boolean]>
  bothOutbound: Array<[string, PipeHandler<any>, boolean]>
}

function isHandlers (value: unknown): value is PipeHandlers {
  return value !== null && typeof value === 'object'
}

export function compilePipelines (loaded: LoadedConfig, catalog: LoadedPipeCatalog, store: Store, log: Logger): {
  forRoute (index: number): CompiledPipeline | undefined
} {
  const problems: ConfigProblem[] = []
  const { config } = loaded
  const configDir = path.dirname(path.resolve(loaded.file))
  for (const message of catalog.moduleProblems) problems.push(problemAt(loaded, ['pipes_dir'], message))

  function scope (pipelines: { inbound: PipeRef[], outbound: PipeRef[] }, at: Array<string | number>, route: RouteInfo | undefined): Scope {
    const out: Scope = { preflight: [], inbound: [], outbound: [], bothOutbound: [] }
    for (const phase of ['inbound', 'outbound'] as const) {
      pipelines[phase].forEach((ref, j) => {
        const def = catalog.get(ref.name)
        if (def === undefined) return // the loader reported it
        let made: PipeHandler<any> | PipeHandlers
        try {
          made = def.create(ref.properties, { route, store, log: log.child({ pipe: ref.name }), configDir })
        } catch (err) {
          problems.push(problemAt(loaded, [...at, phase, j], `pipe "${ref.name}" could not be created: ${(err as Error).message}`))
          return
        }
        const buffer = def.buffer === true
        if (typeof made === 'function') {
          if (phase === 'inbound') out.inbound.push([ref.name, made])
          else out.outbound.push([ref.name, made, buffer])
        } else if (isHandlers(made) && phase === 'outbound') {
          // Placed on the way out, only the outbound half applies.
          if (made.outbound !== undefined) out.outbound.push([ref.name, made.outbound, buffer])
        } else if (isHandlers(made)) {
          if (made.preflight !== undefined) out.preflight.push([ref.name, made.preflight])
          if (made.inbound !== undefined) out.inbound.push([ref.name, made.inbound])
          if (made.outbound !== undefined) out.bothOutbound.push([ref.name, made.outbound, buffer])
        } else {
          problems.push(problemAt(loaded, [...at, phase, j], `pipe "${ref.name}": create() must return a handler function or { inbound, outbound, preflight }`))
        }
      })
    }
    return out
  }

  const global = scope(config.global, ['global'], undefined)
  const routes = config.routes.map((r, i) => scope(r.pipelines, ['routes', i, 'pipelines'], { name: r.name, service: r.service_name }))
  if (problems.length > 0) throw new ConfigError(problems)

  const compiled = routes.map((route): CompiledPipeline | undefined => {
    const preflight = [...global.preflight, ...route.preflight]
    const inbound = [...global.inbound, ...route.inbound]
    const outbound = [...route.outbound, ...route.bothOutbound, ...global.outbound, ...global.bothOutbound]
    if (preflight.length + inbound.length + outbound.length === 0) return undefined
    const buffered = new Set<number>()
    outbound.forEach(([, , b], i) => { if (b) buffered.add(i) })
    return Object.freeze({
      preflight: { handlers: preflight.map(p => p[1]), names: preflight.map(p => p[0]) },
      inbound: { handlers: inbound.map(p => p[1]), names: inbound.map(p => p[0]) },
      outbound: { handlers: outbound.map(p => p[1]), names: outbound.map(p => p[0]) },
      buffered,
    })
  })
  return { forRoute: (index) => compiled[index] }
}
