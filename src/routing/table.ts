/**
 * The route table: a radix tree per method (find-my-way), so matching cost
 * does not grow with the number of routes. Static segments win over `<param>`,
 * which wins over `<path:>` (find-my-way's own precedence). A miss is
 * explained as 405 (with Allow), 308 (the other trailing-slash form) or 404.
 */
import FindMyWay from 'find-my-way'
import type { PathTemplate, Segment } from './template'

const INT = '^\\d+$'
const UUID = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
const TAIL_PARAM: Record<string, string> = { string: '([^/]+)', int: '(\\d+)', uuid: `(${UUID.slice(1, -1)})`, path: '(.+)' }

export interface TableEntry<R> {
  route: R
  methods: readonly string[]
  template: PathTemplate
}

export interface Match<R> {
  route: R
  /** Decoded placeholder values from the URL. */
  params: Record<string, string>
}

export type Miss =
  | { kind: 'method', allow: string }
  | { kind: 'redirect', location: string }
  | { kind: 'bad-url' }
  | { kind: 'not-found' }

export interface RouteTable<R> {
  find (method: string, path: string): Match<R> | null
  explainMiss (path: string, query: string): Miss
  readonly size: number
}

const CONVERTER_REGEX: Record<string, string | undefined> = { int: INT, uuid: UUID }

/**
 * One template within a radix registration. find-my-way ignores a
 * parameter's regex when it compares patterns, so templates that differ only
 * in converters (`/items/<int:id>`, `/items/<uuid:id>`, `/items/<id>`) share
 * one registration — a "slot" — and are told apart here, most specific first.
 */
interface Candidate<R> {
  route: R
  template: PathTemplate
  /** Names of the params before any `<path:>`, in order. */
  names: string[]
  /** Per position: a converter check the registration does not already make. */
  checks: Array<RegExp | undefined>
  /** For `<path:>` templates: matches the wildcard remainder. */
  tail: RegExp | undefined
  tailNames: string[]
  /** A `<path:>` placeholder is the last segment and there is no trailing slash. */
  plainWildcard: string | undefined
  pathName: string | undefined
  /** The registration's param names are this candidate's own (no renaming). */
  ownNames: boolean
  /** Converter of each param before any `<path:>`. */
  converters: string[]
  rank: number[]
}

interface Slot<R> { names: string[], candidates: Array<Candidate<R>> }

function escapeStatic (text: string): string {
  // find-my-way reads ':' as a parameter and '*' as a wildcard; '::' is a literal colon.
  return text.replace(/:/g, '::')
}

function escapeRegex (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/** The template's pattern with converters left out: equal keys share a registration. */
function shapeOf (template: PathTemplate): { key: string, pathIndex: number } {
  let key = ''
  const { segments } = template
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]
    if (s.kind === 'static') key += '/' + escapeStatic(s.text)
    else if (s.converter === 'path') return { key: key + '/*', pathIndex: i }
    else key += '/:'
  }
  return { key: key === '' || template.trailingSlash ? key + '/' : key, pathIndex: -1 }
}

const RANK: Record<string, number> = { int: 0, uuid: 1, string: 2 }

function buildCandidate<R> (route: R, template: PathTemplate, pathIndex: number): Candidate<R> {
  const prefix = pathIndex < 0 ? template.segments : template.segments.slice(0, pathIndex)
  const params = prefix.filter((s): s is Extract<Segment, { kind: 'param' }> => s.kind === 'param')
  const base = {
    route,
    template,
    names: params.map(p => p.name),
    checks: params.map(p => CONVERTER_REGEX[p.converter] !== undefined ? new RegExp(CONVERTER_REGEX[p.converter] as string) : undefined),
    ownNames: true,
    converters: params.map(p => p.converter),
    rank: params.map(p => RANK[p.converter]),
  }
  if (pathIndex < 0) return { ...base, tail: undefined, tailNames: [], plainWildcard: undefined, pathName: undefined }
  const rest = template.segments.slice(pathIndex)
  const pathParam = rest[0] as Extract<Segment, { kind: 'param' }>
  if (rest.length === 1 && !template.trailingSlash) {
    return { ...base, tail: undefined, tailNames: [], plainWildcard: pathParam.name, pathName: pathParam.name }
  }
  let source = '^'
  const tailNames: string[] = []
  rest.forEach((s, i) => {
    if (i > 0) source += '/'
    if (s.kind === 'static') source += escapeRegex(s.text)
    else { source += TAIL_PARAM[s.converter]; tailNames.push(s.name) }
  })
  source += template.trailingSlash ? '/$' : '$'
  return { ...base, tail: new RegExp(source), tailNames, plainWildcard: undefined, pathName: pathParam.name }
}

/** Most specific first: converters position by position, then the longer static tail. */
function compareCandidates<R> (a: Candidate<R>, b: Candidate<R>): number {
  for (let i = 0; i < a.rank.length; i++) if (a.rank[i] !== b.rank[i]) return a.rank[i] - b.rank[i]
  return (b.tail?.source.length ?? -1) - (a.tail?.source.length ?? -1)
}

// `<path:>` is one or more non-empty segments; `//evil.com` or `a/` is no match
// (so the trailing-slash redirect and 404 apply, never a protocol-relative URL).
function isSegments (value: string): boolean {
  return value !== '' && value[0] !== '/' && value[value.length - 1] !== '/' && !value.includes('//')
}

function matchCandidate<R> (c: Candidate<R>, slotNames: string[], params: Record<string, string | undefined>): Match<R> | null {
  for (let i = 0; i < slotNames.length; i++) {
    const value = params[slotNames[i]] as string
    if (value === '') return null // `<name>` is never empty
    const check = c.checks[i]
    if (check !== undefined && !check.test(value)) return null
  }
  if (c.ownNames && c.plainWildcard === undefined && c.tail === undefined) return { route: c.route, params: params as Record<string, string> }
  const out: Record<string, string> = {}
  for (let i = 0; i < slotNames.length; i++) out[c.names[i]] = params[slotNames[i]] as string
  if (c.plainWildcard !== undefined) {
    const rest = params['*'] as string
    if (!isSegments(rest)) return null
    out[c.plainWildcard] = rest
  } else if (c.tail !== undefined) {
    const m = c.tail.exec(params['*'] as string)
    if (m === null) return null
    for (let i = 0; i < c.tailNames.length; i++) {
      if (c.tailNames[i] === c.pathName && !isSegments(m[i + 1])) return null
      out[c.tailNames[i]] = m[i + 1]
    }
  }
  return { route: c.route, params: out }
}

/** The radix pattern for a slot: a converter regex only where every candidate has one. */
function slotPattern<R> (slot: Slot<R>): string {
  const first = slot.candidates[0]
  let pattern = ''
  let p = 0
  const { segments } = first.template
  for (const s of segments) {
    if (s.kind === 'static') { pattern += '/' + escapeStatic(s.text); continue }
    if (s.converter === 'path') return pattern + '/*'
    const regexes = new Set(slot.candidates.map(c => CONVERTER_REGEX[c.converters[p]]))
    const name = slot.names[p]
    if (regexes.has(undefined)) pattern += `/:${name}`
    else pattern += `/:${name}(^(?:${[...regexes].map(r => (r as string).slice(1, -1)).join('|')})$)`
    p++
  }
  return pattern === '' || first.template.trailingSlash ? pattern + '/' : pattern
}

/** Builds the table. Throws on a registration find-my-way refuses (the caller locates it). */
export function buildRouteTable<R> (entries: ReadonlyArray<TableEntry<R>>): RouteTable<R> {
  const router = FindMyWay({ caseSensitive: true, ignoreTrailingSlash: false, ignoreDuplicateSlashes: false, maxParamLength: 8192 })
  const slots = new Map<string, Slot<R>>()
  const methods = new Set<string>()

  for (const entry of entries) {
    const { key, pathIndex } = shapeOf(entry.template)
    const candidate = buildCandidate(entry.route, entry.template, pathIndex)
    const expanded = entry.methods.includes('GET') && !entry.methods.includes('HEAD')
      ? [...entry.methods, 'HEAD']
      : entry.methods
    for (const method of expanded) {
      methods.add(method)
      const slotKey = `${method} ${key}`
      const slot = slots.get(slotKey)
      if (slot === undefined) slots.set(slotKey, { names: candidate.names, candidates: [candidate] })
      else slot.candidates.push({ ...candidate, ownNames: candidate.names.every((n, i) => n === slot.names[i]) })
    }
  }
  for (const [slotKey, slot] of slots) {
    slot.candidates.sort(compareCandidates)
    // A single candidate whose converters the radix regex already checks needs no second check.
    if (slot.candidates.length === 1) slot.candidates[0].checks = slot.candidates[0].checks.map(() => undefined)
    router.on(slotKey.slice(0, slotKey.indexOf(' ')) as FindMyWay.HTTPMethod, slotPattern(slot), noop, slot)
  }

  function find (method: string, path: string): Match<R> | null {
    const found = router.find(method as FindMyWay.HTTPMethod, path)
    if (found === null) return null
    const slot = found.store as Slot<R>
    const params = found.params as Record<string, string | undefined>
    if (slot.candidates.length === 1) return matchCandidate(slot.candidates[0], slot.names, params)
    for (const c of slot.candidates) {
      const m = matchCandidate(c, slot.names, params)
      if (m !== null) return m
    }
    return null
  }

  function allowedMethods (path: string): string[] {
    const allowed: string[] = []
    for (const m of methods) if (find(m, path) !== null) allowed.push(m)
    return allowed
  }

  function explainMiss (path: string, query: string): Miss {
    const allowed = allowedMethods(path)
    if (allowed.length > 0) return { kind: 'method', allow: allowed.sort().join(', ') }
    const other = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path + '/'
    if (allowedMethods(other).length > 0) return { kind: 'redirect', location: other + query }
    try { decodeURIComponent(path) } catch { return { kind: 'bad-url' } }
    return { kind: 'not-found' }
  }

  return { find, explainMiss, size: entries.length }
}

function noop (): void {}
