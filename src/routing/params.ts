/**
 * Placeholder values: the checks every value passes before it is substituted
 * into an upstream path, and the compiled builder for `upstream_path`.
 */
import { GatewayError } from '../errors'
import type { PathTemplate } from './template'

// Refused after decoding (config.md "Placeholders"): `/` `\` `%`, C0 controls,
// DEL and NUL. `.`/`..`/empty are refused separately, per segment.
const REFUSED_CHARS = /[/\\%\x00-\x1f\x7f]/
const REFUSED_IN_PATH = /[\\%\x00-\x1f\x7f]/

/** Why a value is refused, or undefined when it may be substituted. */
export function refuseValue (value: string, isPath: boolean): string | undefined {
  if (!isPath) {
    if (value === '' || value === '.' || value === '..') return 'must not be empty, "." or ".."'
    return REFUSED_CHARS.test(value) ? 'must not contain "/", "\\", "%" or control characters' : undefined
  }
  if (REFUSED_IN_PATH.test(value)) return 'must not contain "\\", "%" or control characters'
  for (const segment of value.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') return 'must not contain empty, "." or ".." segments'
  }
  return undefined
}

export function checkValue (name: string, value: string, isPath: boolean): void {
  const why = refuseValue(value, isPath)
  if (why !== undefined) throw new GatewayError('InvalidParameter', `parameter "${name}" ${why}`)
}

const SAFE = /^[A-Za-z0-9_.~-]*$/

function encodeSegment (value: string): string {
  return SAFE.test(value) ? value : encodeURIComponent(value)
}

function encodePath (value: string): string {
  return value.split('/').map(encodeSegment).join('/')
}

export type UpstreamPathBuilder = (values: Readonly<Record<string, string>>) => string

/**
 * Compiles `upstream_path` into a function that concatenates static text and
 * percent-encoded values. `multiSegment` names the values that keep their
 * `/` (a `<path:>` placeholder in either template). Values must have passed
 * `checkValue` already.
 */
export function compileUpstreamPath (template: PathTemplate, multiSegment: ReadonlySet<string>): UpstreamPathBuilder {
  const parts: Array<string | { name: string, isPath: boolean }> = []
  let text = ''
  for (const segment of template.segments) {
    text += '/'
    if (segment.kind === 'static') {
      text += segment.text
    } else {
      parts.push(text)
      text = ''
      parts.push({ name: segment.name, isPath: multiSegment.has(segment.name) })
    }
  }
  text += template.trailingSlash || template.segments.length === 0 ? '/' : ''
  if (parts.length === 0) {
    const constant = text
    return () => constant
  }
  parts.push(text)
  return (values) => {
    let out = ''
    for (const part of parts) {
      out += typeof part === 'string' ? part : (part.isPath ? encodePath(values[part.name]) : encodeSegment(values[part.name]))
    }
    return out
  }
}
