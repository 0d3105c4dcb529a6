/**
 * Path templates: Flask-style placeholders (`<name>`, `<int:name>`,
 * `<uuid:name>`, `<path:name>`) parsed once at load. A placeholder fills a
 * whole segment; `<service_name>` is replaced by the route's service name.
 */
export type Converter = 'string' | 'int' | 'uuid' | 'path'

export type Segment =
  | { kind: 'static', text: string }
  | { kind: 'param', name: string, converter: Converter }

export interface PathTemplate {
  /** The template as written, after `<service_name>` substitution. */
  source: string
  segments: Segment[]
  trailingSlash: boolean
  /** Placeholder names in order of appearance. */
  params: string[]
}

const PLACEHOLDER = /^<(?:(string|int|uuid|path):)?([A-Za-z_][A-Za-z0-9_]*)>$/
const CONVERTERS = new Set(['string', 'int', 'uuid', 'path'])

export class TemplateError extends Error {}

export function parseTemplate (source: string, serviceName: string): PathTemplate {
  if (!source.startsWith('/')) throw new TemplateError('must start with "/"')
  if (source.includes('?') || source.includes('#')) throw new TemplateError('must not contain "?" or "#"')
  const resolved = source.replace(/<service_name>/g, serviceName)
  const trailingSlash = resolved.length > 1 && resolved.endsWith('/')
  const body = resolved.slice(1, trailingSlash ? -1 : undefined)
  const segments: Segment[] = []
  const params: string[] = []
  if (body !== '') {
    for (const raw of body.split('/')) {
      if (raw === '') throw new TemplateError('must not contain an empty segment ("//")')
      if (raw === '.' || raw === '..') throw new TemplateError(`must not contain a "${raw}" segment`)
      if (raw.includes('<') || raw.includes('>')) {
        const m = PLACEHOLDER.exec(raw)
        if (!m) {
          const conv = /^<([^:>]*):/.exec(raw)?.[1]
          if (conv !== undefined && !CONVERTERS.has(conv)) {
            throw new TemplateError(`unknown converter "${conv}" in "${raw}" (use int, uuid, path or none)`)
          }
          throw new TemplateError(`"${raw}": a placeholder must fill a whole segment, as <name> or <converter:name>`)
        }
        const name = m[2]
        if (params.includes(name)) throw new TemplateError(`placeholder <${name}> appears twice`)
        params.push(name)
        segments.push({ kind: 'param', name, converter: (m[1] ?? 'string') as Converter })
      } else {
        segments.push({ kind: 'static', text: raw })
      }
    }
  }
  if (segments.filter(s => s.kind === 'param' && s.converter === 'path').length > 1) {
    throw new TemplateError('at most one <path:…> placeholder per path')
  }
  return { source: resolved, segments, trailingSlash, params }
}
