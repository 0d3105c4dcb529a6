/**
 * `api-key`: static token auth, as Jupyter Enterprise Gateway does it
 * (`Authorization: token <key>`), also taking `Bearer <key>`, a custom
 * header's raw value, or a query parameter. Keys are compared in constant
 * time: over SHA-256 digests, so neither content nor length leaks.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { definePipe, type PipeContext } from '../types'

export interface ApiKeyProperties {
  keys?: string[]
  keys_env?: string
  header: string
  query_param?: string
  hide_credentials: boolean
  realm: string
}

/** A quoted-string without `"` or `\` (RFC 9110 §11.6.1 challenge parameter). */
const QUOTABLE = '^[\\x20\\x21\\x23-\\x5B\\x5D-\\x7E]*$'
const FIELD_NAME = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"

function digest (text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest()
}

/**
 * Whether `candidate` is one of the keys whose SHA-256 digests are given.
 * Every digest is compared, with no early exit, so the time taken says
 * nothing about which key (or how much of one) matched.
 */
export function matchesAnyKey (candidate: string, digests: readonly Buffer[]): boolean {
  const d = digest(candidate)
  let found = false
  for (const k of digests) found = timingSafeEqual(d, k) || found
  return found
}

/** The keys, digested once at load. Throws (a config error) on a missing source. */
export function loadKeyDigests (props: Pick<ApiKeyProperties, 'keys' | 'keys_env'>, env: NodeJS.ProcessEnv = process.env): Buffer[] {
  if ((props.keys === undefined) === (props.keys_env === undefined)) throw new Error('set either keys or keys_env')
  let keys = props.keys
  if (props.keys_env !== undefined) {
    const value = env[props.keys_env]
    if (value === undefined) throw new Error(`keys_env: the environment variable ${props.keys_env} is not set`)
    keys = value.split(',').map(k => k.trim()).filter(k => k !== '')
    if (keys.length === 0) throw new Error(`keys_env: the environment variable ${props.keys_env} holds no keys`)
  }
  return (keys as string[]).map(digest)
}

interface Presented { key: string | undefined, scheme: 'Bearer' | 'Token' }

/** `token <key>` or `Bearer <key>` (schemes are case-insensitive, RFC 9110 §11.1). */
function fromAuthorization (value: string | undefined): Presented {
  const m = value === undefined ? null : /^(token|bearer)[ \t]+(\S+)[ \t]*$/i.exec(value)
  if (m === null) return { key: undefined, scheme: 'Bearer' }
  return { key: m[2], scheme: m[1].toLowerCase() === 'token' ? 'Token' : 'Bearer' }
}

export default definePipe<ApiKeyProperties>({
  name: 'api-key',
  phase: 'inbound',
  schema: {
    type: 'object',
    description: 'Static API keys. The key comes from `header` (Authorization by default, as "token <key>" or ' +
      '"Bearer <key>"; any other header carries the bare key) or, when query_param is set, from that query ' +
      'parameter only (it is then removed from the query sent upstream). Refusals are 401 Unauthorized.',
    properties: {
      keys: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 }, description: 'accepted keys (use ${ENV} rather than literal secrets)' },
      keys_env: { type: 'string', minLength: 1, description: 'name of an environment variable holding comma-separated keys, read at load' },
      header: { type: 'string', pattern: FIELD_NAME, default: 'Authorization', description: 'header carrying the key' },
      query_param: { type: 'string', minLength: 1, description: 'query parameter carrying the key (instead of the header)' },
      hide_credentials: { type: 'boolean', default: false, description: 'remove the key header before the request goes upstream' },
      realm: { type: 'string', pattern: QUOTABLE, default: 'sluice', description: 'realm of the WWW-Authenticate challenge' },
    },
    additionalProperties: false,
  },
  create (props) {
    const digests = loadKeyDigests(props)
    const headerName = props.header.toLowerCase()
    const authorization = headerName === 'authorization'
    const param = props.query_param
    const realm = `realm="${props.realm}"`

    return (ctx: PipeContext) => {
      const { headers, query } = ctx.request
      let presented: Presented
      if (param !== undefined) {
        presented = { key: query.get(param) ?? undefined, scheme: 'Bearer' }
        // The key is the gateway's business; upstream logs must not collect it.
        if (query.has(param)) query.delete(param)
      } else {
        const raw = headers[headerName]
        const value = Array.isArray(raw) ? raw[0] : raw
        presented = authorization ? fromAuthorization(value) : { key: value?.trim() || undefined, scheme: 'Bearer' }
        if (props.hide_credentials) delete headers[headerName]
      }
      if (presented.key === undefined) {
        ctx.fail(401, 'Unauthorized', 'an API key is required', { 'WWW-Authenticate': `${presented.scheme} ${realm}` })
      }
      if (!matchesAnyKey(presented.key, digests)) {
        const error = presented.scheme === 'Bearer' ? ', error="invalid_token"' : ''
        ctx.fail(401, 'Unauthorized', 'the API key is not valid', { 'WWW-Authenticate': `${presented.scheme} ${realm}${error}` })
      }
    }
  },
})
