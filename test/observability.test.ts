/**
 * What requests, breakers, health checks and reloads leave behind
 * (operations.md "Metrics" and "Logs"), read from the gateway's own registry
 * and from its pino lines after real traffic through real sockets.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { once } from 'node:events'
import express from 'express'
import pino, { type Logger } from 'pino'
import request from 'supertest'
import WebSocket, { WebSocketServer } from 'ws'
import { loadConfigText } from '../src/config'
import type { LoadedConfig } from '../src/config/types'
import { createGateway, type Gateway } from '../src/gateway'
import { loggerOptions } from '../src/observability/logger'
import { createMetrics, type GatewayMetrics } from '../src/observability/metrics'
import { redactQuery, SECRET_QUERY_PARAMS } from '../src/observability/requests'
import { createPipeCatalog } from '../src/pipes/catalog'
import { closedPort, startUpstream, type Upstream } from './support/upstream'
import { find, parse, value, type Exposition } from './support/prometheus'
import { refusedUpgrade } from './support/websocket'

type Line = Record<string, unknown>

interface Observed {
  gateway: Gateway
  metrics: GatewayMetrics
  url: string
  lines: Line[]
  /** Access-log lines only. */
  requests: () => Line[]
  scrape: () => Promise<Exposition>
  close: () => Promise<void>
}

const ACCESS_FIELDS = ['level', 'time', 'request_id', 'method', 'url', 'route', 'service', 'instance', 'status', 'duration_ms', 'upstream_ms', 'bytes_out', 'msg']

async function observe (yaml: string, env: Record<string, string> = {}): Promise<Observed> {
  const lines: Line[] = []
  // The CLI's own pino options (levels, redaction), writing into an array.
  const logger = pino(loggerOptions('info'), { write: (s: string) => { lines.push(JSON.parse(s) as Line) } })
  const loaded = loadConfigText(yaml, 'routes.yaml', { env, pipes: (pipesDir) => createPipeCatalog({ pipesDir }) })
  const metrics = createMetrics({ defaultMetrics: false })
  const gateway = createGateway({ config: loaded, logger, metrics })
  const { port } = await gateway.listen({ port: 0, host: '127.0.0.1' }) as AddressInfo
  return {
    gateway,
    metrics,
    url: `http://127.0.0.1:${port}`,
    lines,
    requests: () => lines.filter(l => l.msg === 'request'),
    scrape: async () => parse((await metrics.expose()).body),
    close: () => gateway.close(),
  }
}

/** Service `api` with these instances, and one route to it. */
function instancesConfig (urls: string[]): string {
  return `version: 1
services: { api: { instances: [${urls.map(u => `{ url: ${u} }`).join(', ')}] } }
routes: [{ name: r, service_name: api, methods: [GET], path: /r, upstream_path: /r }]
`
}

/** A gateway (no listener) whose reload() reads `text.current`. */
function reloadable (text: { current: string }, logger?: Logger): { gateway: Gateway, scrape: () => Promise<Exposition> } {
  const metrics = createMetrics({ defaultMetrics: false })
  const load = (): LoadedConfig => loadConfigText(text.current, 'routes.yaml')
  const gateway = createGateway({ config: load(), logger, metrics, loadConfig: load })
  return { gateway, scrape: async () => parse((await metrics.expose()).body) }
}

/** Waits until `check` holds (records are written when a response closes, a tick after the client has it). */
async function eventually (check: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const end = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

describe('requests', () => {
  let up: Upstream, gw: Observed
  beforeAll(async () => {
    up = await startUpstream((req, res) => {
      if (req.url?.startsWith('/slow')) { req.socket.once('close', () => res.destroy()); return } // answers never
      res.end('hello from upstream')
    })
    gw = await observe(`version: 1
services:
  api: { instances: [{ url: ${up.url} }] }
  gone: { instances: [{ url: http://127.0.0.1:${await closedPort()} }] }
routes:
  - { name: users, service_name: api, methods: [GET], path: "/users/<id>", upstream_path: "/u/<id>" }
  - name: limited
    service_name: api
    methods: [GET]
    path: /limited
    upstream_path: /l
    pipelines: { inbound: [{ name: rate-limit, properties: { limit: 1, window_s: 3600 } }] }
  - name: keyed
    service_name: api
    methods: [GET]
    path: /keyed
    upstream_path: /k
    pipelines: { inbound: [{ name: api-key, properties: { keys: [s3cret-key-value], query_param: k } }] }
  - { name: down, service_name: gone, methods: [GET], path: /down, upstream_path: /d }
  - { name: slow, service_name: api, methods: [GET], path: /slow, upstream_path: /slow }
`)
  })
  afterAll(async () => { await gw.close(); await up.close() })

  test('an upstream answer: one access line with exactly the listed fields, and its counters', async () => {
    const res = await request(gw.url).get('/users/42?x=1')
    expect(res.status).toBe(200)
    await eventually(() => gw.requests().some(l => l.request_id === res.headers['x-request-id']))
    const line = gw.requests().find(l => l.request_id === res.headers['x-request-id']) as Line
    expect(Object.keys(line).sort()).toEqual([...ACCESS_FIELDS].sort())
    expect(line).toMatchObject({ level: 'info', method: 'GET', url: '/users/42?x=1', route: 'users', service: 'api', instance: up.url, status: 200, msg: 'request' })
    expect(line.upstream_ms).toEqual(expect.any(Number))
    expect(line.duration_ms as number).toBeGreaterThanOrEqual(line.upstream_ms as number)
    // Headers and body as they went over the client's connection.
    expect(line.bytes_out as number).toBeGreaterThan('hello from upstream'.length + 'HTTP/1.1 200 OK\r\n'.length)
    const exp = await gw.scrape()
    expect(value(exp, 'sluice_http_requests_total', { route: 'users', service: 'api', method: 'GET', status_class: '2xx', source: 'upstream' })).toBe(1)
    expect(value(exp, 'sluice_http_request_duration_seconds_count', { route: 'users', service: 'api' })).toBe(1)
    expect(value(exp, 'sluice_upstream_duration_seconds_count', { service: 'api' })).toBeGreaterThanOrEqual(1)
    expect(value(exp, 'sluice_inflight_requests')).toBe(0)
  })

  test('gateway answers count as source="gateway": a 404 as route="unmatched", a 502 under its route', async () => {
    const notFound = await request(gw.url).get('/nowhere')
    const refused = await request(gw.url).get('/down')
    expect([notFound.status, refused.status]).toEqual([404, 502])
    await eventually(async () => value(await gw.scrape(), 'sluice_http_requests_total', { route: 'down' }) === 1)
    const exp = await gw.scrape()
    expect(value(exp, 'sluice_http_requests_total', { route: 'unmatched', service: '', status_class: '4xx', source: 'gateway' })).toBe(1)
    expect(value(exp, 'sluice_http_requests_total', { route: 'down', service: 'gone', status_class: '5xx', source: 'gateway' })).toBe(1)
    const lines = gw.requests()
    expect(lines.find(l => l.request_id === notFound.headers['x-request-id'])).toMatchObject({ route: 'unmatched', service: null, instance: null, status: 404, upstream_ms: null })
    expect(lines.find(l => l.request_id === refused.headers['x-request-id'])).toMatchObject({ route: 'down', service: 'gone', status: 502, upstream_ms: null })
  })

  test('a rate-limited request counts in sluice_rate_limited_total of its route', async () => {
    expect((await request(gw.url).get('/limited')).status).toBe(200)
    expect((await request(gw.url).get('/limited')).status).toBe(429)
    await eventually(async () => value(await gw.scrape(), 'sluice_http_requests_total', { route: 'limited', status_class: '4xx' }) === 1)
    const exp = await gw.scrape()
    expect(value(exp, 'sluice_rate_limited_total', { route: 'limited' })).toBe(1)
    expect(value(exp, 'sluice_http_requests_total', { route: 'limited', status_class: '2xx', source: 'upstream' })).toBe(1)
  })

  test('credentials never reach the log: Authorization, cookies, the api-key query parameter and well-known secret parameters', async () => {
    const res = await request(gw.url).get('/keyed?k=s3cret-key-value&access_token=tok-value-9&keep=visible')
      .set('authorization', 'Bearer header-secret-1').set('cookie', 'session=cookie-secret-2').set('x-api-key', 'header-secret-3')
    expect(res.status).toBe(200)
    await eventually(() => gw.requests().some(l => l.request_id === res.headers['x-request-id']))
    const text = JSON.stringify(gw.lines)
    for (const secret of ['s3cret-key-value', 'tok-value-9', 'header-secret-1', 'cookie-secret-2', 'header-secret-3']) expect(text).not.toContain(secret)
    expect(gw.requests().find(l => l.request_id === res.headers['x-request-id'])?.url).toBe('/keyed?k=[redacted]&access_token=[redacted]&keep=visible')
  })

  test('a client that leaves before its answer: status 499, aborted, and the in-flight gauge back to 0', async () => {
    const req = http.get(`${gw.url}/slow`)
    req.on('error', () => {})
    await eventually(() => up.received.some(r => r.url === '/slow'))
    expect(value(await gw.scrape(), 'sluice_inflight_requests')).toBe(1)
    req.destroy()
    await eventually(() => gw.requests().some(l => l.route === 'slow'))
    expect(gw.requests().find(l => l.route === 'slow')).toMatchObject({ status: 499, aborted: true })
    expect(value(await gw.scrape(), 'sluice_inflight_requests')).toBe(0)
  })
})

test('redactQuery: names are matched decoded and case-insensitively; other parameters and the path are untouched', () => {
  const secret = new Set(SECRET_QUERY_PARAMS)
  expect(redactQuery('/a/token?x=1', secret)).toBe('/a/token?x=1')
  expect(redactQuery('/a?API_KEY=1&b=2', secret)).toBe('/a?API_KEY=[redacted]&b=2')
  expect(redactQuery('/a?api%5Fkey=1', secret)).toBe('/a?api%5Fkey=[redacted]')
  expect(redactQuery('/a?%zz=1&token', secret)).toBe('/a?%zz=1&token=[redacted]')
})

test('an Express mount records its requests too (a listener per response, as the response is not the gateway\'s)', async () => {
  const up = await startUpstream()
  const lines: Line[] = []
  const logger = pino(loggerOptions('info'), { write: (s: string) => { lines.push(JSON.parse(s) as Line) } })
  const metrics = createMetrics({ defaultMetrics: false })
  const gateway = createGateway({
    config: loadConfigText(`version: 1
services: { api: { instances: [{ url: ${up.url} }] } }
routes: [{ name: r, service_name: api, methods: [GET], path: /r, upstream_path: /r }]
`, 'routes.yaml'),
    logger,
    metrics,
  })
  const app = express()
  app.use('/gw', gateway.middleware)
  const server = app.listen(0, '127.0.0.1')
  await once(server, 'listening')
  try {
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    expect((await request(base).get('/gw/r')).status).toBe(200)
    await eventually(() => lines.some(l => l.msg === 'request'))
    expect(lines.find(l => l.msg === 'request')).toMatchObject({ route: 'r', status: 200 })
    expect(value(parse((await metrics.expose()).body), 'sluice_http_requests_total', { route: 'r', status_class: '2xx' })).toBe(1)
  } finally {
    server.close()
    await gateway.close()
    await up.close()
  }
})

describe('breakers, health and reloads', () => {
  test('a breaker that opens: state gauge, failure/open/reject events, and a breaker event in the log', async () => {
    const up = await startUpstream((_req, res) => { res.statusCode = 503; res.end('down') })
    const gw = await observe(`version: 1
services:
  gone:
    instances: [{ url: ${up.url} }]
    circuit_breaker: { volume_threshold: 2, error_threshold_percentage: 50, reset_timeout_ms: 60000, failure_statuses: [503] }
routes: [{ name: down, service_name: gone, methods: [GET], path: /down, upstream_path: /d }]
`)
    try {
      expect(value(await gw.scrape(), 'sluice_circuit_state', { service: 'gone', state: 'closed' })).toBe(1)
      for (let i = 0; i < 3; i++) await request(gw.url).get('/down')
      expect((await request(gw.url).get('/down')).body.error_code).toBe('CircuitOpen')
      const exp = await gw.scrape()
      expect(value(exp, 'sluice_circuit_state', { service: 'gone', state: 'open' })).toBe(1)
      expect(value(exp, 'sluice_circuit_state', { service: 'gone', state: 'closed' })).toBe(0)
      expect(value(exp, 'sluice_circuit_events_total', { service: 'gone', event: 'open' })).toBe(1)
      expect(value(exp, 'sluice_circuit_events_total', { service: 'gone', event: 'failure' })).toBeGreaterThanOrEqual(2)
      expect(value(exp, 'sluice_circuit_events_total', { service: 'gone', event: 'reject' })).toBeGreaterThanOrEqual(1)
      expect(gw.lines).toContainEqual(expect.objectContaining({ event: 'breaker', service: 'gone', state: 'open', level: 'warn' }))
    } finally {
      await gw.close()
      await up.close()
    }
  })

  test('health: active checks and drain move the instance\'s gauge, with health events logged', async () => {
    let sick = false
    const up = await startUpstream((req, res) => { res.statusCode = sick && req.url === '/health' ? 500 : 200; res.end('ok') })
    const gw = await observe(`version: 1
services:
  api:
    instances: [{ url: ${up.url} }]
    health_check: { path: /health, interval_ms: 50, timeout_ms: 500, healthy_threshold: 1, unhealthy_threshold: 1 }
routes: [{ name: r, service_name: api, methods: [GET], path: /r, upstream_path: /r }]
`)
    const state = async (s: string): Promise<number | undefined> => value(await gw.scrape(), 'sluice_upstream_health', { service: 'api', instance: up.url, state: s })
    try {
      expect(await state('healthy')).toBe(1)
      sick = true
      await eventually(async () => await state('unhealthy') === 1)
      expect(await state('healthy')).toBe(0)
      expect(gw.lines).toContainEqual(expect.objectContaining({ event: 'health', service: 'api', state: 'unhealthy' }))
      sick = false
      await eventually(async () => await state('healthy') === 1)
      gw.gateway.generation.services.get('api')?.setDrained('api-0', true)
      expect(await state('drained')).toBe(1)
      expect(await state('healthy')).toBe(0)
    } finally {
      await gw.close()
      await up.close()
    }
  })

  test('reloads: counted by result, the generation gauge follows, removed instances leave no series', async () => {
    const a = await startUpstream()
    const b = await startUpstream()
    const text = { current: instancesConfig([a.url, b.url]) }
    const lines: Line[] = []
    const { gateway, scrape } = reloadable(text, pino(loggerOptions('info'), { write: (s: string) => { lines.push(JSON.parse(s) as Line) } }))
    try {
      expect(lines).toContainEqual(expect.objectContaining({ event: 'config', result: 'loaded', generation: 1, routes: 1 }))
      expect(find(await scrape(), 'sluice_upstream_health', { instance: b.url })).toHaveLength(3)
      text.current = instancesConfig([a.url])
      expect(await gateway.reload()).toEqual({ ok: true, generation: 2 })
      text.current = 'version: 1\nroutes: [oops'
      expect((await gateway.reload()).ok).toBe(false)
      const exp = await scrape()
      expect(value(exp, 'sluice_config_reloads_total', { result: 'success' })).toBe(1)
      expect(value(exp, 'sluice_config_reloads_total', { result: 'failure' })).toBe(1)
      expect(value(exp, 'sluice_config_generation')).toBe(2)
      expect(find(exp, 'sluice_upstream_health', { instance: b.url })).toHaveLength(0)
      expect(value(exp, 'sluice_upstream_health', { instance: a.url, state: 'healthy' })).toBe(1)
      expect(lines).toContainEqual(expect.objectContaining({ event: 'reload', result: 'failure', level: 'error' }))
    } finally {
      await gateway.close()
      await a.close()
      await b.close()
    }
  })
})

test('WebSocket upgrades: a tunnel is logged and counted when it closes (101, from the upstream); a refused upgrade with its status', async () => {
  const up = await startUpstream()
  const wss = new WebSocketServer({ server: up.server })
  wss.on('connection', (socket) => { socket.on('message', (data) => socket.send(String(data))) })
  const gw = await observe(`version: 1
services: { api: { instances: [{ url: ${up.url} }] } }
routes: [{ name: socket, service_name: api, methods: [GET], path: /socket, upstream_path: /socket }]
`)
  try {
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/socket`)
    await once(ws, 'open')
    ws.send('hi')
    await once(ws, 'message')
    expect(value(await gw.scrape(), 'sluice_inflight_requests')).toBe(1)
    ws.close()
    await once(ws, 'close')
    await eventually(() => gw.requests().some(l => l.route === 'socket'))
    expect(gw.requests().find(l => l.route === 'socket')).toMatchObject({ method: 'GET', url: '/socket', service: 'api', instance: up.url, status: 101, upstream_ms: expect.any(Number) })

    expect((await refusedUpgrade(`${gw.url.replace('http', 'ws')}/nowhere`)).status).toBe(404)
    await eventually(() => gw.requests().some(l => l.url === '/nowhere'))
    expect(gw.requests().find(l => l.url === '/nowhere')).toMatchObject({ route: 'unmatched', status: 404, instance: null })
    const exp = await gw.scrape()
    expect(value(exp, 'sluice_http_requests_total', { route: 'socket', service: 'api', status_class: '1xx', source: 'upstream' })).toBe(1)
    expect(value(exp, 'sluice_http_requests_total', { route: 'unmatched', status_class: '4xx', source: 'gateway' })).toBe(1)
    expect(value(exp, 'sluice_inflight_requests')).toBe(0)
  } finally {
    wss.close()
    await gw.close()
    await up.close()
  }
})

test('the access line follows the format of the logger it is given: its level labels, bindings and message key', async () => {
  const up = await startUpstream()
  const lines: Line[] = []
  const logger = pino({ messageKey: 'message' }, { write: (s: string) => { lines.push(JSON.parse(s) as Line) } }).child({ component: 'edge' })
  const gateway = createGateway({
    config: loadConfigText(`version: 1
services: { api: { instances: [{ url: ${up.url} }] } }
routes: [{ name: r, service_name: api, methods: [GET], path: /r, upstream_path: /r }]
`, 'routes.yaml'),
    logger,
  })
  const { port } = await gateway.listen({ port: 0, host: '127.0.0.1' })
  try {
    // A quote and a backslash reach the log as the client sent them, escaped as JSON needs.
    const status = await new Promise<number | undefined>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: '/r?q="x"\\y' }, (res) => { res.resume(); resolve(res.statusCode) }).on('error', reject)
    })
    expect(status).toBe(200)
    await eventually(() => lines.some(l => l.message === 'request'))
    const line = lines.find(l => l.message === 'request') as Line
    expect(line).toMatchObject({ level: 30, pid: process.pid, component: 'edge', route: 'r', status: 200 })
    expect(line.url).toBe('/r?q="x"\\y')
    expect(typeof line.time).toBe('number')
  } finally {
    await gateway.close()
    await up.close()
  }
})

test('an instance an operator drained stays drained across a reload, even when the instances move', async () => {
  const a = await startUpstream()
  const b = await startUpstream()
  const text = { current: instancesConfig([a.url, b.url]) }
  const { gateway, scrape } = reloadable(text)
  try {
    expect(gateway.generation.services.get('api')?.setDrained('api-1', true)).toBe(true)
    // b moves to the front: matched by URL, not by position.
    text.current = instancesConfig([b.url, a.url])
    expect((await gateway.reload()).ok).toBe(true)
    const instances = gateway.generation.services.get('api')?.instances ?? []
    expect(instances.map(i => [i.url, i.drained])).toEqual([[b.url, true], [a.url, false]])
    const exp = await scrape()
    expect(value(exp, 'sluice_upstream_health', { instance: b.url, state: 'drained' })).toBe(1)
    expect(value(exp, 'sluice_upstream_health', { instance: a.url, state: 'healthy' })).toBe(1)
  } finally {
    await gateway.close()
    await a.close()
    await b.close()
  }
})

test('a CORS preflight counts under its route when a cors pipe answers it, and as unmatched when it is a plain 405', async () => {
  const up = await startUpstream()
  const gw = await observe(`version: 1
services: { api: { instances: [{ url: ${up.url} }] } }
routes:
  - { name: plain, service_name: api, methods: [GET], path: /plain, upstream_path: /plain }
  - name: shared
    service_name: api
    methods: [GET]
    path: /shared
    upstream_path: /shared
    pipelines: { inbound: [{ name: cors, properties: { origins: ["https://app.example.com"] } }] }
`)
  try {
    const preflight = (path: string): request.Test => request(gw.url).options(path).set('origin', 'https://app.example.com').set('access-control-request-method', 'GET')
    expect((await preflight('/shared')).status).toBe(204)
    expect((await preflight('/plain')).status).toBe(405)
    await eventually(() => gw.requests().length === 2)
    const exp = await gw.scrape()
    expect(value(exp, 'sluice_http_requests_total', { route: 'shared', method: 'OPTIONS', status_class: '2xx', source: 'gateway' })).toBe(1)
    expect(value(exp, 'sluice_http_requests_total', { route: 'unmatched', method: 'OPTIONS', status_class: '4xx' })).toBe(1)
  } finally {
    await gw.close()
    await up.close()
  }
})

test('a rate-limited WebSocket upgrade counts in sluice_rate_limited_total of its route', async () => {
  const up = await startUpstream()
  const wss = new WebSocketServer({ server: up.server })
  const gw = await observe(`version: 1
services: { api: { instances: [{ url: ${up.url} }] } }
routes:
  - name: socket
    service_name: api
    methods: [GET]
    path: /socket
    upstream_path: /socket
    pipelines: { inbound: [{ name: rate-limit, properties: { limit: 1, window_s: 3600 } }] }
`)
  try {
    const first = new WebSocket(`${gw.url.replace('http', 'ws')}/socket`)
    await once(first, 'open')
    first.close()
    expect((await refusedUpgrade(`${gw.url.replace('http', 'ws')}/socket`)).status).toBe(429)
    await eventually(() => gw.requests().some(l => l.status === 429))
    expect(value(await gw.scrape(), 'sluice_rate_limited_total', { route: 'socket' })).toBe(1)
  } finally {
    wss.close()
    await gw.close()
    await up.close()
  }
})
