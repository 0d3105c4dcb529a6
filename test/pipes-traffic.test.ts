/**
 * The traffic pipes (pipes.md "Built-in pipes"): rate-limit, status-map,
 * response-headers and json-transform, served by a real gateway in front of
 * a real upstream. Refusals are checked by status, error_code and headers,
 * and by what the upstream did (not) receive.
 */
import fs from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import type { AddressInfo } from 'node:net'
import pino from 'pino'
import request from 'supertest'
import { ConfigError, loadConfigText } from '../src/config'
import { createGateway } from '../src/gateway'
import { createPipeCatalog } from '../src/pipes/catalog'
import { createRateLimiter } from '../src/pipes/builtin/rate-limit'
import { parsePointer } from '../src/pipes/builtin/json-transform'
import { createMemoryStore } from '../src/store/memory'
import type { Store } from '../src/store/types'
import { startGateway, type RunningGateway } from './support/gateway'
import { startUpstream, type Upstream, type UpstreamHandler } from './support/upstream'

/**
 * Answers what the query asks for: `status`, `type` (content-type), `body`;
 * `chunked=1` sends the body without a Content-Length.
 */
const scripted: UpstreamHandler = (req, res) => {
  const q = new URL(req.url ?? '/', 'http://x').searchParams
  const body = Buffer.from(q.get('body') ?? JSON.stringify({ ok: true, url: req.url }))
  const headers: http.OutgoingHttpHeaders = { 'content-type': q.get('type') ?? 'application/json', 'x-powered-by': 'upstream' }
  if (q.get('chunked') !== '1') headers['content-length'] = body.length
  res.writeHead(Number(q.get('status') ?? 200), headers)
  res.end(body)
}

/** A routes.yaml with one service and the given routes (YAML list items). */
function config (upstreamUrl: string, routes: string, top = ''): string {
  return `
version: 1
${top}
services:
  api:
    instances: [{ url: ${upstreamUrl} }]
routes:
${routes}`
}

function route (name: string, pipelines: string, path = `/${name}/<path:rest>`): string {
  return `  - name: ${name}
    service_name: api
    methods: [GET, POST, HEAD]
    path: "${path}"
    upstream_path: "/<rest>"
    pipelines: ${pipelines}
`
}

function load (yaml: string): void {
  loadConfigText(yaml, 'routes.yaml', { env: {}, pipes: (pipesDir) => createPipeCatalog({ pipesDir }) })
}

/** The config error a broken pipe placement produces, as text. */
function configError (yaml: string): string {
  try {
    const loaded = loadConfigText(yaml, 'routes.yaml', { env: {}, pipes: (pipesDir) => createPipeCatalog({ pipesDir }) })
    // create() failures surface when the gateway compiles the pipelines.
    void createGateway({ config: loaded }).close()
  } catch (err) {
    if (err instanceof ConfigError) return err.message
    throw err
  }
  throw new Error('the config loaded without error')
}

function sleep (ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms))
}

/** Waits until `offsetMs` past the next whole multiple of `windowMs` of the wall clock. */
function untilWindow (windowMs: number, offsetMs: number): Promise<void> {
  const now = Date.now()
  return sleep(windowMs - (now % windowMs) + offsetMs)
}

let upstream: Upstream
beforeAll(async () => { upstream = await startUpstream(scripted) })
afterAll(async () => { await upstream.close() })
beforeEach(() => { upstream.received.length = 0 })

async function withGateway (yaml: string, run: (gw: RunningGateway) => Promise<void>): Promise<void> {
  const gw = await startGateway(yaml)
  try { await run(gw) } finally { await gw.close() }
}

describe('rate-limit', () => {
  test('exactly `limit` requests pass, then 429 RateLimited with Retry-After and RateLimit-*; the refused one never reaches the upstream', async () => {
    await withGateway(config(upstream.url, route('a', `{ inbound: [{ name: rate-limit, properties: { limit: 3, window_s: 3600 } }] }`)), async (gw) => {
      for (const remaining of [2, 1, 0]) {
        const res = await request(gw.url).get('/a/x')
        expect(res.status).toBe(200)
        expect(res.headers['ratelimit-limit']).toBe('3')
        expect(res.headers['ratelimit-remaining']).toBe(String(remaining))
        expect(Number(res.headers['ratelimit-reset'])).toBeGreaterThanOrEqual(1)
        expect(res.headers['retry-after']).toBeUndefined()
      }
      const refused = await request(gw.url).get('/a/x')
      expect(refused.status).toBe(429)
      expect(refused.body).toMatchObject({ error_code: 'RateLimited', request_id: refused.headers['x-request-id'] })
      expect(refused.headers['retry-after']).toMatch(/^[1-9]\d*$/)
      expect(refused.headers['ratelimit-limit']).toBe('3')
      expect(refused.headers['ratelimit-remaining']).toBe('0')
      expect(refused.headers['ratelimit-reset']).toMatch(/^[1-9]\d*$/)
      expect(upstream.received).toHaveLength(3)
    })
  })

  test('fixed-window: Retry-After and RateLimit-Reset are the seconds left in the window', async () => {
    await withGateway(config(upstream.url, route('a', `{ inbound: [{ name: rate-limit, properties: { limit: 1, window_s: 3600, algorithm: fixed-window } }] }`)), async (gw) => {
      const left = Math.ceil((3_600_000 - (Date.now() % 3_600_000)) / 1000)
      expect((await request(gw.url).get('/a/x')).status).toBe(200)
      const refused = await request(gw.url).get('/a/x')
      expect(refused.status).toBe(429)
      expect(Math.abs(Number(refused.headers['retry-after']) - left)).toBeLessThanOrEqual(1)
      expect(refused.headers['ratelimit-reset']).toBe(refused.headers['retry-after'])
    })
  })

  test('key ip: each client (first untrusted X-Forwarded-For hop behind a trusted proxy) has its own budget', async () => {
    const yaml = config(upstream.url, route('a', `{ inbound: [{ name: rate-limit, properties: { limit: 2, window_s: 3600, key: ip } }] }`),
      'server:\n  trust_proxy: [127.0.0.1/32]')
    await withGateway(yaml, async (gw) => {
      const from = (ip: string): request.Test => request(gw.url).get('/a/x').set('X-Forwarded-For', ip)
      expect((await from('203.0.113.1')).status).toBe(200)
      expect((await from('203.0.113.1')).status).toBe(200)
      expect((await from('203.0.113.1')).status).toBe(429)
      const other = await from('203.0.113.2')
      expect(other.status).toBe(200)
      expect(other.headers['ratelimit-remaining']).toBe('1')
      expect(upstream.received.map(r => r.headers['x-forwarded-for'])).toEqual(['203.0.113.1, 127.0.0.1', '203.0.113.1, 127.0.0.1', '203.0.113.2, 127.0.0.1'])
    })
  })

  test('key ip without trust_proxy: a spoofed X-Forwarded-For does not buy a fresh budget', async () => {
    // A client rotating a forged X-Forwarded-For must not get a new budget per request.
    await withGateway(config(upstream.url, route('a', `{ inbound: [{ name: rate-limit, properties: { limit: 1, window_s: 3600 } }] }`)), async (gw) => {
      expect((await request(gw.url).get('/a/x').set('X-Forwarded-For', '198.51.100.1')).status).toBe(200)
      expect((await request(gw.url).get('/a/x').set('X-Forwarded-For', '198.51.100.2')).status).toBe(429)
    })
  })

  test('key header:<name>: a budget per header value; requests without the header share one anonymous budget', async () => {
    await withGateway(config(upstream.url, route('a', `{ inbound: [{ name: rate-limit, properties: { limit: 1, window_s: 3600, key: "header:X-Api-Key" } }] }`)), async (gw) => {
      expect((await request(gw.url).get('/a/x').set('X-Api-Key', 'alpha')).status).toBe(200)
      expect((await request(gw.url).get('/a/x').set('X-Api-Key', 'alpha')).status).toBe(429)
      expect((await request(gw.url).get('/a/x').set('X-Api-Key', 'beta')).status).toBe(200)
      expect((await request(gw.url).get('/a/x')).status).toBe(200)
      expect((await request(gw.url).get('/a/x')).status).toBe(429)
      // A client naming its key "anonymous" does not land in the shared budget.
      expect((await request(gw.url).get('/a/x').set('X-Api-Key', 'anonymous')).status).toBe(200)
      expect(upstream.received).toHaveLength(4)
    })
  })

  describe('key claim:<name>', () => {
    let dir: string
    beforeAll(() => {
      // Stands in for the jwt pipe: claims come from a test header into ctx.state.
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-claims-'))
      fs.writeFileSync(path.join(dir, 'test-claims.js'), `
module.exports = {
  name: 'test-claims',
  phase: 'inbound',
  create: () => (ctx) => {
    const raw = ctx.request.headers['x-test-claims']
    if (raw !== undefined) ctx.state.set('jwt.claims', JSON.parse(raw))
  },
}
`)
    })
    afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }) })

    test('a budget per claim value; no claims or no such claim share the anonymous budget', async () => {
      const yaml = config(upstream.url, route('a', `{ inbound: [{ name: test-claims }, { name: rate-limit, properties: { limit: 1, window_s: 3600, key: "claim:sub" } }] }`),
        `pipes_dir: ${dir}`)
      await withGateway(yaml, async (gw) => {
        const as = (claims: object | undefined): request.Test => {
          const r = request(gw.url).get('/a/x')
          return claims === undefined ? r : r.set('X-Test-Claims', JSON.stringify(claims))
        }
        expect((await as({ sub: 'alice' })).status).toBe(200)
        expect((await as({ sub: 'alice', scope: 'x' })).status).toBe(429)
        expect((await as({ sub: 'bob' })).status).toBe(200)
        expect((await as({ sub: 42 })).status).toBe(200)
        expect((await as({ sub: 42 })).status).toBe(429)
        expect((await as(undefined)).status).toBe(200)
        expect((await as({ other: 'x' })).status).toBe(429)
        expect((await as({ sub: { nested: true } })).status).toBe(429)
        expect(upstream.received).toHaveLength(4)
      })
    })
  })

  test('key route on a global pipe: one budget per route', async () => {
    const yaml = config(upstream.url, route('a', '{}') + route('b', '{}'),
      'global:\n  inbound: [{ name: rate-limit, properties: { limit: 1, window_s: 3600, key: route } }]')
    await withGateway(yaml, async (gw) => {
      expect((await request(gw.url).get('/a/x')).status).toBe(200)
      expect((await request(gw.url).get('/b/x')).status).toBe(200)
      expect((await request(gw.url).get('/a/x')).status).toBe(429)
      expect((await request(gw.url).get('/b/x')).status).toBe(429)
    })
  })

  test('a global ip limit is one budget across routes', async () => {
    const yaml = config(upstream.url, route('a', '{}') + route('b', '{}'),
      'global:\n  inbound: [{ name: rate-limit, properties: { limit: 2, window_s: 3600 } }]')
    await withGateway(yaml, async (gw) => {
      expect((await request(gw.url).get('/a/x')).status).toBe(200)
      expect((await request(gw.url).get('/b/x')).status).toBe(200)
      expect((await request(gw.url).get('/a/x')).status).toBe(429)
    })
  })

  test('the same limit on two routes, and two limits on one route, keep separate counters', async () => {
    const same = '{ name: rate-limit, properties: { limit: 1, window_s: 3600 } }'
    const yaml = config(upstream.url, route('a', `{ inbound: [${same}] }`) + route('b', `{ inbound: [${same}] }`) +
      route('c', `{ inbound: [{ name: rate-limit, properties: { limit: 3, window_s: 3600 } }, { name: rate-limit, properties: { limit: 2, window_s: 3600, key: route } }] }`))
    await withGateway(yaml, async (gw) => {
      expect((await request(gw.url).get('/a/x')).status).toBe(200)
      expect((await request(gw.url).get('/b/x')).status).toBe(200)
      expect((await request(gw.url).get('/a/x')).status).toBe(429)
      // c: the tighter (route) limit refuses the third request; the looser one alone would pass it.
      expect((await request(gw.url).get('/c/x')).status).toBe(200)
      const second = await request(gw.url).get('/c/x')
      expect(second.status).toBe(200)
      expect(second.headers['ratelimit-limit']).toBe('2')
      const third = await request(gw.url).get('/c/x')
      expect(third.status).toBe(429)
      expect(third.headers['ratelimit-limit']).toBe('2')
    })
  })

  test('the memory store counts atomically: 50 concurrent requests with limit 10 let exactly 10 through', async () => {
    await withGateway(config(upstream.url, route('a', `{ inbound: [{ name: rate-limit, properties: { limit: 10, window_s: 3600 } }] }`)), async (gw) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 50 })
      try {
        const statuses = await Promise.all(Array.from({ length: 50 }, () => request(gw.url).get('/a/x').agent(agent).then(r => r.status)))
        expect(statuses.filter(s => s === 200)).toHaveLength(10)
        expect(statuses.filter(s => s === 429)).toHaveLength(40)
        expect(upstream.received).toHaveLength(10)
      } finally { agent.destroy() }
    })
  })

  test('windows in real time: at the boundary a fixed window starts afresh, a sliding one still weighs the last window', async () => {
    const props = 'limit: 2, window_s: 1'
    const yaml = config(upstream.url,
      route('fixed', `{ inbound: [{ name: rate-limit, properties: { ${props}, algorithm: fixed-window } }] }`) +
      route('sliding', `{ inbound: [{ name: rate-limit, properties: { ${props}, algorithm: sliding-window } }] }`))
    await withGateway(yaml, async (gw) => {
      const started = Date.now()
      if (Date.now() % 1000 > 700) await untilWindow(1000, 10)
      const get = (name: string): Promise<number> => request(gw.url).get(`/${name}/x`).then(r => r.status)
      expect(await Promise.all([get('fixed'), get('fixed'), get('sliding'), get('sliding')])).toEqual([200, 200, 200, 200])
      expect(await Promise.all([get('fixed'), get('sliding')])).toEqual([429, 429])

      // 50 ms into the next window the sliding estimate is 2 × 0.95 + 1 > 2.
      await untilWindow(1000, 50)
      expect(await Promise.all([get('fixed'), get('sliding')])).toEqual([200, 429])
      // Past half of it, 2 × 0.45 + 1 ≤ 2.
      await untilWindow(500, 50)
      expect(await get('sliding')).toBe(200)
      expect(Date.now() - started).toBeLessThan(2200)
    })
  })

  test('a store that fails lets requests through (fail-open) without RateLimit-* headers', async () => {
    const broken: Store = {
      incr: () => Promise.reject(new Error('store down')),
      get: () => Promise.reject(new Error('store down')),
      close: async () => {},
    }
    const loaded = loadConfigText(config(upstream.url, route('a', `{ inbound: [{ name: rate-limit, properties: { limit: 1, window_s: 60 } }] }`)),
      'routes.yaml', { env: {}, pipes: (pipesDir) => createPipeCatalog({ pipesDir }) })
    const lines: Array<{ level: number, msg: string, pipe?: string }> = []
    const logger = pino({ level: 'info' }, { write: (line: string) => { lines.push(JSON.parse(line)) } })
    const gateway = createGateway({ config: loaded, store: broken, logger })
    const { port } = await gateway.listen({ port: 0, host: '127.0.0.1' }) as AddressInfo
    try {
      for (let i = 0; i < 3; i++) {
        const res = await request(`http://127.0.0.1:${port}`).get('/a/x')
        expect(res.status).toBe(200)
        expect(res.headers['ratelimit-limit']).toBeUndefined()
      }
      expect(upstream.received).toHaveLength(3)
      // Logged, but not once per request while the store is down.
      const warnings = lines.filter(l => l.msg.includes('rate-limit store failed'))
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toMatchObject({ level: 40, pipe: 'rate-limit' })
    } finally { await gateway.close() }
  })

  test('properties are checked at load: limit ≥ 1, window_s ≥ 1, a known key form and algorithm', () => {
    const at = (props: string): string => configError(config(upstream.url, route('a', `{ inbound: [{ name: rate-limit, properties: ${props} }] }`)))
    expect(at('{ limit: 0, window_s: 1 }')).toMatch(/rate-limit.*limit must be >= 1/)
    expect(at('{ limit: 1, window_s: 0.5 }')).toMatch(/window_s must be >= 1/)
    expect(at('{ limit: 1, window_s: 1, key: "cookie:sid" }')).toMatch(/key must match pattern/)
    expect(at('{ limit: 1, window_s: 1, algorithm: leaky-bucket }')).toMatch(/algorithm must be equal to one of the allowed values/)
    expect(at('{ window_s: 1 }')).toMatch(/must have required property 'limit'/)
    expect(at('{ limit: 1, window_s: 1, burst: 3 }')).toMatch(/unknown property "burst"/)
  })
})

describe('rate-limit arithmetic (clock injected)', () => {
  function limiter (algorithm: 'sliding-window' | 'fixed-window', limit: number, windowMs: number): { clock: { t: number }, hit: () => Promise<{ allowed: boolean, remaining: number, retryAfterS: number, resetS: number }> } {
    const clock = { t: 1_000_000 * windowMs } // the start of a window
    const now = (): number => clock.t
    const l = createRateLimiter({ store: createMemoryStore({ now }), limit, windowMs, algorithm, now })
    return { clock, hit: async () => await l.hit('k') }
  }

  test('sliding: the previous window counts by its overlap; Retry-After says when the next request fits', async () => {
    const { clock, hit } = limiter('sliding-window', 10, 10_000)
    for (let i = 0; i < 10; i++) expect((await hit()).allowed).toBe(true)
    const refused = await hit()
    expect(refused).toMatchObject({ allowed: false, remaining: 0 })
    // Full until the window ends (10 s), then 10 × w + 1 ≤ 10 needs w ≤ 0.9: 1 s more.
    expect(refused.retryAfterS).toBe(11)
    expect(refused.resetS).toBe(20)

    clock.t += 10_500 // 0.5 s into the next window: 10 × 0.95 + 1 > 10
    expect((await hit()).allowed).toBe(false)
    clock.t += 500 // 1 s in: 10 × 0.9 + 1 = 10
    const passed = await hit()
    expect(passed).toMatchObject({ allowed: true, remaining: 0 })
    clock.t += 4_000 // 5 s in: 10 × 0.5 + 1 = 6, so 4 more fit (the refused ones were not counted)
    expect(await hit()).toMatchObject({ allowed: true, remaining: 3 })
  })

  test('sliding: a refused request waits only for the previous window\'s weight to fall', async () => {
    const { clock, hit } = limiter('sliding-window', 4, 10_000)
    for (let i = 0; i < 4; i++) await hit()
    clock.t += 12_000 // 2 s into the next window: 4 × 0.8 + 1 > 4
    const refused = await hit()
    expect(refused.allowed).toBe(false)
    // 4 × w + 1 ≤ 4 needs w ≤ 0.75: at 2.5 s, 0.5 s from now, rounded up.
    expect(refused.retryAfterS).toBe(1)
    clock.t += 500
    expect((await hit()).allowed).toBe(true)
  })

  test('fixed: the count starts afresh at the boundary', async () => {
    const { clock, hit } = limiter('fixed-window', 2, 10_000)
    await hit(); await hit()
    clock.t += 9_000
    expect(await hit()).toMatchObject({ allowed: false, retryAfterS: 1, resetS: 1 })
    clock.t += 1_000
    expect(await hit()).toMatchObject({ allowed: true, remaining: 1 })
  })
})

describe('status-map', () => {
  let gw: RunningGateway
  beforeAll(async () => {
    gw = await startGateway(config(upstream.url,
      route('m', `{ outbound: [{ name: status-map, properties: { map: { "404": 204, "500": 503, "201": 200 } } }] }`)))
  })
  afterAll(async () => { await gw.close() })

  test('404 → 204: no body, no Content-Length, and the connection stays usable', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    try {
      const get = (url: string): Promise<{ status: number, headers: http.IncomingHttpHeaders, body: string, socket: unknown }> => new Promise((resolve, reject) => {
        http.get(url, { agent }, (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString(), socket: res.socket }))
        }).on('error', reject)
      })
      const mapped = await get(`${gw.url}/m/x?status=404&body=${encodeURIComponent('{"error":"gone"}')}`)
      expect(mapped.status).toBe(204)
      expect(mapped.body).toBe('')
      expect(mapped.headers['content-length']).toBeUndefined()
      expect(mapped.headers['transfer-encoding']).toBeUndefined()
      // The next response on the same connection is read correctly: no stray body bytes were sent.
      const next = await get(`${gw.url}/m/x?status=200&body=next`)
      expect(next.status).toBe(200)
      expect(next.body).toBe('next')
      expect(next.socket).toBe(mapped.socket)
    } finally { agent.destroy() }
  })

  test('a mapped status keeps the upstream\'s body and headers; unmapped statuses pass unchanged', async () => {
    const res = await request(gw.url).get('/m/x').query({ status: '500', body: '{"e":1}' })
    expect(res.status).toBe(503)
    expect(res.body).toEqual({ e: 1 })
    expect(res.headers['x-powered-by']).toBe('upstream')
    expect((await request(gw.url).get('/m/x').query({ status: '201' })).status).toBe(200)
    expect((await request(gw.url).get('/m/x').query({ status: '418', body: 'teapot', type: 'text/plain' })).text).toBe('teapot')
  })

  test('map keys are 3-digit statuses and targets final statuses, checked at load', () => {
    const at = (map: string): string => configError(config(upstream.url, route('m', `{ outbound: [{ name: status-map, properties: { map: ${map} } }] }`)))
    expect(at('{ "4xx": 200 }')).toMatch(/status-map": properties.map must match pattern/)
    expect(at('{ "404": 101 }')).toMatch(/must be >= 200/)
    expect(at('{ "404": 600 }')).toMatch(/must be <= 599/)
    expect(at('{}')).toMatch(/must NOT have fewer than 1 properties/)
    expect(configError(config(upstream.url, route('m', '{ inbound: [{ name: status-map, properties: { map: { "404": 200 } } }] }')))).toMatch(/outbound pipe/)
  })
})

describe('response-headers', () => {
  test('sets and removes response headers', async () => {
    const yaml = config(upstream.url, route('h', `{ outbound: [{ name: response-headers, properties: { set: { Cache-Control: "no-store", X-Version: 3, X-Powered-By: sluice }, remove: [x-powered-by, Content-Type] } }] }`))
    await withGateway(yaml, async (gw) => {
      const res = await request(gw.url).get('/h/x').buffer(true).parse((r, cb) => { const c: Buffer[] = []; r.on('data', (d: Buffer) => c.push(d)); r.on('end', () => cb(null, Buffer.concat(c))) })
      expect(res.status).toBe(200)
      expect(res.headers['cache-control']).toBe('no-store')
      expect(res.headers['x-version']).toBe('3')
      expect(res.headers['x-powered-by']).toBe('sluice')
      expect(res.headers['content-type']).toBeUndefined()
      expect(JSON.parse((res.body as Buffer).toString())).toEqual({ ok: true, url: '/x' })
    })
  })

  test('hop-by-hop headers, Content-Length and unsafe values are refused at load', () => {
    const at = (props: string): string => configError(config(upstream.url, route('h', `{ outbound: [{ name: response-headers, properties: ${props} }] }`)))
    expect(at('{ set: { Connection: close } }')).toMatch(/"Connection" is a hop-by-hop header/)
    expect(at('{ remove: [Transfer-Encoding] }')).toMatch(/"Transfer-Encoding" is a hop-by-hop header/)
    expect(at('{ set: { Keep-Alive: "timeout=5" } }')).toMatch(/hop-by-hop/)
    expect(at('{ set: { Content-Length: 3 } }')).toMatch(/Content-Length follows the body/)
    expect(at('{ set: { X-Evil: "a\\r\\nSet-Cookie: x=1" } }')).toMatch(/cannot carry/)
    expect(at('{ set: { "Bad Name": x } }')).toMatch(/response-headers": properties.set must match pattern/)
  })
})

describe('json-transform', () => {
  let gw: RunningGateway
  const doc = { user: { id: 7, name: 'Ann', password: 'x', 'a/b': 1, 'm~n': 2 }, items: [1, 2], legacy_id: 'L7' }
  beforeAll(async () => {
    gw = await startGateway(config(upstream.url,
      route('t', `{ outbound: [{ name: json-transform, properties: {
          rename: { /legacy_id: /user/legacyId, "/user/a~1b": /user/slash },
          remove: [/user/password, "/user/m~0n", /missing/deep],
          set: { /items/-: 3, /items/0: 0, /meta/source: gateway, /user/name: { first: Ann } } } }] }`) +
      route('small', `{ outbound: [{ name: json-transform, properties: { set: { /x: 1 }, max_bytes: 64 } }] }`) +
      route('root', `{ outbound: [{ name: json-transform, properties: { set: { "": { replaced: true } } } }] }`) +
      route('proto', `{ outbound: [{ name: json-transform, properties: { set: { /__proto__/polluted: true, /constructor/prototype/polluted: true } } }] }`)))
  })
  afterAll(async () => { await gw.close() })

  const get = (p: string, q: Record<string, string>): request.Test => request(gw.url).get(p).query(q)
    .buffer(true).parse((r, cb) => { const c: Buffer[] = []; r.on('data', (d: Buffer) => c.push(d)); r.on('end', () => cb(null, Buffer.concat(c))) })

  function text (res: request.Response): string {
    return (res.body as Buffer).toString('utf8')
  }

  test('rename, then remove, then set, with RFC 6901 escapes; Content-Length follows the new body', async () => {
    const res = await get('/t/x', { body: JSON.stringify(doc) })
    expect(res.status).toBe(200)
    expect(JSON.parse(text(res))).toEqual({
      user: { id: 7, name: { first: 'Ann' }, legacyId: 'L7', slash: 1 },
      items: [0, 2, 3],
      meta: { source: 'gateway' },
    })
    expect(res.headers['content-length']).toBe(String(res.body.length))
    expect(res.headers['content-type']).toBe('application/json')
  })

  test('a chunked upstream body is transformed and sent with its Content-Length', async () => {
    const res = await get('/t/x', { body: JSON.stringify(doc), chunked: '1' })
    expect(JSON.parse(text(res)).meta).toEqual({ source: 'gateway' })
    expect(res.headers['content-length']).toBe(String(res.body.length))
    expect(res.headers['transfer-encoding']).toBeUndefined()
  })

  test('+json media types are transformed; other types pass through byte for byte', async () => {
    const problem = await get('/t/x', { body: '{"title":"x"}', type: 'application/problem+json; charset=utf-8', status: '400' })
    expect(problem.status).toBe(400)
    expect(JSON.parse(text(problem))).toMatchObject({ title: 'x', meta: { source: 'gateway' } })
    const body = '{ "user": {"password": "x"} }'
    const plain = await get('/t/x', { body, type: 'text/plain' })
    expect(text(plain)).toBe(body)
    expect(plain.headers['content-length']).toBe(String(Buffer.byteLength(body)))
  })

  test('invalid JSON, and JSON with integers past 2^53, pass through untouched', async () => {
    for (const body of ['{"user": ', '{"id": 12345678901234567890, "items": []}', '']) {
      const res = await get('/t/x', { body })
      expect(res.status).toBe(200)
      expect(text(res)).toBe(body)
      expect(res.headers['content-length']).toBe(String(Buffer.byteLength(body)))
    }
  })

  test('a body over max_bytes passes through untouched', async () => {
    const small = await get('/small/x', { body: '{"a":1}' })
    expect(JSON.parse(text(small))).toEqual({ a: 1, x: 1 })
    const big = JSON.stringify({ pad: 'p'.repeat(100) })
    const res = await get('/small/x', { body: big })
    expect(text(res)).toBe(big)
    const chunked = await get('/small/x', { body: big, chunked: '1' })
    expect(text(chunked)).toBe(big)
  })

  test('the root pointer "" replaces the whole document', async () => {
    const res = await get('/root/x', { body: '[1,2,3]' })
    expect(JSON.parse(text(res))).toEqual({ replaced: true })
  })

  // An attacker-shaped pointer must not reach Object.prototype and change every object in the process.
  test('"__proto__" and "constructor" in pointers write own members, never the prototype', async () => {
    const res = await get('/proto/x', { body: '{"a":1}' })
    expect(text(res)).toBe('{"a":1,"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}')
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })

  test('set creates missing parent objects; it leaves scalars and arrays past their end alone', async () => {
    const yaml = config(upstream.url, route('s', `{ outbound: [{ name: json-transform, properties: { set: { /a/b/c: 1, /s/x: 2, /arr/5: 3, /arr/1: 9 } } }] }`))
    await withGateway(yaml, async (g) => {
      const res = await request(g.url).get('/s/x').query({ body: '{"s":"scalar","arr":[0,1]}' })
      expect(res.body).toEqual({ s: 'scalar', arr: [0, 9], a: { b: { c: 1 } } })
    })
  })

  test('pointers are checked at load (RFC 6901), and a member cannot be renamed into itself', () => {
    const at = (props: string): string => configError(config(upstream.url, route('t', `{ outbound: [{ name: json-transform, properties: ${props} }] }`)))
    expect(at('{ set: { "a/b": 1 } }')).toMatch(/is not a JSON Pointer: it must be empty or start with "\/"/)
    expect(at('{ remove: ["/a~2"] }')).toMatch(/"~" must be followed by 0 or 1/)
    expect(at('{ remove: [""] }')).toMatch(/whole document cannot be removed/)
    expect(at('{ rename: { /a: /a/b } }')).toMatch(/cannot be moved inside itself/)
    expect(at('{ max_bytes: 0 }')).toMatch(/max_bytes must be >= 1/)
  })

  test('parsePointer follows RFC 6901 §5\'s examples', () => {
    expect(parsePointer('')).toEqual([])
    expect(parsePointer('/foo/0')).toEqual(['foo', '0'])
    expect(parsePointer('/')).toEqual([''])
    expect(parsePointer('/a~1b')).toEqual(['a/b'])
    expect(parsePointer('/m~0n')).toEqual(['m~n'])
    expect(parsePointer('/~01')).toEqual(['~1'])
  })
})

test('the traffic pipes load from one config with their defaults', () => {
  expect(() => load(config(upstream.url,
    route('all', `{ inbound: [{ name: rate-limit, properties: { limit: 1, window_s: 1 } }], outbound: [{ name: status-map, properties: { map: { "404": 204 } } }, { name: response-headers }, { name: json-transform }] }`)))).not.toThrow()
})
