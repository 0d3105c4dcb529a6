/**
 * `cors` (Fetch standard, "CORS protocol"): preflights are answered at the
 * gateway before any other pipe (auth included, since a browser never sends
 * credentials on a preflight); every other response — the upstream's and the
 * gateway's own errors — carries the Access-Control-* headers the policy
 * grants. Like the `cors` npm package and Kong's cors plugin, this is a policy
 * the browser enforces: a disallowed origin simply gets no
 * Access-Control-Allow-Origin, and the request itself is not refused.
 */
import type { OutgoingHttpHeaders } from 'node:http'
import { definePipe, type PipeContext } from '../types'
import { globSource } from './referer-filter'

interface CorsProperties {
  origins: string[]
  methods: string[]
  headers?: string[]
  expose: string[]
  credentials: boolean
  max_age_s?: number
}

const TOKEN = '^[!#$%&\'*+.^_`|~0-9A-Za-z-]+$'
const DECORATED = 'cors.decorated'
// What the upstream may not decide for itself once the gateway owns CORS:
// an upstream answering `Access-Control-Allow-Origin: *` would otherwise
// widen the policy written in routes.yaml.
const OWNED = ['access-control-allow-origin', 'access-control-allow-credentials', 'access-control-expose-headers',
  'access-control-allow-methods', 'access-control-allow-headers', 'access-control-max-age']

/** What the policy grants one Origin: the Allow-Origin value, or undefined for none. */
type OriginPolicy = (origin: string) => string | undefined

/**
 * `https://*.example.com` → a test on the serialized origin. `*` covers whole
 * DNS labels (or a port: `http://localhost:*`), never `/`, `:` or `@`.
 * Throws on an entry that is not an origin: a trailing slash or a path is the
 * usual mistake, and would silently never match what browsers send.
 */
function compileOrigins (origins: readonly string[], credentials: boolean): { policy: OriginPolicy, varies: boolean } {
  const any = origins.includes('*')
  // `*` is only a wildcard without credentials (Fetch forbids `*` with
  // credentials); with them it means "reflect the Origin", as `origin: true`
  // does in the cors package. `null` (sandboxed frames, file:) is never
  // reflected unless listed by name: reflecting it opens the policy to any
  // page that can make itself opaque.
  if (any && !credentials) return { policy: () => '*', varies: false }
  const exact = new Set<string>()
  const globs: string[] = []
  for (const raw of origins) {
    if (raw === '*') continue
    const origin = raw.trim().toLowerCase()
    if (origin === 'null') { exact.add(origin); continue }
    if (!/^[a-z][a-z0-9+.-]*:\/\/[^/?#@\s]+$/.test(origin)) {
      throw new Error(`origins: "${raw}" is not an origin: write scheme://host[:port], no path or trailing slash (e.g. https://app.example.com)`)
    }
    if (origin.includes('*')) { globs.push(globSource(origin)); continue }
    let serialized: string
    try { serialized = new URL(origin).origin } catch { serialized = '' }
    if (serialized !== origin) {
      throw new Error(`origins: "${raw}" is not how a browser sends that origin${serialized !== '' && serialized !== 'null' ? ` (it sends "${serialized}")` : ''}`)
    }
    exact.add(origin)
  }
  const globTest = globs.length === 0 ? undefined : new RegExp(`^(?:${globs.join('|')})$`, 'i')
  return {
    varies: true,
    policy (origin) {
      const lower = origin.toLowerCase()
      if (exact.has(lower)) return origin
      if (lower === 'null') return undefined
      if (any || globTest?.test(lower) === true) return origin
      return undefined
    },
  }
}

function appendVary (headers: OutgoingHttpHeaders, names: readonly string[]): void {
  const current = headers.vary
  const list = current === undefined ? [] : (Array.isArray(current) ? current : [String(current)]).flatMap(v => v.split(',')).map(v => v.trim()).filter(v => v !== '')
  if (list.includes('*')) return
  const lower = new Set(list.map(v => v.toLowerCase()))
  for (const name of names) if (!lower.has(name.toLowerCase())) list.push(name)
  if (list.length > 0) headers.vary = list.join(', ')
}

export default definePipe<CorsProperties>({
  name: 'cors',
  phase: 'both',
  schema: {
    type: 'object',
    description: 'CORS. A preflight (OPTIONS with Origin and Access-Control-Request-Method) is answered at the gateway ' +
      'with 204 before any other pipe runs (auth included) and never reaches the upstream. As in the cors npm package ' +
      'and Kong, a disallowed origin is not refused with an error: its preflight gets 204 without any ' +
      'Access-Control-Allow-* header and its other requests pass without Access-Control-Allow-Origin, so the browser ' +
      'refuses to let the page read them. Other responses (the upstream\'s and the gateway\'s own errors) carry ' +
      'Access-Control-Allow-Origin (+ Vary: Origin), -Allow-Credentials and -Expose-Headers; the upstream\'s own ' +
      'Access-Control-* headers are replaced. Errors from pipes placed before cors carry none: put cors first ' +
      '(or in global.inbound).',
    properties: {
      origins: {
        type: 'array',
        minItems: 1,
        items: { type: 'string', minLength: 1 },
        default: ['*'],
        description: 'allowed origins: exact (https://app.example.com), globs (https://*.example.com, any subdomain depth; ' +
          'http://localhost:* any port), "null" only if listed, or "*" for any (reflected as the Origin when credentials is true)',
      },
      methods: {
        type: 'array',
        items: { type: 'string', pattern: TOKEN },
        default: ['GET', 'HEAD', 'PUT', 'PATCH', 'POST', 'DELETE'],
        description: 'Access-Control-Allow-Methods of a preflight answer',
      },
      headers: {
        type: 'array',
        items: { type: 'string', pattern: TOKEN },
        description: 'Access-Control-Allow-Headers of a preflight answer; absent: the Access-Control-Request-Headers asked for are reflected',
      },
      expose: {
        type: 'array',
        items: { type: 'string', pattern: TOKEN },
        default: [],
        description: 'response headers the page may read (Access-Control-Expose-Headers)',
      },
      credentials: {
        type: 'boolean',
        default: false,
        description: 'send Access-Control-Allow-Credentials: true (cookies, HTTP auth); "*" in origins then reflects the Origin',
      },
      max_age_s: {
        type: 'integer',
        minimum: 0,
        description: 'how long a browser may cache a preflight answer (Access-Control-Max-Age); absent: the browser default (5 s)',
      },
    },
    additionalProperties: false,
  },
  create (props, { log }) {
    const { policy, varies } = compileOrigins(props.origins, props.credentials)
    if (props.credentials && props.origins.includes('*')) {
      log.warn('cors: origins "*" with credentials reflects every Origin: any site can make credentialed requests and read the answers')
    }
    const allowMethods = props.methods.map(m => m.toUpperCase()).join(', ')
    const allowHeaders = props.headers?.join(', ')
    const expose = props.expose.join(', ')
    const maxAge = props.max_age_s === undefined ? undefined : String(props.max_age_s)

    /** Headers for a response to a non-preflight request. */
    function actualHeaders (origin: string | undefined): OutgoingHttpHeaders {
      const headers: OutgoingHttpHeaders = {}
      // Vary even without (or with a refused) Origin: a cache must not hand
      // one origin's answer to another.
      if (varies) headers.vary = 'Origin'
      const allowed = origin === undefined ? undefined : policy(origin)
      if (allowed === undefined) return headers
      headers['access-control-allow-origin'] = allowed
      if (props.credentials) headers['access-control-allow-credentials'] = 'true'
      if (expose !== '') headers['access-control-expose-headers'] = expose
      return headers
    }

    /** Gateway-made answers (errors, ctx.respond) get the headers too; set before any pipe can refuse. */
    function decorate (ctx: PipeContext): void {
      if (ctx.state.has(DECORATED)) return
      const headers = actualHeaders(originOf(ctx))
      ctx.state.set(DECORATED, headers)
      for (const [name, value] of Object.entries(headers)) if (value !== undefined) ctx.setResponseHeader(name, value)
    }

    return {
      preflight (ctx: PipeContext) {
        const origin = originOf(ctx)
        const requested = ctx.request.headers['access-control-request-method']
        if (ctx.request.method !== 'OPTIONS' || origin === undefined || requested === undefined) return decorate(ctx)
        const headers: Record<string, string> = { 'content-length': '0' }
        const vary = varies ? ['Origin'] : []
        if (allowHeaders === undefined) vary.push('Access-Control-Request-Headers')
        if (vary.length > 0) headers.vary = vary.join(', ')
        const allowed = policy(origin)
        if (allowed !== undefined) {
          headers['access-control-allow-origin'] = allowed
          if (props.credentials) headers['access-control-allow-credentials'] = 'true'
          headers['access-control-allow-methods'] = allowMethods
          const asked = ctx.request.headers['access-control-request-headers']
          const allowHeadersValue = allowHeaders ?? (typeof asked === 'string' ? asked : undefined)
          if (allowHeadersValue !== undefined && allowHeadersValue !== '') headers['access-control-allow-headers'] = allowHeadersValue
          if (maxAge !== undefined) headers['access-control-max-age'] = maxAge
        }
        ctx.respond(204, undefined, headers)
      },
      // The runner calls preflight first on every request; this only covers a
      // runner that calls it for OPTIONS alone.
      inbound: decorate,
      outbound (ctx) {
        const headers = ctx.response.headers
        for (const name of OWNED) delete headers[name]
        const ours = (ctx.state.get(DECORATED) as OutgoingHttpHeaders | undefined) ?? actualHeaders(originOf(ctx))
        for (const [name, value] of Object.entries(ours)) {
          if (value === undefined) continue
          if (name === 'vary') appendVary(headers, ['Origin'])
          else headers[name] = value
        }
      },
    }
  },
})

function originOf (ctx: PipeContext): string | undefined {
  const origin = ctx.request.headers.origin
  return typeof origin === 'string' && origin !== '' ? origin : undefined
}
