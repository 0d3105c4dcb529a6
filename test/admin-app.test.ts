/** The admin app's own contract (operations.md "Admin listener"), against an in-memory AdminTarget. */
import request from 'supertest'
import { Writable } from 'node:stream'
import pino from 'pino'
import { createAdminApp, tokensEqual, type AdminAppOptions } from '../src/admin/app'
import type { AdminService, AdminTarget, ReloadResult } from '../src/admin/types'

const TOKEN = 'admin-secret-token'
const REGISTRY_TOKEN = 'registry-secret-token'

type FakeTarget = AdminTarget & { reloadResult: ReloadResult, isReady: boolean, state: AdminService[] }

function fakeTarget (overrides: Partial<AdminTarget> = {}): FakeTarget {
  const state: AdminService[] = [{
    name: 'users',
    balancer: 'round_robin',
    breaker: 'closed',
    instances: [{ id: 'u1', url: 'http://127.0.0.1:9001', weight: 1, labels: [], health: 'healthy', drained: false, inflight: 0, source: 'static' }],
  }]
  const fake: FakeTarget = {
    state,
    reloadResult: { ok: true, generation: 2 },
    isReady: true,
    routes: () => [{ name: 'users', methods: ['GET'], path: '/users/{id}', upstream_path: '/v1/users/{id}', service: 'users', pipes: { inbound: [], outbound: [] } }],
    services: () => fake.state,
    config: () => ({ version: 1, admin: { token: '[redacted]' } }),
    reload: async () => fake.reloadResult,
    setDrained: (service, instance, drained) => {
      const svc = fake.state.find(s => s.name === service)
      if (svc === undefined) return 'no-service'
      const inst = svc.instances.find(i => i.id === instance)
      if (inst === undefined) return 'no-instance'
      inst.drained = drained
      inst.health = drained ? 'drained' : 'healthy'
      return 'ok'
    },
    ready: () => fake.isReady,
    metrics: async () => ({ contentType: 'text/plain; version=0.0.4; charset=utf-8', body: '# HELP sluice_inflight_requests x\nsluice_inflight_requests 0\n' }),
    ...overrides,
  }
  return fake
}

function app (target: AdminTarget = fakeTarget(), extra: Partial<AdminAppOptions> = {}): ReturnType<typeof createAdminApp> {
  return createAdminApp({ target, token: TOKEN, registryToken: REGISTRY_TOKEN, ...extra })
}

const bearer = (t: string): [string, string] => ['authorization', `Bearer ${t}`]

function expectJsonError (res: request.Response, status: number, code: string): void {
  expect(res.status).toBe(status)
  expect(res.headers['content-type']).toMatch(/^application\/json/)
  expect(res.body.error_code).toBe(code)
  expect(typeof res.body.error_message).toBe('string')
}

describe('public endpoints', () => {
  test('GET /healthz answers 200 {"status":"ok"} without a token', async () => {
    const res = await request(app()).get('/healthz')
    expect(res.status).toBe(200)
    expect(res.headers['content-type']).toMatch(/^application\/json/)
    expect(res.body).toEqual({ status: 'ok' })
  })

  test('GET /readyz answers 200 while the target is ready', async () => {
    const res = await request(app()).get('/readyz')
    expect(res.status).toBe(200)
    expect(res.headers['content-type']).toMatch(/^application\/json/)
  })

  test('GET /readyz answers 503 JSON when the target is not ready', async () => {
    const target = fakeTarget()
    target.isReady = false
    const res = await request(app(target)).get('/readyz')
    expect(res.status).toBe(503)
    expect(res.headers['content-type']).toMatch(/^application\/json/)
    expect(res.body).toEqual({ status: 'not_ready' })
  })

  test('GET /metrics sends the exposition with its own content type', async () => {
    const res = await request(app()).get('/metrics')
    expect(res.status).toBe(200)
    expect(res.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8')
    expect(res.text).toContain('sluice_inflight_requests 0')
  })

  test('no x-powered-by header and no caching of admin answers', async () => {
    const res = await request(app()).get('/healthz')
    expect(res.headers['x-powered-by']).toBeUndefined()
    expect(res.headers['cache-control']).toBe('no-store')
  })
})

describe('admin endpoints', () => {
  test('GET /admin/routes returns the route table as a JSON array', async () => {
    const res = await request(app()).get('/admin/routes').set(...bearer(TOKEN))
    expect(res.status).toBe(200)
    expect(res.headers['content-type']).toMatch(/^application\/json/)
    expect(res.body).toEqual([expect.objectContaining({ name: 'users', service: 'users', path: '/users/{id}' })])
  })

  test('GET /admin/services returns the services', async () => {
    const res = await request(app()).get('/admin/services').set(...bearer(TOKEN))
    expect(res.status).toBe(200)
    expect(res.body[0]).toMatchObject({ name: 'users', instances: [{ id: 'u1', drained: false }] })
  })

  test('GET /admin/config returns the target\'s redacted config', async () => {
    const res = await request(app()).get('/admin/config').set(...bearer(TOKEN))
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ version: 1, admin: { token: '[redacted]' } })
  })

  test('POST /admin/reload answers 200 {generation} on success', async () => {
    const res = await request(app()).post('/admin/reload').set(...bearer(TOKEN))
    expect(res.status).toBe(200)
    expect(res.headers['content-type']).toMatch(/^application\/json/)
    expect(res.body).toEqual({ generation: 2 })
  })

  test('POST /admin/reload answers 422 {errors} when the new config is invalid', async () => {
    const target = fakeTarget()
    target.reloadResult = { ok: false, errors: ['routes.yaml:3:5 routes[0].service: unknown service "nope"'] }
    const res = await request(app(target)).post('/admin/reload').set(...bearer(TOKEN))
    expect(res.status).toBe(422)
    expect(res.headers['content-type']).toMatch(/^application\/json/)
    expect(res.body).toEqual({ errors: ['routes.yaml:3:5 routes[0].service: unknown service "nope"'] })
  })

  test('POST …/drain drains the instance and answers 200', async () => {
    const target = fakeTarget()
    const res = await request(app(target)).post('/admin/services/users/instances/u1/drain').set(...bearer(TOKEN))
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ service: 'users', instance: 'u1', drained: true })
    expect(target.state[0].instances[0].drained).toBe(true)
  })

  test('POST …/undrain puts the instance back and answers 200', async () => {
    const target = fakeTarget()
    target.state[0].instances[0].drained = true
    const res = await request(app(target)).post('/admin/services/users/instances/u1/undrain').set(...bearer(TOKEN))
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ service: 'users', instance: 'u1', drained: false })
    expect(target.state[0].instances[0].drained).toBe(false)
  })

  test('draining an unknown service answers 404 NotFound', async () => {
    const res = await request(app()).post('/admin/services/nope/instances/u1/drain').set(...bearer(TOKEN))
    expectJsonError(res, 404, 'NotFound')
    expect(res.body.error_message).toContain('nope')
  })

  test('undraining an unknown instance answers 404 NotFound', async () => {
    const res = await request(app()).post('/admin/services/users/instances/zz/undrain').set(...bearer(TOKEN))
    expectJsonError(res, 404, 'NotFound')
    expect(res.body.error_message).toContain('zz')
  })

  test('an unknown admin path answers 404 JSON', async () => {
    const res = await request(app()).get('/admin/nothing-here').set(...bearer(TOKEN))
    expectJsonError(res, 404, 'NotFound')
  })

  test('an unknown path outside /admin/ answers 404 JSON, not an HTML page', async () => {
    const res = await request(app()).get('/nowhere')
    expectJsonError(res, 404, 'NotFound')
  })

  test('a wrong method on a GET endpoint answers 405 with Allow', async () => {
    const res = await request(app()).delete('/admin/routes').set(...bearer(TOKEN))
    expectJsonError(res, 405, 'MethodNotAllowed')
    expect(res.headers.allow).toBe('GET, HEAD')
  })

  test('GET on a POST endpoint answers 405 with Allow: POST', async () => {
    const res = await request(app()).get('/admin/reload').set(...bearer(TOKEN))
    expectJsonError(res, 405, 'MethodNotAllowed')
    expect(res.headers.allow).toBe('POST')
  })

  test('a wrong method on a public endpoint answers 405 with Allow', async () => {
    const res = await request(app()).post('/healthz')
    expectJsonError(res, 405, 'MethodNotAllowed')
    expect(res.headers.allow).toBe('GET, HEAD')
  })

  test('a malformed percent-escape answers 400 JSON', async () => {
    const res = await request(app()).post('/admin/services/%E0%A4%A/instances/u1/drain').set(...bearer(TOKEN))
    expectJsonError(res, 400, 'BadRequest')
  })
})

describe('auth', () => {
  // An admin port reachable by anyone must not let them read config or drain instances.
  test('no Authorization header answers 401 with WWW-Authenticate', async () => {
    const res = await request(app()).get('/admin/routes')
    expectJsonError(res, 401, 'Unauthorized')
    expect(res.headers['www-authenticate']).toBe('Bearer realm="sluice-admin"')
  })

  test('a wrong token answers 401', async () => {
    const res = await request(app()).get('/admin/routes').set(...bearer('not-the-token'))
    expectJsonError(res, 401, 'Unauthorized')
    expect(res.headers['www-authenticate']).toBe('Bearer realm="sluice-admin"')
  })

  test('a token prefix answers 401', async () => {
    const res = await request(app()).get('/admin/routes').set(...bearer(TOKEN.slice(0, -1)))
    expectJsonError(res, 401, 'Unauthorized')
  })

  test('a non-Bearer scheme answers 401', async () => {
    const res = await request(app()).get('/admin/routes').set('authorization', `Basic ${TOKEN}`)
    expectJsonError(res, 401, 'Unauthorized')
  })

  test('the right token answers 200; the scheme is case-insensitive', async () => {
    const res = await request(app()).get('/admin/routes').set('authorization', `bearer ${TOKEN}`)
    expect(res.status).toBe(200)
  })

  test('an unknown admin path without a token answers 401, so paths cannot be probed', async () => {
    const res = await request(app()).get('/admin/secret-thing')
    expectJsonError(res, 401, 'Unauthorized')
  })

  test('POST endpoints need the token too', async () => {
    const target = fakeTarget()
    const res = await request(app(target)).post('/admin/services/users/instances/u1/drain')
    expectJsonError(res, 401, 'Unauthorized')
    expect(target.state[0].instances[0].drained).toBe(false)
  })

  test('/registry/ without a token answers 401', async () => {
    const res = await request(app()).get('/registry/v1/services')
    expectJsonError(res, 401, 'Unauthorized')
  })

  test('the registry token passes auth under /registry/ (the unknown path then answers 404)', async () => {
    const res = await request(app()).get('/registry/v1/services').set(...bearer(REGISTRY_TOKEN))
    expectJsonError(res, 404, 'NotFound')
  })

  test('the admin token passes auth under /registry/ too', async () => {
    const res = await request(app()).get('/registry/v1/services').set(...bearer(TOKEN))
    expectJsonError(res, 404, 'NotFound')
  })

  // A leaked registry token (held by every microservice) must not reach reload, config or drain.
  test('the registry token is refused under /admin/ with 403', async () => {
    const target = fakeTarget()
    const res = await request(app(target)).post('/admin/services/users/instances/u1/drain').set(...bearer(REGISTRY_TOKEN))
    expectJsonError(res, 403, 'Forbidden')
    expect(target.state[0].instances[0].drained).toBe(false)
  })

  test('public endpoints ignore a wrong token', async () => {
    const res = await request(app()).get('/healthz').set(...bearer('wrong'))
    expect(res.status).toBe(200)
  })

  test('with no token configured, admin endpoints are open', async () => {
    const res = await request(createAdminApp({ target: fakeTarget() })).get('/admin/routes')
    expect(res.status).toBe(200)
  })

  test('a registry handler passed in is mounted behind the auth check', async () => {
    const registry: AdminAppOptions['registry'] = (req, res) => { res.json({ path: req.path }) }
    const a = app(fakeTarget(), { registry })
    expect((await request(a).get('/registry/v1/services')).status).toBe(401)
    const res = await request(a).get('/registry/v1/services').set(...bearer(REGISTRY_TOKEN))
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ path: '/v1/services' })
  })
})

describe('target failures', () => {
  test('a throwing target answers 500 JSON without its message, and logs it', async () => {
    const lines: string[] = []
    const log = pino({ level: 'error' }, new Writable({ write (chunk, _enc, cb) { lines.push(String(chunk)); cb() } }))
    const target = fakeTarget({ services: () => { throw new Error('db password is hunter2') } })
    const res = await request(app(target, { log })).get('/admin/services').set(...bearer(TOKEN))
    expectJsonError(res, 500, 'InternalServerError')
    expect(res.text).not.toContain('hunter2')
    expect(res.headers['x-request-id']).toBe(res.body.request_id)
    expect(lines.join('')).toContain('hunter2')
  })

  test('a rejecting async target (reload) answers 500 JSON', async () => {
    const target = fakeTarget({ reload: async () => { throw new Error('boom-internal') } })
    const res = await request(app(target)).post('/admin/reload').set(...bearer(TOKEN))
    expectJsonError(res, 500, 'InternalServerError')
    expect(res.text).not.toContain('boom-internal')
  })

  test('a rejecting metrics() answers 500 JSON', async () => {
    const target = fakeTarget({ metrics: async () => { throw new Error('registry gone') } })
    const res = await request(app(target)).get('/metrics')
    expectJsonError(res, 500, 'InternalServerError')
    expect(res.text).not.toContain('registry gone')
  })
})

describe('tokensEqual', () => {
  test('equal tokens match', () => {
    expect(tokensEqual('abc123', 'abc123')).toBe(true)
  })

  test('unequal tokens of the same length do not match', () => {
    expect(tokensEqual('abc123', 'abc124')).toBe(false)
  })

  test('tokens of different lengths do not match (and do not throw)', () => {
    expect(tokensEqual('abc', 'abc123')).toBe(false)
    expect(tokensEqual('', 'abc')).toBe(false)
  })
})
