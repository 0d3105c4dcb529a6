/**
 * When two routes would answer the same requests: the same path shape and a
 * shared method. The router can only hold one of them, so this is a config
 * error (RouteConflict) rather than a silent first-wins.
 */
import type { PathTemplate } from '../routing/template'
import type { HttpMethod } from './types'

/**
 * The path with placeholder names erased: static segments by their text, each
 * placeholder by its converter, and the trailing slash. `/u/<id>` and
 * `/u/<name>` share a shape; `/u/<int:id>` and `/u/<id>/` do not.
 */
export function routeShapeKey (template: PathTemplate): string {
  const segments = template.segments.map(s => s.kind === 'static' ? s.text : `<${s.converter}>`)
  return '/' + segments.join('/') + (template.trailingSlash ? '/' : '')
}

/**
 * Methods both lists answer, in `b`'s order. HEAD is answered wherever GET is
 * (http.md), so it counts, but is not named again when GET already is.
 */
export function overlappingMethods (a: readonly HttpMethod[], b: readonly HttpMethod[]): HttpMethod[] {
  const answered = (methods: readonly HttpMethod[]): Set<HttpMethod> =>
    new Set(methods.includes('GET') ? [...methods, 'HEAD'] : methods)
  const mine = answered(a)
  const shared = [...answered(b)].filter(m => mine.has(m))
  return shared.includes('GET') ? shared.filter(m => m !== 'HEAD') : shared
}
