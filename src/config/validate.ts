/**
 * Checks the schema cannot express: references between parts of the file
 * (services, pipes), placeholders, route clashes, URLs and addresses. Runs
 * even when the schema found problems, on the parts it found sound, so that
 * one run reports everything.
 */
import net from 'node:net'
import { parseTemplate, TemplateError, type PathTemplate, type Segment } from '../routing/template'
import { checkInstanceUrl } from './instance-url'
import { overlappingMethods, routeShapeKey } from './route-shape'
import { didYouMean } from './suggest'
import type { SchemaVerdict } from './schema'
import type { Issue, YamlPath } from './problems'
import type { GatewayConfig, HttpMethod, PipeRef, RouteConfig } from './types'

/** The pipes a config may name: built-ins and the modules of pipes_dir. */
export interface PipeCatalog {
  /** every known pipe name (built-ins + custom), for did-you-mean */
  names (): string[]
  has (name: string): boolean
  /**
   * Validate one pipe use; return human messages (empty = fine). phase is
   * where it is used. Runs before the config is frozen, so a schema with
   * defaults may fill them into `properties`.
   */
  check? (name: string, properties: Record<string, unknown>, phase: 'inbound' | 'outbound'): string[]
  /** Modules of pipes_dir that could not be loaded (reported at `pipes_dir`). */
  readonly moduleProblems?: readonly string[]
}

export interface CrossCheckContext {
  verdict: SchemaVerdict
  /** Absent: every pipe name is unknown. */
  pipes: PipeCatalog | undefined
  /** `file:line:col` of a node, to name the other side of a clash. */
  where (path: YamlPath): string
  /** Whether the file itself has this node (defaults are not in the file). */
  written (path: YamlPath): boolean
}

type Phase = 'inbound' | 'outbound'
const PHASES: readonly Phase[] = ['inbound', 'outbound']

/**
 * `config` has been through the schema but may still break it in places;
 * every check first asks the verdict whether the values it reads are sound.
 */
export function crossCheck (config: GatewayConfig, ctx: CrossCheckContext): Issue[] {
  const issues: Issue[] = []
  for (const message of ctx.pipes?.moduleProblems ?? []) issues.push({ path: ['pipes_dir'], message })
  checkTrustProxy(config, ctx, issues)
  checkAdmin(config, ctx, issues)
  checkInstances(config, ctx, issues)
  if (ctx.verdict.typed(['global'])) {
    for (const phase of PHASES) checkPipeline(config.global[phase], ['global', phase], phase, ctx, issues)
  }
  checkRoutes(config, ctx, issues)
  return issues
}

function checkTrustProxy (config: GatewayConfig, { verdict }: CrossCheckContext, issues: Issue[]): void {
  if (!verdict.typed(['server', 'trust_proxy'])) return
  config.server.trust_proxy.forEach((entry, i) => {
    const at = ['server', 'trust_proxy', i]
    if (verdict.valid(at) && !isAddressOrCidr(entry)) {
      issues.push({ path: at, message: `"${entry}" is not an IP address or CIDR range (e.g. 10.0.0.0/8 or fd00::/8)` })
    }
  })
}

function isAddressOrCidr (text: string): boolean {
  const [address, prefix, extra] = text.split('/')
  const family = net.isIP(address)
  if (family === 0 || extra !== undefined) return false
  return prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128))
}

function checkAdmin (config: GatewayConfig, { verdict }: CrossCheckContext, issues: Issue[]): void {
  if (!verdict.valid(['admin', 'host']) || isLoopback(config.admin.host)) return
  if (config.admin.token === undefined) {
    issues.push({ path: ['admin', 'host'], message: 'admin.token is required when admin.host is not a loopback address' })
  }
}

function isLoopback (host: string): boolean {
  const bare = host.replace(/^\[(.*)\]$/, '$1').toLowerCase()
  return bare === 'localhost' || bare === '::1' || (net.isIPv4(bare) && bare.startsWith('127.'))
}

function checkInstances (config: GatewayConfig, { verdict }: CrossCheckContext, issues: Issue[]): void {
  if (!verdict.typed(['services'])) return
  for (const [name, service] of Object.entries(config.services)) {
    if (!verdict.typed(['services', name, 'instances'])) continue
    service.instances.forEach((instance, i) => {
      const at = ['services', name, 'instances', i, 'url']
      const message = verdict.valid(at) ? checkInstanceUrl(instance.url) : undefined
      if (message !== undefined) issues.push({ path: at, message })
    })
  }
}

function checkPipeline (pipes: PipeRef[], at: YamlPath, phase: Phase, ctx: CrossCheckContext, issues: Issue[]): void {
  if (!ctx.verdict.typed(at)) return
  pipes.forEach((pipe, i) => {
    const here = [...at, i]
    if (!ctx.verdict.valid(here)) return
    if (ctx.pipes?.has(pipe.name) !== true) {
      const hint = didYouMean(pipe.name, ctx.pipes?.names() ?? [])
      issues.push({
        path: [...here, 'name'],
        message: `unknown pipe "${pipe.name}"${hint === '' ? ': it is neither built in nor a module in pipes_dir' : hint}`,
      })
      return
    }
    const located = ctx.written([...here, 'properties']) ? [...here, 'properties'] : [...here, 'name']
    for (const message of ctx.pipes.check?.(pipe.name, pipe.properties, phase) ?? []) {
      issues.push({ path: located, message: `pipe "${pipe.name}": ${message}` })
    }
  })
}

interface SeenRoute { index: number, name: string, methods: HttpMethod[] }

function checkRoutes (config: GatewayConfig, ctx: CrossCheckContext, issues: Issue[]): void {
  const { verdict } = ctx
  if (!verdict.typed(['routes'])) return
  const declared = verdict.typed(['services']) ? Object.keys(config.services) : undefined
  const names = new Map<string, number>()
  const shapes = new Map<string, SeenRoute[]>()
  config.routes.forEach((route, i) => {
    const at = (...rest: Array<string | number>): YamlPath => ['routes', i, ...rest]

    if (verdict.valid(at('name'))) {
      const first = names.get(route.name)
      if (first === undefined) names.set(route.name, i)
      else issues.push({ path: at('name'), message: `duplicate route name "${route.name}" (first used at ${ctx.where(['routes', first, 'name'])}): give each route its own name` })
    }

    if (verdict.valid(at('service_name'))) {
      if (declared !== undefined && !declared.includes(route.service_name)) {
        const hint = didYouMean(route.service_name, declared)
        issues.push({ path: at('service_name'), message: `service "${route.service_name}" is not declared${hint === '' ? ': add it under services' : hint}` })
      }
      const templates = parseTemplates(route, at, verdict, issues)
      if (templates !== undefined) {
        checkConverters(templates.path, templates.upstream, at('upstream_path'), issues)
        if (verdict.valid(at('methods')) && verdict.valid(at('name'))) checkConflict(route, i, templates.path, shapes, ctx, issues)
      }
    }

    if (verdict.typed(at('pipelines'))) {
      for (const phase of PHASES) checkPipeline(route.pipelines[phase], at('pipelines', phase), phase, ctx, issues)
    }
  })
}

function parseTemplates (
  route: RouteConfig,
  at: (...rest: string[]) => YamlPath,
  verdict: SchemaVerdict,
  issues: Issue[],
): { path: PathTemplate, upstream: PathTemplate } | undefined {
  const parse = (key: 'path' | 'upstream_path'): PathTemplate | undefined => {
    if (!verdict.valid(at(key))) return undefined
    try {
      return parseTemplate(route[key], route.service_name)
    } catch (err) {
      if (!(err instanceof TemplateError)) throw err
      issues.push({ path: at(key), message: err.message })
      return undefined
    }
  }
  const path = parse('path')
  const upstream = parse('upstream_path')
  return path !== undefined && upstream !== undefined ? { path, upstream } : undefined
}

/**
 * A placeholder of upstream_path that is also in path takes the matched
 * value, whose kind the path's converter decides: a plain <name> refers to it
 * as matched (`<path:rest>` → `/<rest>` is the natural way to strip a
 * prefix). A converter written in upstream_path must be the path's own;
 * `<path:x>` for a one-segment `<x>` promises values the route never matches.
 */
function checkConverters (path: PathTemplate, upstream: PathTemplate, at: YamlPath, issues: Issue[]): void {
  const matched = new Map<string, Segment & { kind: 'param' }>()
  for (const s of path.segments) if (s.kind === 'param') matched.set(s.name, s)
  for (const s of upstream.segments) {
    if (s.kind !== 'param' || s.converter === 'string') continue
    const inPath = matched.get(s.name)
    if (inPath === undefined || s.converter === inPath.converter) continue
    const fix = inPath.converter === 'string' ? `<${s.name}>` : `<${s.name}> or ${placeholder(inPath)}`
    issues.push({ path: at, message: `placeholder ${placeholder(s)} does not match ${placeholder(inPath)} in path: write it as ${fix}` })
  }
}

function placeholder (s: Segment & { kind: 'param' }): string {
  return s.converter === 'string' ? `<${s.name}>` : `<${s.converter}:${s.name}>`
}

function checkConflict (
  route: RouteConfig,
  index: number,
  path: PathTemplate,
  shapes: Map<string, SeenRoute[]>,
  ctx: CrossCheckContext,
  issues: Issue[],
): void {
  const key = routeShapeKey(path)
  const earlier = shapes.get(key) ?? []
  for (const other of earlier) {
    const shared = overlappingMethods(other.methods, route.methods)
    if (shared.length === 0) continue
    issues.push({
      path: ['routes', index, 'path'],
      message: `RouteConflict: same path shape as route "${other.name}" (${ctx.where(['routes', other.index, 'path'])}) ` +
        `with overlapping method${shared.length > 1 ? 's' : ''} ${shared.join(', ')}`,
    })
    break
  }
  shapes.set(key, [...earlier, { index, name: route.name, methods: route.methods }])
}
