/**
 * The one rule for upstream instance URLs, static (routes.yaml) or registered
 * (registry API): `http(s)://host[:port]`, nothing else. User info, paths,
 * queries and fragments would be silently dropped or, worse, mis-joined with
 * the upstream path, so they are refused rather than guessed at.
 */
const FORM = 'write it as http://host[:port] or https://host[:port]'

/** A message saying what is wrong with `raw`, or undefined when it is fine. */
export function checkInstanceUrl (raw: string): string | undefined {
  // The WHATWG parser quietly trims spaces and turns "\" into "/"; a URL that
  // needed that is a mistake, not something to repair.
  if (/[\s\\]/.test(raw)) return `must not contain whitespace or backslashes; ${FORM}`
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    return `is not a valid URL; ${FORM}`
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `must use http:// or https://, not ${url.protocol}//`
  // Checked on the raw text: the parser accepts "http:host" and normalises
  // "/./" or an empty "?" away, hiding what was written.
  const rest = /^https?:\/\/(.*)$/i.exec(raw)?.[1]
  if (rest === undefined) return `must start with ${url.protocol}//; ${FORM}`
  const authority = /^[^/?#]*/.exec(rest)![0]
  const after = rest.slice(authority.length)
  if (authority.includes('@')) return 'must not contain user info ("user:password@"); give credentials to a pipe, not the URL'
  if (after.includes('?') || after.includes('#')) return `must not have a query or fragment; ${FORM}`
  if (after !== '' && after !== '/') return `must not have a path ("${after}"); put paths in the routes' upstream_path`
  return undefined
}
