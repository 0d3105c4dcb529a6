/**
 * The auth pipes (pipes.md "Built-in pipes": jwt, api-key, basic-auth) through
 * a running gateway and a real upstream: the exact status, error_code and
 * WWW-Authenticate a refused client gets, that a refused request never
 * reaches the upstream, and what the upstream receives when one passes.
 */
import crypto, { generateKeyPairSync, type KeyObject } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import bcrypt from 'bcryptjs'
import jwt from 'jsonwebtoken'
import request from 'supertest'
import { ConfigError, loadConfigText } from '../src/config'
import { createGateway } from '../src/gateway'
import { createPipeCatalog } from '../src/pipes/catalog'
import apiKeyPipe, { matchesAnyKey } from '../src/pipes/builtin/api-key'
import basicAuthPipe from '../src/pipes/builtin/basic-auth'
import jwtPipe from '../src/pipes/builtin/jwt'
import type { PipeContext, PipeCreateContext, PipeDefinition } from '../src/pipes/types'
import { startGateway, type RunningGateway } from './support/gateway'
import { startUpstream, type Upstream } from './support/upstream'

const SECRET = 'a-test-secret-of-at-least-32-bytes!!'
const ISSUER = 'https://issuer.test'

/** One route /api/<rest> → upstream /<rest>, guarded by one inbound pipe. */
function config (upstreamUrl: string, pipe: string, properties: object): string {
  return `version: 1
services:
  api:
    instances: [{ url: ${upstreamUrl} }]
routes:
  - name: guarded
    service_name: api
    methods: [GET]
    path: "/api/<path:rest>"
    upstream_path: "/<rest>"
    pipelines:
      inbound:
        - name: ${pipe}
          properties: ${JSON.stringify(properties)}
`
}

function lineOf (text: string, needle: string): number {
  return text.split('\n').findIndex(l => l.includes(needle)) + 1
}

/** Loads and compiles like `sluice check`/`start`; returns the ConfigError's message. */
function configError (yaml: string, env: Record<string, string> = {}): string {
  try {
    const loaded = loadConfigText(yaml, 'routes.yaml', { env, pipes: (pipesDir) => createPipeCatalog({ pipesDir }) })
    void createGateway({ config: loaded }).close()
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return (err as Error).message
  }
  throw new Error('the config was accepted')
}

const b64url = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url')
const now = (): number => Math.floor(Date.now() / 1000)

function hsToken (claims: object, options: jwt.SignOptions = {}, secret = SECRET): string {
  return jwt.sign({ sub: 'alice', iss: ISSUER, aud: 'api', exp: now() + 60, ...claims }, secret, { algorithm: 'HS256', ...options })
}

/** A fake request context for the few checks that look inside a pipe (ctx.state). */
function fakeContext (headers: http.IncomingHttpHeaders): PipeContext & { state: Map<string, unknown> } {
  const noop = (): void => {}
  return {
    request: { headers, query: new URLSearchParams() },
    state: new Map<string, unknown>(),
    log: { info: noop, warn: noop, error: noop, debug: noop },
    fail (status: number, code: string, message?: string) { throw Object.assign(new Error(message), { status, code }) },
  } as unknown as PipeContext & { state: Map<string, unknown> }
}

function createHandler<P> (def: PipeDefinition<P>, properties: P): (ctx: PipeContext) => Promise<void> {
  const noop = (): void => {}
  const made = def.create(properties, { log: { info: noop, warn: noop, error: noop, debug: noop } } as unknown as PipeCreateContext)
  return async (ctx) => { await (made as (c: PipeContext) => void | Promise<void>)(ctx) }
}

describe('jwt with an HMAC secret', () => {
  let upstream: Upstream
  let gw: RunningGateway
  beforeAll(async () => {
    upstream = await startUpstream()
    gw = await startGateway(config(upstream.url, 'jwt', {
      secret: SECRET,
      algorithms: ['HS256'],
      issuer: ISSUER,
      audience: ['api', 'admin-api'],
      forward_claims: { 'X-User-Id': 'sub', 'X-Tenant': 'tenant' },
    }))
  })
  afterAll(async () => { await gw.close(); await upstream.close() })
  beforeEach(() => { upstream.received.length = 0 })

  async function refused (token: string | undefined, description: string): Promise<void> {
    const req = request(gw.url).get('/api/items')
    const res = await (token === undefined ? req : req.set('authorization', `Bearer ${token}`))
    expect(res.status).toBe(401)
    expect(res.body.error_code).toBe('Unauthorized')
    expect(res.body.error_message).toBe(description)
    expect(res.headers['www-authenticate']).toBe(`Bearer realm="sluice", error="invalid_token", error_description="${description}"`)
    expect(upstream.received).toHaveLength(0)
  }

  test('a valid HS256 token passes; the upstream gets the verified claims as headers', async () => {
    const token = hsToken({ tenant: 'acme' })
    const res = await request(gw.url).get('/api/items').set('authorization', `Bearer ${token}`)
    expect(res.status).toBe(200)
    expect(upstream.received).toHaveLength(1)
    expect(upstream.received[0].url).toBe('/items')
    expect(upstream.received[0].headers['x-user-id']).toBe('alice')
    expect(upstream.received[0].headers['x-tenant']).toBe('acme')
  })

  test('the scheme is case-insensitive and a second audience is accepted', async () => {
    const res = await request(gw.url).get('/api/items').set('authorization', `bearer ${hsToken({ aud: 'admin-api' })}`)
    expect(res.status).toBe(200)
  })

  // Attack: a client sets X-User-Id itself to act as someone else; the
  // header must only ever carry what a verified token says.
  test('client-sent values of forwarded headers are replaced or removed', async () => {
    const res = await request(gw.url).get('/api/items')
      .set('authorization', `Bearer ${hsToken({ sub: 'alice' })}`)
      .set('x-user-id', 'admin')
      .set('x-tenant', 'someone-else')
    expect(res.status).toBe(200)
    expect(upstream.received[0].headers['x-user-id']).toBe('alice')
    // The token has no tenant claim: the spoofed header is gone, not kept.
    expect(upstream.received[0].headers['x-tenant']).toBeUndefined()
  })

  test('no token: 401 with a challenge without error (RFC 6750 §3.1)', async () => {
    const res = await request(gw.url).get('/api/items')
    expect(res.status).toBe(401)
    expect(res.body.error_code).toBe('Unauthorized')
    expect(res.headers['www-authenticate']).toBe('Bearer realm="sluice"')
    expect(upstream.received).toHaveLength(0)
  })

  test('another scheme (Basic) counts as no bearer token', async () => {
    const res = await request(gw.url).get('/api/items').set('authorization', 'Basic YWxpY2U6cHc=')
    expect(res.status).toBe(401)
    expect(res.headers['www-authenticate']).toBe('Bearer realm="sluice"')
    expect(upstream.received).toHaveLength(0)
  })

  test('an expired token is refused', async () => {
    await refused(hsToken({ exp: now() - 5 }), 'the token has expired')
  })

  test('a token that is not valid yet (nbf) is refused', async () => {
    await refused(hsToken({ nbf: now() + 60 }), 'the token is not valid yet')
  })

  test('a wrong issuer is refused', async () => {
    await refused(hsToken({ iss: 'https://evil.test' }), 'the token issuer is not accepted')
  })

  test('a wrong audience is refused', async () => {
    await refused(hsToken({ aud: 'billing' }), 'the token audience is not accepted')
  })

  test('a token signed with another key is refused', async () => {
    await refused(hsToken({}, {}, 'another-secret-that-is-32-bytes-long!!'), 'the token signature is invalid')
  })

  // Attack: `alg: none` tokens carry no signature; a verifier that trusts the
  // header's alg would accept anything (CVE-2015-9235 class).
  test('an unsigned alg:none token is refused', async () => {
    const token = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub: 'admin', iss: ISSUER, aud: 'api', exp: now() + 60 })}.`
    await refused(token, 'the token algorithm is not accepted')
  })

  test('a token without exp is refused (require_exp defaults to true)', async () => {
    const token = jwt.sign({ sub: 'alice', iss: ISSUER, aud: 'api' }, SECRET, { algorithm: 'HS256' })
    await refused(token, 'the token has no exp')
  })

  test('a malformed token is refused', async () => {
    await refused('not-a-jwt', 'the token is malformed')
  })

  test('an HS384 token is refused when only HS256 is configured', async () => {
    await refused(hsToken({}, { algorithm: 'HS384' }, SECRET + SECRET), 'the token algorithm is not accepted')
  })
})

describe('jwt clock tolerance and require_exp: false', () => {
  let upstream: Upstream
  let gw: RunningGateway
  beforeAll(async () => {
    upstream = await startUpstream()
    gw = await startGateway(config(upstream.url, 'jwt', {
      secret: SECRET, algorithms: ['HS256'], clock_tolerance_s: 30, require_exp: false,
    }))
  })
  afterAll(async () => { await gw.close(); await upstream.close() })
  beforeEach(() => { upstream.received.length = 0 })

  test('a token expired 5 s ago passes within a 30 s tolerance', async () => {
    const res = await request(gw.url).get('/api/x').set('authorization', `Bearer ${hsToken({ exp: now() - 5 })}`)
    expect(res.status).toBe(200)
    expect(upstream.received).toHaveLength(1)
  })

  test('a token expired beyond the tolerance is refused', async () => {
    const res = await request(gw.url).get('/api/x').set('authorization', `Bearer ${hsToken({ exp: now() - 120 })}`)
    expect(res.status).toBe(401)
    expect(upstream.received).toHaveLength(0)
  })

  test('a token without exp passes when require_exp is false', async () => {
    const token = jwt.sign({ sub: 'alice' }, SECRET, { algorithm: 'HS256' })
    const res = await request(gw.url).get('/api/x').set('authorization', `Bearer ${token}`)
    expect(res.status).toBe(200)
  })
})

describe('jwt with an RSA public key', () => {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const publicPem = publicKey.export({ type: 'spki', format: 'pem' }).toString()
  let upstream: Upstream
  let gw: RunningGateway
  beforeAll(async () => {
    upstream = await startUpstream()
    gw = await startGateway(config(upstream.url, 'jwt', { public_key: publicPem, algorithms: ['RS256'] }))
  })
  afterAll(async () => { await gw.close(); await upstream.close() })
  beforeEach(() => { upstream.received.length = 0 })

  test('a valid RS256 token passes', async () => {
    const token = jwt.sign({ sub: 'alice' }, privateKey, { algorithm: 'RS256', expiresIn: 60 })
    const res = await request(gw.url).get('/api/x').set('authorization', `Bearer ${token}`)
    expect(res.status).toBe(200)
    expect(upstream.received).toHaveLength(1)
  })

  // Attack (key confusion, CVE-2016-10555 class): the public key is public,
  // so a verifier that lets the token pick HS256 would check an HMAC made
  // with the public key as secret, and anyone could mint tokens.
  test('an HS256 token whose HMAC secret is the RSA public key is refused', async () => {
    const signingInput = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ sub: 'admin', exp: now() + 60 })}`
    const mac = crypto.createHmac('sha256', publicPem).update(signingInput).digest('base64url')
    const res = await request(gw.url).get('/api/x').set('authorization', `Bearer ${signingInput}.${mac}`)
    expect(res.status).toBe(401)
    expect(res.body.error_code).toBe('Unauthorized')
    expect(res.headers['www-authenticate']).toBe('Bearer realm="sluice", error="invalid_token", error_description="the token algorithm is not accepted"')
    expect(upstream.received).toHaveLength(0)
  })

  test('a token signed with another RSA key is refused', async () => {
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
    const res = await request(gw.url).get('/api/x').set('authorization', `Bearer ${jwt.sign({ sub: 'a' }, other, { algorithm: 'RS256', expiresIn: 60 })}`)
    expect(res.status).toBe(401)
    expect(res.body.error_message).toBe('the token signature is invalid')
    expect(upstream.received).toHaveLength(0)
  })
})

describe('jwt with an EC public key', () => {
  test('a valid ES256 token passes and an RS256 one is refused', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
    const upstream = await startUpstream()
    const gw = await startGateway(config(upstream.url, 'jwt', {
      public_key: ec.publicKey.export({ type: 'spki', format: 'pem' }).toString(), algorithms: ['ES256'],
    }))
    try {
      const good = await request(gw.url).get('/api/x').set('authorization', `Bearer ${jwt.sign({ sub: 'a' }, ec.privateKey, { algorithm: 'ES256', expiresIn: 60 })}`)
      expect(good.status).toBe(200)
      const bad = await request(gw.url).get('/api/x').set('authorization', `Bearer ${jwt.sign({ sub: 'a' }, rsa.privateKey, { algorithm: 'RS256', expiresIn: 60 })}`)
      expect(bad.status).toBe(401)
      expect(upstream.received).toHaveLength(1)
    } finally { await gw.close(); await upstream.close() }
  })
})

test('jwt puts the verified claims in ctx.state under jwt.claims', async () => {
  const handler = createHandler(jwtPipe, {
    secret: SECRET, algorithms: ['HS256'], clock_tolerance_s: 0, require_exp: true, header: 'Authorization', realm: 'sluice',
    jwks_cache_max_age_s: 600, jwks_requests_per_minute: 10, jwks_timeout_ms: 5000,
  })
  const ctx = fakeContext({ authorization: `Bearer ${hsToken({ roles: ['reader'] })}` })
  await handler(ctx)
  expect(ctx.state.get('jwt.claims')).toMatchObject({ sub: 'alice', iss: ISSUER, roles: ['reader'] })
})

/** A JWKS endpoint on port 0 serving whatever keys the test sets, counting its hits. */
async function startJwks (): Promise<{ url: string, keys: object[], hits: () => number, close (): Promise<void> }> {
  let hits = 0
  const state = { keys: [] as object[] }
  const server = http.createServer((_req, res) => {
    hits++
    const body = JSON.stringify({ keys: state.keys })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    get keys () { return state.keys },
    set keys (k: object[]) { state.keys = k },
    hits: () => hits,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }),
  }
}

function rsaKey (kid: string): { jwk: object, privateKey: KeyObject } {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  return { jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' }, privateKey }
}

describe('jwt with a JWKS endpoint', () => {
  const k1 = rsaKey('k1')
  const k2 = rsaKey('k2')
  const sign = (key: KeyObject, kid: string): string => jwt.sign({ sub: 'alice' }, key, { algorithm: 'RS256', keyid: kid, expiresIn: 60 })

  test('keys are cached by kid; a new kid after rotation is accepted after one refetch', async () => {
    const jwks = await startJwks()
    jwks.keys = [k1.jwk]
    const upstream = await startUpstream()
    const gw = await startGateway(config(upstream.url, 'jwt', { jwks_uri: jwks.url, algorithms: ['RS256'] }))
    try {
      for (let i = 0; i < 3; i++) {
        const res = await request(gw.url).get('/api/x').set('authorization', `Bearer ${sign(k1.privateKey, 'k1')}`)
        expect(res.status).toBe(200)
      }
      expect(jwks.hits()).toBe(1)
      jwks.keys = [k2.jwk] // the issuer rotated to k2
      const rotated = await request(gw.url).get('/api/x').set('authorization', `Bearer ${sign(k2.privateKey, 'k2')}`)
      expect(rotated.status).toBe(200)
      expect(jwks.hits()).toBe(2)
      expect(upstream.received).toHaveLength(4)
    } finally { await gw.close(); await upstream.close(); await jwks.close() }
  })

  // Attack: tokens with ever-new kids would make the gateway hammer the
  // issuer's JWKS endpoint; misses beyond the limit are refused unfetched.
  test('refetches for unknown kids are rate limited', async () => {
    const jwks = await startJwks()
    jwks.keys = [k1.jwk]
    const upstream = await startUpstream()
    const gw = await startGateway(config(upstream.url, 'jwt', { jwks_uri: jwks.url, algorithms: ['RS256'], jwks_requests_per_minute: 2 }))
    try {
      expect((await request(gw.url).get('/api/x').set('authorization', `Bearer ${sign(k1.privateKey, 'k1')}`)).status).toBe(200)
      for (const kid of ['x1', 'x2', 'x3', 'x4']) {
        const res = await request(gw.url).get('/api/x').set('authorization', `Bearer ${sign(k2.privateKey, kid)}`)
        expect(res.status).toBe(401)
        expect(res.headers['www-authenticate']).toBe('Bearer realm="sluice", error="invalid_token", error_description="the token is signed with an unknown key"')
      }
      expect(jwks.hits()).toBe(2) // k1, then x1; x2..x4 were over the limit
      // A cached key still works while the limit holds.
      expect((await request(gw.url).get('/api/x').set('authorization', `Bearer ${sign(k1.privateKey, 'k1')}`)).status).toBe(200)
      expect(jwks.hits()).toBe(2)
      expect(upstream.received).toHaveLength(2)
    } finally { await gw.close(); await upstream.close(); await jwks.close() }
  })

  test('a token with a known kid but another key\'s signature is refused', async () => {
    const jwks = await startJwks()
    jwks.keys = [k1.jwk]
    const upstream = await startUpstream()
    const gw = await startGateway(config(upstream.url, 'jwt', { jwks_uri: jwks.url, algorithms: ['RS256'] }))
    try {
      const res = await request(gw.url).get('/api/x').set('authorization', `Bearer ${sign(k2.privateKey, 'k1')}`)
      expect(res.status).toBe(401)
      expect(res.body.error_message).toBe('the token signature is invalid')
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close(); await upstream.close(); await jwks.close() }
  })

  test('an unreachable JWKS endpoint refuses (fails closed) with 401', async () => {
    const jwks = await startJwks()
    const url = jwks.url
    await jwks.close()
    const upstream = await startUpstream()
    const gw = await startGateway(config(upstream.url, 'jwt', { jwks_uri: url, algorithms: ['RS256'] }))
    try {
      const res = await request(gw.url).get('/api/x').set('authorization', `Bearer ${sign(k1.privateKey, 'k1')}`)
      expect(res.status).toBe(401)
      expect(res.body.error_message).toBe('the token signing key could not be retrieved')
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close(); await upstream.close() }
  })
})

describe('jwt config errors name the pipe\'s line', () => {
  const yaml = (properties: object): string => config('http://127.0.0.1:9', 'jwt', properties)

  test('mixing HS and RS algorithms', () => {
    const text = yaml({ secret: SECRET, algorithms: ['HS256', 'RS256'] })
    const message = configError(text)
    expect(message).toContain(`routes.yaml:${lineOf(text, '- name: jwt')}:`)
    expect(message).toMatch(/mixes HMAC \(HS256\) with asymmetric algorithms \(RS256\)/)
  })

  test('an unknown property, with did-you-mean', () => {
    const text = yaml({ secret: SECRET, algorithms: ['HS256'], isuer: ISSUER })
    const message = configError(text)
    expect(message).toContain(`routes.yaml:${lineOf(text, 'properties:')}:`)
    expect(message).toContain('unknown property "isuer" (did you mean "issuer"?)')
  })

  test('no key source', () => {
    const text = yaml({ algorithms: ['RS256'] })
    const message = configError(text)
    expect(message).toContain(`routes.yaml:${lineOf(text, '- name: jwt')}:`)
    expect(message).toContain('set one key source')
  })

  test('two key sources', () => {
    expect(configError(yaml({ secret: SECRET, jwks_uri: 'https://id.test/jwks', algorithms: ['HS256'] }))).toContain('set only one key source, not secret and jwks_uri')
  })

  test('an HS algorithm with a public key', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    expect(configError(yaml({ public_key: publicKey.export({ type: 'spki', format: 'pem' }).toString(), algorithms: ['HS256'] })))
      .toContain('algorithms HS256 need secret, not public_key')
  })

  test('a key that cannot serve the algorithm', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    expect(configError(yaml({ public_key: publicKey.export({ type: 'spki', format: 'pem' }).toString(), algorithms: ['RS256'] })))
      .toContain('public_key is an EC key and cannot verify RS256')
  })

  test('an HMAC secret shorter than the hash (RFC 7518 §3.2)', () => {
    expect(configError(yaml({ secret: 'short', algorithms: ['HS256'] }))).toContain('secret is 5 bytes; HS256 need at least 32')
  })

  test('algorithm none and an empty list are schema errors', () => {
    expect(configError(yaml({ secret: SECRET, algorithms: ['none'] }))).toMatch(/algorithms/)
    expect(configError(yaml({ secret: SECRET, algorithms: [] }))).toMatch(/algorithms/)
  })
})

describe('api-key in the Authorization header', () => {
  let upstream: Upstream
  let gw: RunningGateway
  beforeAll(async () => {
    upstream = await startUpstream()
    gw = await startGateway(config(upstream.url, 'api-key', { keys: ['key-one', 'key-two'] }))
  })
  afterAll(async () => { await gw.close(); await upstream.close() })
  beforeEach(() => { upstream.received.length = 0 })

  test('the "token" scheme (Jupyter Enterprise Gateway) passes', async () => {
    const res = await request(gw.url).get('/api/kernels').set('authorization', 'token key-one')
    expect(res.status).toBe(200)
    expect(upstream.received[0].headers.authorization).toBe('token key-one') // hide_credentials defaults to false
  })

  test('the "Bearer" scheme passes, with any configured key', async () => {
    const res = await request(gw.url).get('/api/kernels').set('authorization', 'Bearer key-two')
    expect(res.status).toBe(200)
    expect(upstream.received).toHaveLength(1)
  })

  test('a wrong key with the token scheme: 401 with a Token challenge', async () => {
    const res = await request(gw.url).get('/api/kernels').set('authorization', 'token key-on')
    expect(res.status).toBe(401)
    expect(res.body.error_code).toBe('Unauthorized')
    expect(res.headers['www-authenticate']).toBe('Token realm="sluice"')
    expect(upstream.received).toHaveLength(0)
  })

  test('a wrong key with the Bearer scheme: 401 with invalid_token', async () => {
    const res = await request(gw.url).get('/api/kernels').set('authorization', 'Bearer key-one-and-more')
    expect(res.status).toBe(401)
    expect(res.headers['www-authenticate']).toBe('Bearer realm="sluice", error="invalid_token"')
    expect(upstream.received).toHaveLength(0)
  })

  test('no key: 401 with a bare challenge', async () => {
    const res = await request(gw.url).get('/api/kernels')
    expect(res.status).toBe(401)
    expect(res.body.error_code).toBe('Unauthorized')
    expect(res.headers['www-authenticate']).toBe('Bearer realm="sluice"')
    expect(upstream.received).toHaveLength(0)
  })
})

describe('api-key from a query parameter, keys from the environment', () => {
  let upstream: Upstream
  let gw: RunningGateway
  beforeAll(async () => {
    process.env.SLUICE_TEST_API_KEYS = ' alpha , beta,'
    upstream = await startUpstream()
    gw = await startGateway(config(upstream.url, 'api-key', { keys_env: 'SLUICE_TEST_API_KEYS', query_param: 'api_key' }))
  })
  afterAll(async () => { delete process.env.SLUICE_TEST_API_KEYS; await gw.close(); await upstream.close() })
  beforeEach(() => { upstream.received.length = 0 })

  test('a key from keys_env passes and the parameter is removed from the upstream query', async () => {
    const res = await request(gw.url).get('/api/items?page=2&api_key=beta&sort=name')
    expect(res.status).toBe(200)
    expect(upstream.received[0].url).toBe('/items?page=2&sort=name')
  })

  test('a wrong key is refused and never reaches the upstream', async () => {
    const res = await request(gw.url).get('/api/items?api_key=gamma')
    expect(res.status).toBe(401)
    expect(res.body.error_code).toBe('Unauthorized')
    expect(res.headers['www-authenticate']).toBe('Bearer realm="sluice", error="invalid_token"')
    expect(upstream.received).toHaveLength(0)
  })

  test('a key in the header does not count when query_param is set', async () => {
    const res = await request(gw.url).get('/api/items').set('authorization', 'token alpha')
    expect(res.status).toBe(401)
    expect(upstream.received).toHaveLength(0)
  })
})

test('api-key in a custom header with hide_credentials: the upstream never sees the key', async () => {
  const upstream = await startUpstream()
  const gw = await startGateway(config(upstream.url, 'api-key', { keys: ['k-123'], header: 'X-Api-Key', hide_credentials: true }))
  try {
    const res = await request(gw.url).get('/api/x').set('x-api-key', 'k-123')
    expect(res.status).toBe(200)
    expect(upstream.received[0].headers['x-api-key']).toBeUndefined()
    expect((await request(gw.url).get('/api/x').set('x-api-key', 'k-12')).status).toBe(401)
    expect(upstream.received).toHaveLength(1)
  } finally { await gw.close(); await upstream.close() }
})

test('api-key with keys_env naming an unset variable is a config error at the pipe', () => {
  delete process.env.SLUICE_TEST_UNSET_KEYS
  const text = config('http://127.0.0.1:9', 'api-key', { keys_env: 'SLUICE_TEST_UNSET_KEYS' })
  const message = configError(text)
  expect(message).toContain(`routes.yaml:${lineOf(text, '- name: api-key')}:`)
  expect(message).toContain('the environment variable SLUICE_TEST_UNSET_KEYS is not set')
})

// Attack: a comparison that stops at the first differing byte lets a client
// find a key byte by byte from response times.
test('api-key comparison looks at every key, through fixed-length digests', () => {
  const digests = ['first', 'second', 'third'].map(k => crypto.createHash('sha256').update(k).digest())
  expect(matchesAnyKey('first', digests)).toBe(true)
  expect(matchesAnyKey('third', digests)).toBe(true)
  expect(matchesAnyKey('firs', digests)).toBe(false)
  expect(matchesAnyKey('first\0', digests)).toBe(false)
  expect(matchesAnyKey('', digests)).toBe(false)
  const spy = jest.spyOn(crypto, 'timingSafeEqual')
  try {
    matchesAnyKey('first', digests) // matches the first key, still compares all three
    expect(spy).toHaveBeenCalledTimes(3)
    for (const [a, b] of spy.mock.calls) expect([(a as Buffer).length, (b as Buffer).length]).toEqual([32, 32])
  } finally { spy.mockRestore() }
})

function scryptHash (password: string, N = 1024, r = 8, p = 1): string {
  const salt = crypto.randomBytes(16)
  const hash = crypto.scryptSync(password, salt, 32, { N, r, p })
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${hash.toString('base64')}`
}

const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

describe('basic-auth', () => {
  let upstream: Upstream
  let gw: RunningGateway
  beforeAll(async () => {
    upstream = await startUpstream()
    gw = await startGateway(config(upstream.url, 'basic-auth', {
      realm: 'staff area',
      users: { alice: bcrypt.hashSync('alice-pw', 4), bob: scryptHash('bob: pw é') },
    }))
  })
  afterAll(async () => { await gw.close(); await upstream.close() })
  beforeEach(() => { upstream.received.length = 0 })

  async function refused (authorization: string | undefined): Promise<void> {
    const req = request(gw.url).get('/api/x')
    const res = await (authorization === undefined ? req : req.set('authorization', authorization))
    expect(res.status).toBe(401)
    expect(res.body.error_code).toBe('Unauthorized')
    expect(res.headers['www-authenticate']).toBe('Basic realm="staff area", charset="UTF-8"')
    expect(upstream.received).toHaveLength(0)
  }

  test('a bcrypt user with the right password passes', async () => {
    const res = await request(gw.url).get('/api/x').set('authorization', basic('alice', 'alice-pw'))
    expect(res.status).toBe(200)
    expect(upstream.received).toHaveLength(1)
  })

  test('an scrypt user with the right password (colon, UTF-8) passes', async () => {
    const res = await request(gw.url).get('/api/x').set('authorization', basic('bob', 'bob: pw é'))
    expect(res.status).toBe(200)
  })

  test('a wrong password is refused', async () => {
    await refused(basic('alice', 'alice-pw!'))
    await refused(basic('bob', 'bob: pw e'))
  })

  test('an unknown user is refused, even with a configured password', async () => {
    await refused(basic('mallory', 'alice-pw'))
  })

  test('no credentials, another scheme or garbage: 401 with the realm', async () => {
    await refused(undefined)
    await refused('Bearer abc')
    await refused('Basic !!!')
    await refused(`Basic ${Buffer.from('no-colon').toString('base64')}`)
  })
})

test('basic-auth puts the user in ctx.state and can hide the credentials', async () => {
  const handler = createHandler(basicAuthPipe, { users: { carol: scryptHash('pw') }, realm: 'sluice', hide_credentials: true })
  const ctx = fakeContext({ authorization: basic('carol', 'pw') })
  await handler(ctx)
  expect(ctx.state.get('basic.user')).toBe('carol')
  expect(ctx.request.headers.authorization).toBeUndefined()
})

// Attack: if unknown names answered at once, response times would list
// which user names exist.
test('basic-auth verifies a hash for an unknown user too', async () => {
  const handler = createHandler(basicAuthPipe, { users: { carol: scryptHash('pw') }, realm: 'sluice', hide_credentials: false })
  const spy = jest.spyOn(crypto, 'scrypt')
  try {
    await expect(handler(fakeContext({ authorization: basic('nobody', 'pw') }))).rejects.toMatchObject({ status: 401, code: 'Unauthorized' })
    expect(spy).toHaveBeenCalledTimes(1)
  } finally { spy.mockRestore() }
})

test('basic-auth refuses a hash it cannot use, at the pipe\'s line', () => {
  const text = config('http://127.0.0.1:9', 'basic-auth', { users: { dave: 'scrypt$1000$8$1$c2FsdA==$aGFzaA==' } })
  const message = configError(text)
  expect(message).toContain(`routes.yaml:${lineOf(text, '- name: basic-auth')}:`)
  expect(message).toContain('users.dave: scrypt N must be a power of 2')
  expect(configError(config('http://127.0.0.1:9', 'basic-auth', { users: { dave: 'plain-password' } }))).toMatch(/users/)
})

test('the pipes are registered as built-ins', () => {
  const catalog = createPipeCatalog()
  for (const def of [jwtPipe, apiKeyPipe, basicAuthPipe]) expect(catalog.get(def.name)).toBe(def)
})
