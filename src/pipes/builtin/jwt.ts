/**
 * `jwt`: verifies a bearer token (RFC 7519) with jsonwebtoken against exactly
 * one key source — an HMAC `secret`, a PEM `public_key`, or a JWKS endpoint
 * whose keys jwks-rsa caches by `kid` and refetches at a limited rate — and
 * puts the verified claims in ctx.state ('jwt.claims'). Every refusal is a
 * 401 with the RFC 6750 §3 challenge. The token itself is never logged.
 */
import { createPublicKey, createSecretKey, type KeyObject } from 'node:crypto'
import jwt, { type Algorithm, type JwtPayload } from 'jsonwebtoken'
import jwksRsa from 'jwks-rsa'
import { definePipe, type PipeContext } from '../types'

export interface JwtProperties {
  secret?: string
  public_key?: string
  jwks_uri?: string
  jwks_cache_max_age_s: number
  jwks_requests_per_minute: number
  jwks_timeout_ms: number
  algorithms: Algorithm[]
  issuer?: string | string[]
  audience?: string | string[]
  clock_tolerance_s: number
  require_exp: boolean
  forward_claims?: Record<string, string>
  header: string
  realm: string
}

const HMAC = ['HS256', 'HS384', 'HS512'] as const
const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512'] as const

/** RFC 7518 §3.2: an HMAC key MUST be at least as long as the hash output. */
const HMAC_MIN_BYTES: Record<string, number> = { HS256: 32, HS384: 48, HS512: 64 }

/** The curve each ECDSA algorithm is defined on (RFC 7518 §3.4). */
const EC_CURVES: Record<string, string> = { ES256: 'prime256v1', ES384: 'secp384r1', ES512: 'secp521r1' }

/** A quoted-string without `"` or `\` (RFC 6750 §3 restricts error_description alike). */
const QUOTABLE = '^[\\x20\\x21\\x23-\\x5B\\x5D-\\x7E]*$'
/** An HTTP field name (RFC 9110 §5.1 token). */
const FIELD_NAME = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"

/** Headers a claim must not overwrite: they frame or route the upstream request. */
const RESERVED_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'upgrade', 'te', 'trailer', 'keep-alive'])

const ONE_OR_MORE_STRINGS = {
  anyOf: [
    { type: 'string', minLength: 1 },
    { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1 },
  ],
}

/** How a verification failure is told to the client (error_description) and the log. */
class Refusal {
  constructor (readonly description: string) {}
}

function isHmac (alg: string): boolean {
  return alg.startsWith('HS')
}

/** Key source and algorithm family checks the schema cannot word well: thrown as config errors. */
function checkKeySource (props: JwtProperties): void {
  const sources = (['secret', 'public_key', 'jwks_uri'] as const).filter(k => props[k] !== undefined)
  if (sources.length !== 1) {
    throw new Error(sources.length === 0
      ? 'set one key source: secret (HS*), public_key (PEM) or jwks_uri'
      : `set only one key source, not ${sources.join(' and ')}`)
  }
  const hmac = props.algorithms.filter(isHmac)
  // Accepting both families from one key is the RS/HS key-confusion hole:
  // a public key used as an HMAC secret lets anyone mint tokens.
  if (hmac.length > 0 && hmac.length < props.algorithms.length) {
    throw new Error(`algorithms mixes HMAC (${hmac.join(', ')}) with asymmetric algorithms (${props.algorithms.filter(a => !isHmac(a)).join(', ')}): use one family`)
  }
  if (hmac.length > 0 && props.secret === undefined) throw new Error(`algorithms ${hmac.join(', ')} need secret, not ${sources[0]}`)
  if (hmac.length === 0 && props.secret !== undefined) throw new Error(`secret is for HS256/HS384/HS512; algorithms ${props.algorithms.join(', ')} need public_key or jwks_uri`)
}

function hmacKey (secret: string, algorithms: readonly string[]): KeyObject {
  const bytes = Buffer.from(secret, 'utf8')
  const need = Math.max(...algorithms.map(a => HMAC_MIN_BYTES[a] ?? 0))
  if (bytes.length < need) throw new Error(`secret is ${bytes.length} bytes; ${algorithms.join(', ')} need at least ${need} (RFC 7518 §3.2)`)
  return createSecretKey(bytes)
}

/** Throws when the key cannot serve one of the algorithms (RSA key for ES256, wrong curve…). */
function checkKeyFits (key: KeyObject, algorithms: readonly string[], what: string): void {
  const type = key.asymmetricKeyType
  for (const alg of algorithms) {
    const family = alg.slice(0, 2)
    const fits = family === 'ES'
      ? type === 'ec' && key.asymmetricKeyDetails?.namedCurve === EC_CURVES[alg]
      : family === 'PS' ? type === 'rsa' || type === 'rsa-pss' : type === 'rsa'
    if (!fits) throw new Error(`${what} is a${type === 'ec' ? 'n EC' : ` ${String(type).toUpperCase()}`} key and cannot verify ${alg}`)
  }
}

function publicKey (pem: string, algorithms: readonly string[]): KeyObject {
  let key: KeyObject
  try {
    key = createPublicKey(pem)
  } catch {
    throw new Error('public_key is not a PEM public key or certificate')
  }
  checkKeyFits(key, algorithms, 'public_key')
  return key
}

/** The token from the configured header: `Bearer <token>`, or the raw value of a non-Authorization header. */
function readToken (value: string | string[] | undefined, authorization: boolean): string | undefined {
  const raw = Array.isArray(value) ? value[0] : value
  if (raw === undefined) return undefined
  const bearer = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(raw)
  if (bearer !== null) return bearer[1]
  if (authorization) return undefined // another scheme (Basic …) is no bearer token: RFC 6750 §3.1 no error
  const trimmed = raw.trim()
  return trimmed === '' ? undefined : trimmed
}

/**
 * A claim as a header value. Node refuses control and non-Latin-1 characters
 * in headers (a 500 mid-request), so values with anything but printable
 * ASCII are percent-encoded (encodeURIComponent); objects are sent as JSON.
 */
function headerValue (claim: unknown): string | undefined {
  if (claim === undefined || claim === null) return undefined
  const text = typeof claim === 'string' ? claim : JSON.stringify(claim)
  return /^[\x20-\x7E]*$/.test(text) ? text : encodeURIComponent(text)
}

function refusalFor (err: unknown): Refusal {
  if (err instanceof Refusal) return err
  if (err instanceof jwt.TokenExpiredError) return new Refusal('the token has expired')
  if (err instanceof jwt.NotBeforeError) return new Refusal('the token is not valid yet')
  if (err instanceof jwt.JsonWebTokenError) {
    const m = err.message
    if (m.startsWith('jwt audience invalid')) return new Refusal('the token audience is not accepted')
    if (m.startsWith('jwt issuer invalid')) return new Refusal('the token issuer is not accepted')
    if (m === 'invalid signature') return new Refusal('the token signature is invalid')
    if (m === 'invalid algorithm') return new Refusal('the token algorithm is not accepted')
  }
  return new Refusal('the token is malformed')
}

export default definePipe<JwtProperties>({
  name: 'jwt',
  phase: 'inbound',
  schema: {
    type: 'object',
    description: 'Verifies a bearer token (JWT) and puts its claims in ctx.state "jwt.claims". Exactly one key ' +
      'source: secret (HS256/384/512), public_key (RS/PS/ES) or jwks_uri (RS/PS/ES, keys cached by kid). ' +
      'Refusals are 401 Unauthorized with WWW-Authenticate: Bearer (RFC 6750 §3).',
    properties: {
      secret: { type: 'string', minLength: 1, description: 'HMAC secret for HS* algorithms; at least as many bytes as the hash (32 for HS256). Use ${ENV} for it.' },
      public_key: { type: 'string', minLength: 1, description: 'PEM public key (or certificate) for RS*, PS* or ES* algorithms' },
      jwks_uri: { type: 'string', format: 'uri', pattern: '^https?://', description: 'JWKS endpoint (https in production); keys are cached by kid, a token with an unknown kid triggers a rate-limited refetch' },
      jwks_cache_max_age_s: { type: 'integer', minimum: 1, default: 600, description: 'how long a key fetched from jwks_uri is trusted before it is fetched again' },
      jwks_requests_per_minute: { type: 'integer', minimum: 1, default: 10, description: 'at most this many JWKS fetches a minute (unknown kids cannot flood the issuer)' },
      jwks_timeout_ms: { type: 'integer', minimum: 1, default: 5000, description: 'time limit of one JWKS fetch' },
      algorithms: {
        type: 'array',
        minItems: 1,
        uniqueItems: true,
        items: { enum: [...HMAC, ...ASYMMETRIC] },
        description: 'accepted "alg" values; HS* and asymmetric algorithms are never mixed; "none" is never accepted',
      },
      issuer: { ...ONE_OR_MORE_STRINGS, description: 'accepted "iss" value(s)' },
      audience: { ...ONE_OR_MORE_STRINGS, description: 'accepted "aud" value(s): the token needs one of them' },
      clock_tolerance_s: { type: 'integer', minimum: 0, default: 0, description: 'seconds of clock skew allowed for exp and nbf' },
      require_exp: { type: 'boolean', default: true, description: 'refuse tokens without "exp"' },
      forward_claims: {
        type: 'object',
        propertyNames: { pattern: FIELD_NAME },
        additionalProperties: { type: 'string', minLength: 1 },
        description: 'request header → claim, e.g. {X-User-Id: sub}; a client-sent value of those headers is always ' +
          'removed; claims that are not strings go as JSON; values outside printable ASCII are percent-encoded',
      },
      header: { type: 'string', pattern: FIELD_NAME, default: 'Authorization', description: 'header carrying "Bearer <token>" (another header may also carry the bare token)' },
      realm: { type: 'string', pattern: QUOTABLE, default: 'sluice', description: 'realm of the WWW-Authenticate challenge' },
    },
    required: ['algorithms'],
    additionalProperties: false,
  },
  create (props, { log }) {
    checkKeySource(props)
    const algorithms = [...props.algorithms]
    let staticKey: KeyObject | undefined
    let jwks: jwksRsa.JwksClient | undefined
    if (props.secret !== undefined) staticKey = hmacKey(props.secret, algorithms)
    else if (props.public_key !== undefined) staticKey = publicKey(props.public_key, algorithms)
    else {
      const uri = props.jwks_uri as string
      if (uri.startsWith('http://')) log.warn({ jwks_uri: uri }, 'jwks_uri is plain http: keys can be replaced on the way')
      jwks = jwksRsa({
        jwksUri: uri,
        cache: true,
        cacheMaxEntries: 50,
        cacheMaxAge: props.jwks_cache_max_age_s * 1000,
        // Tokens with made-up kids miss the cache; this bounds how often they reach the issuer.
        rateLimit: true,
        jwksRequestsPerMinute: props.jwks_requests_per_minute,
        timeout: props.jwks_timeout_ms,
      })
    }
    /** Keys from the JWKS as KeyObjects, converted once per fetched key. */
    const converted = new WeakMap<object, KeyObject>()

    const options: jwt.VerifyOptions & { complete: false } = {
      algorithms,
      clockTolerance: props.clock_tolerance_s,
      complete: false,
      ...(props.issuer === undefined ? {} : { issuer: props.issuer as string | [string, ...string[]] }),
      ...(props.audience === undefined ? {} : { audience: props.audience as string | [string, ...string[]] }),
    }
    const headerName = props.header.toLowerCase()
    const authorization = headerName === 'authorization'
    const forward = Object.entries(props.forward_claims ?? {}).map(([h, claim]) => [h.toLowerCase(), claim] as const)
    for (const [h] of forward) {
      if (RESERVED_HEADERS.has(h)) throw new Error(`forward_claims: header "${h}" cannot be set from a claim`)
      if (h === headerName) throw new Error(`forward_claims: "${h}" is the header the token comes in`)
    }
    const realm = `realm="${props.realm}"`

    async function keyFor (alg: string, kid: unknown): Promise<KeyObject> {
      if (staticKey !== undefined) return staticKey
      if (kid !== undefined && typeof kid !== 'string') throw new Refusal('the token header has an invalid kid')
      let signing: jwksRsa.SigningKey
      try {
        signing = await (jwks as jwksRsa.JwksClient).getSigningKey(kid)
      } catch (err) {
        const name = (err as Error).name
        if (name === 'SigningKeyNotFoundError') throw new Refusal('the token is signed with an unknown key')
        if (name === 'JwksRateLimitError') {
          log.warn({ kid }, 'unknown kid and the JWKS refetch limit is reached: refused without fetching')
          throw new Refusal('the token is signed with an unknown key')
        }
        // Fail closed: without the key nothing can be verified.
        log.error({ err: (err as Error).message, kid }, 'JWKS could not be fetched')
        throw new Refusal('the token signing key could not be retrieved')
      }
      // A JWK that names its alg is bound to it (RFC 7517 §4.4).
      if (signing.alg !== undefined && signing.alg !== alg) throw new Refusal('the token algorithm does not match its key')
      let key = converted.get(signing)
      if (key === undefined) {
        key = createPublicKey(signing.getPublicKey())
        checkKeyFits(key, [alg], `JWKS key ${String(kid)}`)
        converted.set(signing, key)
      }
      return key
    }

    async function verify (token: string): Promise<JwtPayload> {
      const decoded = jwt.decode(token, { complete: true })
      if (decoded === null || typeof decoded.header !== 'object') throw new Refusal('the token is malformed')
      const { alg, kid } = decoded.header
      // `none` and the other family never get as far as a key (key confusion).
      if (!(algorithms as string[]).includes(alg)) throw new Refusal('the token algorithm is not accepted')
      let key: KeyObject
      try {
        key = await keyFor(alg, kid)
      } catch (err) {
        if (err instanceof Refusal) throw err
        throw new Refusal('the token is signed with an unusable key')
      }
      const payload = jwt.verify(token, key, options)
      if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) throw new Refusal('the token claims are not a JSON object')
      if (props.require_exp && typeof payload.exp !== 'number') throw new Refusal('the token has no exp')
      return payload
    }

    /**
     * Tokens whose signature and claims were verified, by their exact text:
     * a token is typically sent many times, and verifying it is most of this
     * pipe's cost. An entry never outlives the token's exp, nor VERIFIED_TTL_MS
     * (so a key rotated out of a JWKS stops working soon); nbf and exp are
     * checked against the clock again on every use.
     */
    const verified = new Map<string, { payload: JwtPayload, until: number }>()
    const toleranceMs = props.clock_tolerance_s * 1000

    function cached (token: string): JwtPayload | Refusal | undefined {
      const entry = verified.get(token)
      if (entry === undefined) return undefined
      const now = Date.now()
      if (now >= entry.until) { verified.delete(token); return undefined }
      const nbf = entry.payload.nbf
      if (typeof nbf === 'number' && nbf * 1000 > now + toleranceMs) return new Refusal('the token is not valid yet')
      return entry.payload
    }

    function remember (token: string, payload: JwtPayload): void {
      if (verified.size >= VERIFIED_MAX) verified.delete(verified.keys().next().value as string)
      const exp = typeof payload.exp === 'number' ? payload.exp * 1000 + toleranceMs : Infinity
      verified.set(token, { payload, until: Math.min(exp, Date.now() + VERIFIED_TTL_MS) })
    }

    function admit (ctx: PipeContext, outcome: JwtPayload | Refusal): void {
      const headers = ctx.request.headers
      if (outcome instanceof Refusal) {
        ctx.log.info({ reason: outcome.description }, 'jwt refused')
        ctx.fail(401, 'Unauthorized', outcome.description, {
          'WWW-Authenticate': `Bearer ${realm}, error="invalid_token", error_description="${outcome.description}"`,
        })
      }
      ctx.state.set('jwt.claims', outcome)
      for (const [h, claim] of forward) {
        const value = headerValue(outcome[claim])
        if (value !== undefined) headers[h] = value
      }
    }

    return (ctx: PipeContext) => {
      const headers = ctx.request.headers
      // Removed before anything else so a client can never set them itself.
      for (const [h] of forward) if (headers[h] !== undefined) delete headers[h]
      const token = readToken(headers[headerName], authorization)
      if (token === undefined) {
        ctx.fail(401, 'Unauthorized', 'a bearer token is required', { 'WWW-Authenticate': `Bearer ${realm}` })
      }
      const hit = cached(token)
      if (hit !== undefined) { admit(ctx, hit); return }
      return verify(token).then((payload) => {
        remember(token, payload)
        return payload
      }, refusalFor).then((outcome: JwtPayload | Refusal) => admit(ctx, outcome))
    }
  },
})

/** Verified tokens kept at most this long (and never past their exp). */
const VERIFIED_TTL_MS = 60_000
/** Verified tokens kept at most (oldest dropped first). */
const VERIFIED_MAX = 10_000
