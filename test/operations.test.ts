/** Running it: the admin listener and graceful shutdown, through the spawned CLI. */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import http from 'node:http'
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { once } from 'node:events'
import request from 'supertest'
import { closedPort, startUpstream, type Upstream } from './support/upstream'
import { parse, value } from './support/prometheus'

const BIN = path.join(__dirname, '..', 'bin', 'sluice.js')
const TOKEN = 'admin-token-for-tests'

interface Running { child: ChildProcessWithoutNullStreams, url: string, admin: string, out: () => string }

async function start (yaml: string): Promise<Running> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-ops-'))
  fs.writeFileSync(path.join(dir, 'routes.yaml'), yaml)
  const child = spawn(process.execPath, [BIN, 'start', '-c', 'routes.yaml', '--no-watch'], { cwd: dir, env: { ...process.env, SLUICE_ADMIN_TOKEN: TOKEN } })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += String(d) })
  child.stderr.on('data', (d: Buffer) => { out += String(d) })
  while (!/"event":"admin".*"port":\d+/.test(out) || !out.includes('"event":"listening"')) await once(child.stdout, 'data')
  const port = Number(/"event":"listening"[^\n]*"port":(\d+)/.exec(out)?.[1])
  const adminPort = Number(/"event":"admin"[^\n]*"port":(\d+)/.exec(out)?.[1])
  return { child, url: `http://127.0.0.1:${port}`, admin: `http://127.0.0.1:${adminPort}`, out: () => out }
}

async function yaml (upstreams: Upstream[]): Promise<string> {
  return `version: 1
server: { host: 127.0.0.1, port: ${await closedPort()}, shutdown_timeout_ms: 5000 }
admin: { host: 127.0.0.1, port: 0, token: "\${SLUICE_ADMIN_TOKEN}" }
services:
  api:
    instances: [${upstreams.map(u => `{ url: ${u.url} }`).join(', ')}]
routes:
  - { name: r, service_name: api, methods: [GET], path: "/r/<path:rest>", upstream_path: "/<rest>" }
`
}

describe('admin listener', () => {
  let a: Upstream, b: Upstream, gw: Running
  beforeAll(async () => {
    a = await startUpstream((_req, res) => { res.end('a') })
    b = await startUpstream((_req, res) => { res.end('b') })
    gw = await start(await yaml([a, b]))
  })
  afterAll(async () => { gw.child.kill('SIGKILL'); await a.close(); await b.close() })

  test('/healthz, /readyz and /metrics are public', async () => {
    expect((await request(gw.admin).get('/healthz')).status).toBe(200)
    expect((await request(gw.admin).get('/readyz')).status).toBe(200)
    const metrics = await request(gw.admin).get('/metrics')
    expect(metrics.status).toBe(200)
    expect(metrics.headers['content-type']).toMatch(/^text\/plain/)
    expect(metrics.text).toContain('process_cpu_user_seconds_total')
    expect(metrics.text).toMatch(/^sluice_config_generation \d+$/m)
  })

  test('after traffic, /metrics has every metric of operations.md, requests labelled by route and service, and the access log a line per request', async () => {
    for (let i = 0; i < 4; i++) expect((await request(gw.url).get('/r/x')).status).toBe(200)
    expect((await request(gw.url).get('/nowhere')).status).toBe(404)
    const text = (await request(gw.admin).get('/metrics')).text
    const names = ['sluice_http_requests_total', 'sluice_http_request_duration_seconds', 'sluice_upstream_duration_seconds', 'sluice_inflight_requests',
      'sluice_upstream_health', 'sluice_circuit_state', 'sluice_circuit_events_total', 'sluice_rate_limited_total', 'sluice_config_reloads_total',
      'sluice_config_generation', 'sluice_registry_instances']
    for (const name of names) expect(text).toMatch(new RegExp(`^# TYPE ${name} (counter|gauge|histogram)$`, 'm'))
    const exp = parse(text)
    expect(value(exp, 'sluice_http_requests_total', { route: 'r', service: 'api', method: 'GET', status_class: '2xx', source: 'upstream' })).toBeGreaterThanOrEqual(4)
    expect(value(exp, 'sluice_http_requests_total', { route: 'unmatched', status_class: '4xx' })).toBeGreaterThanOrEqual(1)
    expect(value(exp, 'sluice_http_request_duration_seconds_count', { route: 'r', service: 'api' })).toBeGreaterThanOrEqual(4)
    expect(value(exp, 'sluice_upstream_duration_seconds_count', { service: 'api' })).toBeGreaterThanOrEqual(4)
    expect(value(exp, 'sluice_upstream_health', { service: 'api', instance: a.url, state: 'healthy' })).toBe(1)
    // Lines leave in batches, at the latest 100 ms later.
    for (let i = 0; i < 50 && (gw.out().match(/"msg":"request"/g) ?? []).length < 5; i++) await new Promise(resolve => setTimeout(resolve, 20))
    const lines = gw.out().split('\n').filter(l => l.includes('"msg":"request"')).map(l => JSON.parse(l) as Record<string, unknown>)
    expect(lines.filter(l => l.route === 'r' && l.status === 200)).toHaveLength(4)
    expect(lines.filter(l => l.route === 'unmatched' && l.status === 404)).toHaveLength(1)
  })

  test('/admin/ needs the bearer token', async () => {
    const refused = await request(gw.admin).get('/admin/routes')
    expect(refused.status).toBe(401)
    expect(refused.body.error_code).toBe('Unauthorized')
    expect((await request(gw.admin).get('/admin/routes').set('authorization', 'Bearer wrong')).status).toBe(401)
    const routes = await request(gw.admin).get('/admin/routes').set('authorization', `Bearer ${TOKEN}`)
    expect(routes.status).toBe(200)
    expect(routes.body).toEqual([{ name: 'r', methods: ['GET'], path: '/r/<path:rest>', upstream_path: '/<rest>', service: 'api', pipes: { inbound: [], outbound: [] } }])
  })

  test('/admin/config redacts secrets', async () => {
    const config = await request(gw.admin).get('/admin/config').set('authorization', `Bearer ${TOKEN}`)
    expect(config.status).toBe(200)
    expect(config.body.admin.token).toBe('[redacted]')
    expect(JSON.stringify(config.body)).not.toContain(TOKEN)
  })

  test('drain and undrain through the admin API move traffic', async () => {
    const auth = { authorization: `Bearer ${TOKEN}` }
    expect((await request(gw.admin).post('/admin/services/api/instances/api-0/drain').set(auth)).status).toBe(200)
    const served = new Set<string>()
    for (let i = 0; i < 4; i++) served.add((await request(gw.url).get('/r/x')).text)
    expect(served).toEqual(new Set(['b']))
    const services = await request(gw.admin).get('/admin/services').set(auth)
    expect(services.body[0].instances[0]).toMatchObject({ id: 'api-0', drained: true, health: 'drained' })
    expect((await request(gw.admin).post('/admin/services/api/instances/api-0/undrain').set(auth)).status).toBe(200)
    expect((await request(gw.admin).post('/admin/services/api/instances/nope/drain').set(auth)).status).toBe(404)
  })

  test('POST /admin/reload answers the new generation', async () => {
    const res = await request(gw.admin).post('/admin/reload').set('authorization', `Bearer ${TOKEN}`)
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ generation: 2 })
  })
})

describe('graceful shutdown', () => {
  test('SIGTERM: readyz turns 503, a slow request and an SSE stream in flight both finish, exit 0', async () => {
    let finishSlow: (() => void) | undefined
    let pushEvent: ((s: string) => void) | undefined
    let endStream: (() => void) | undefined
    const up = await startUpstream((req, res) => {
      if (req.url === '/slow') { finishSlow = () => res.end('slow done'); return }
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write('data: 1\n\n')
      pushEvent = (s) => res.write(s)
      endStream = () => res.end()
    })
    const gw = await start(await yaml([up]))
    try {
      const slow = request(gw.url).get('/r/slow').then(r => r.text)
      const stream = await new Promise<http.IncomingMessage>((resolve) => http.get(`${gw.url}/r/events`, resolve))
      let events = ''
      stream.on('data', (c: Buffer) => { events += String(c) })
      while (finishSlow === undefined || pushEvent === undefined) await new Promise(resolve => setTimeout(resolve, 10))
      const exited = once(gw.child, 'exit')
      gw.child.kill('SIGTERM')
      await new Promise(resolve => setTimeout(resolve, 200))
      expect((await request(gw.admin).get('/readyz')).status).toBe(503)
      pushEvent?.('data: 2\n\n')
      finishSlow?.()
      expect(await slow).toBe('slow done')
      endStream?.()
      await once(stream, 'end')
      expect(events).toBe('data: 1\n\ndata: 2\n\n')
      const [code] = await exited
      expect(code).toBe(0)
    } finally { gw.child.kill('SIGKILL'); await up.close() }
  })
})
