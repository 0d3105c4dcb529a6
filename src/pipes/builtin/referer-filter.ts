/**
 * `referer-filter`: only requests whose Referer URL's host matches one of the
 * `allow` globs pass (hotlink protection, a cheap CSRF hurdle). Globs are
 * compiled into one RegExp at load.
 */
import { domainToASCII } from 'node:url'
import { definePipe, type PipeContext } from '../types'

interface RefererFilterProperties {
  allow: string[]
  allow_missing: boolean
}

// `*` stands for one or more whole DNS labels: `*.example.com` matches
// a.example.com and a.b.example.com, never example.com itself, and no glob
// can be stretched over a `:`, `/` or `@` into another host.
const LABELS = '[a-z0-9_-]+(?:\\.[a-z0-9_-]+)*'
const HOST_GLOB = /^(?:[a-z0-9_*.-]+|\[[0-9a-f:.]+\])$/

function escapeRegExp (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&')
}

/** `api-*.example.com` → a RegExp source (no anchors) where `*` is LABELS. */
export function globSource (glob: string): string {
  return glob.split('*').map(escapeRegExp).join(LABELS)
}

/**
 * Host globs → one anchored, case-insensitive test. Internationalized names
 * are matched in their ASCII (punycode) form, the form URL parsing yields.
 * Throws on a glob that is not a host (a scheme, a port or a path in it).
 */
export function compileHostGlobs (globs: readonly string[], property: string): (host: string) => boolean {
  if (globs.includes('*')) return () => true
  const sources = globs.map((raw) => {
    const glob = raw.trim().toLowerCase().split('.').map(label => /^[\x00-\x7f]*$/.test(label) ? label : domainToASCII(label)).join('.')
    if (!HOST_GLOB.test(glob) || glob.startsWith('.') || glob.endsWith('.') || glob.includes('..')) {
      throw new Error(`${property}: "${raw}" is not a host pattern (write hosts like example.org or *.example.com, without scheme, port or path)`)
    }
    return globSource(glob)
  })
  const test = new RegExp(`^(?:${sources.join('|')})$`, 'i')
  return (host) => test.test(host)
}

export default definePipe<RefererFilterProperties>({
  name: 'referer-filter',
  phase: 'inbound',
  schema: {
    type: 'object',
    description: 'Refuses with 403 Forbidden a request whose Referer host matches none of `allow`. ' +
      'A Referer that is not an absolute URL, or that is sent twice, is refused; the port is not compared.',
    properties: {
      allow: {
        type: 'array',
        minItems: 1,
        items: { type: 'string', minLength: 1 },
        description: 'host globs, case-insensitive: example.org, *.example.com (any subdomain depth, not the bare domain); "*" alone: any host',
      },
      allow_missing: {
        type: 'boolean',
        default: false,
        description: 'let requests without a Referer (or with an empty one) through, e.g. direct visits and no-referrer policies',
      },
    },
    required: ['allow'],
    additionalProperties: false,
  },
  create (props) {
    const allowed = compileHostGlobs(props.allow, 'allow')
    return (ctx: PipeContext) => {
      const referer = ctx.request.headers.referer
      if (referer === undefined || referer === '') {
        if (props.allow_missing) return
        ctx.fail(403, 'Forbidden', 'a Referer header is required')
      }
      // Node keeps the first of repeated Referer headers; a proxy in front may
      // keep the last. Two answers to "where from" is one too many.
      if (Array.isArray(referer) || countRaw(ctx.request.raw.rawHeaders, 'referer') > 1) {
        ctx.fail(403, 'Forbidden', 'the Referer header is repeated')
      }
      let host: string
      try {
        host = new URL(referer).hostname
      } catch {
        ctx.fail(403, 'Forbidden', 'the Referer header is not a URL')
      }
      // A fully qualified `example.org.` is the same host as example.org.
      if (host.endsWith('.')) host = host.slice(0, -1)
      if (host === '' || !allowed(host)) ctx.fail(403, 'Forbidden', 'the Referer is not allowed')
    }
  },
})

function countRaw (rawHeaders: readonly string[], name: string): number {
  let count = 0
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i].length === name.length && rawHeaders[i].toLowerCase() === name) count++
  }
  return count
}
