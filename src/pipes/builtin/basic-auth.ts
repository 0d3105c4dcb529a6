/**
 * `basic-auth`: user and password (RFC 7617) checked against bcrypt hashes
 * (bcryptjs) or scrypt hashes (node:crypto). Hashes are parsed at load; a
 * request for an unknown user still pays for one hash verification, so the
 * answer's timing does not tell which user names exist.
 */
import { scrypt, timingSafeEqual } from 'node:crypto'
import { compare as bcryptCompare } from 'bcryptjs'
import { definePipe, type PipeContext } from '../types'

export interface BasicAuthProperties {
  users: Record<string, string>
  realm: string
  hide_credentials: boolean
}

type Verify = (password: string) => Promise<boolean>

/** A quoted-string without `"` or `\` (RFC 9110 §11.6.1 challenge parameter). */
const QUOTABLE = '^[\\x20\\x21\\x23-\\x5B\\x5D-\\x7E]*$'
const BCRYPT = /^\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2,3})?$/
/** scrypt's working memory (128·N·r bytes) above which a hash is refused at load. */
const SCRYPT_MAX_MEMORY = 1024 * 1024 * 1024

const HASH_FORMATS = 'bcrypt ($2a$/$2b$/$2y$, e.g. from `htpasswd -B` or bcryptjs; bcrypt reads only the first 72 bytes of a password) or ' +
  'scrypt$N$r$p$<salt base64>$<hash base64> (node:crypto scrypt with cost N (a power of 2), block size r, ' +
  'parallelism p; the hash length is the decoded hash\'s, at least 16 bytes)'

function scryptAsync (password: string, salt: Buffer, length: number, options: { N: number, r: number, p: number, maxmem: number }): Promise<Buffer> {
  return new Promise((resolve, reject) => scrypt(password, salt, length, options, (err, key) => err === null ? resolve(key) : reject(err)))
}

/** Throws (a config error naming the user) on a hash it cannot use. */
export function buildVerifier (user: string, hash: string): Verify {
  if (hash.startsWith('$2')) {
    if (!BCRYPT.test(hash)) throw new Error(`users.${user}: not a bcrypt hash ($2b$<cost>$<53 characters>)`)
    return (password) => bcryptCompare(password, hash)
  }
  const parts = hash.split('$')
  if (parts[0] !== 'scrypt') throw new Error(`users.${user}: unknown hash format; use ${HASH_FORMATS}`)
  if (parts.length !== 6) throw new Error(`users.${user}: an scrypt hash has 6 parts: scrypt$N$r$p$salt$hash`)
  const [N, r, p] = parts.slice(1, 4).map(n => /^[1-9]\d{0,9}$/.test(n) ? Number(n) : NaN)
  if (!Number.isSafeInteger(N) || N < 2 || (N & (N - 1)) !== 0) throw new Error(`users.${user}: scrypt N must be a power of 2 above 1`)
  if (!Number.isSafeInteger(r) || !Number.isSafeInteger(p)) throw new Error(`users.${user}: scrypt r and p must be positive integers`)
  if (128 * N * r > SCRYPT_MAX_MEMORY) throw new Error(`users.${user}: scrypt N·r needs more than 1 GiB per verification`)
  if (!BASE64.test(parts[4]) || !BASE64.test(parts[5])) throw new Error(`users.${user}: scrypt salt and hash must be base64`)
  const salt = Buffer.from(parts[4], 'base64')
  const expected = Buffer.from(parts[5], 'base64')
  if (expected.length < 16) throw new Error(`users.${user}: the scrypt hash is shorter than 16 bytes`)
  // Node refuses a derivation needing more than maxmem (32 MiB by default); this one's own need, with room.
  const maxmem = 128 * r * (N + p + 2) + 1024 * 1024
  return async (password) => timingSafeEqual(await scryptAsync(password, salt, expected.length, { N, r, p, maxmem }), expected)
}

/** `Basic <base64(user:password)>` decoded as UTF-8 (RFC 7617 §2.1), or undefined. */
export function parseBasic (value: string | string[] | undefined): { user: string, password: string } | undefined {
  const raw = Array.isArray(value) ? value[0] : value
  const m = raw === undefined ? null : /^Basic[ \t]+(\S+)[ \t]*$/i.exec(raw)
  if (m === null || !BASE64.test(m[1])) return undefined
  const text = Buffer.from(m[1], 'base64').toString('utf8')
  const colon = text.indexOf(':')
  if (colon <= 0) return undefined
  return { user: text.slice(0, colon), password: text.slice(colon + 1) }
}

export default definePipe<BasicAuthProperties>({
  name: 'basic-auth',
  phase: 'inbound',
  schema: {
    type: 'object',
    description: 'HTTP Basic authentication (RFC 7617). Refusals are 401 Unauthorized with ' +
      'WWW-Authenticate: Basic realm="<realm>". The user name goes into ctx.state "basic.user".',
    properties: {
      users: {
        type: 'object',
        minProperties: 1,
        propertyNames: { pattern: '^[^:]+$' },
        additionalProperties: { type: 'string', pattern: '^(\\$2[aby]\\$|scrypt\\$)' },
        description: `user name → password hash: ${HASH_FORMATS}. Never a plain password.`,
      },
      realm: { type: 'string', pattern: QUOTABLE, default: 'sluice', description: 'realm of the WWW-Authenticate challenge' },
      hide_credentials: { type: 'boolean', default: false, description: 'remove the Authorization header before the request goes upstream' },
    },
    required: ['users'],
    additionalProperties: false,
  },
  create (props) {
    const users = new Map<string, Verify>()
    for (const [name, hash] of Object.entries(props.users)) users.set(name, buildVerifier(name, hash))
    if (users.size === 0) throw new Error('users: name at least one user')
    // An unknown name is checked against a real user's hash (and refused
    // whatever the outcome), so it costs what a known name costs.
    const decoy = users.values().next().value as Verify
    const challenge = { 'WWW-Authenticate': `Basic realm="${props.realm}", charset="UTF-8"` }

    return async (ctx: PipeContext) => {
      const credentials = parseBasic(ctx.request.headers.authorization)
      if (props.hide_credentials) delete ctx.request.headers.authorization
      if (credentials === undefined) ctx.fail(401, 'Unauthorized', 'user and password are required', challenge)
      const verify = users.get(credentials.user)
      let ok: boolean
      try {
        ok = await (verify ?? decoy)(credentials.password)
      } catch (err) {
        ctx.log.error({ err: (err as Error).message, user: credentials.user }, 'password verification failed')
        ok = false
      }
      if (verify === undefined || !ok) ctx.fail(401, 'Unauthorized', 'the user or password is not valid', challenge)
      ctx.state.set('basic.user', credentials.user)
    }
  },
})
