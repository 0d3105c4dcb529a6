/** Circuit breaking, fallbacks, retries, timeouts and exception handlers against upstreams that fail on command. */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import request from 'supertest'
import { closedPort, startUpstream, type Upstream } from './support/upstream'
import { startGateway, type RunningGateway } from './support/gateway'

type Mode = 'ok' | '500' | '503' | 'hang'

/** An instance whose behaviour the test switches: ok, 500, 503 or hang. */
async function controllable (name: string): Promise<Upstream & { set (mode: Mode): void }> {
  let mode: Mode = 'ok'
  const up = await startUpstream((_req, res) => {
    if (mode === 'hang') return
    if (mode === 'ok') { res.end(name); return }
    res.writeHead(Number(mode)).end(`${name} failing`)
  })
  return Object.assign(up, { set (m: Mode) { mode = m } })
}

function config (instances: string[], service: string, routes = ''): string {
  return `version: 1
pipes_dir: ./pipes
services:
  api:
    instances: [${instances.map(u => `{ url: ${u} }`).join(', ')}]
${service}
routes:
  - { name: r, service_name: api, methods: [GET, POST, PUT], path: "/r", upstream_path: "/r" }
${routes}`
}

describe('circuit breaker', () => {
  let up: Upstream & { set (mode: Mode): void }
  let gw: RunningGateway
  beforeEach(async () => {
    up = await controllable('a')
    gw = await startGateway(config([up.url], `    circuit_breaker:
      volume_threshold: 4
      error_threshold_percentage: 50
      rolling_window_ms: 10000
      reset_timeout_ms: 300
      fallback: { status: 200, headers: { content-type: application/json }, body: '{"items": [], "degraded": true}' }`))
  })
  afterEach(async () => { await gw.close(); await up.close() })

  test('opens after exactly the configured volume, then answers the fallback without touching the upstream', async () => {
    up.set('500')
    for (let i = 0; i < 4; i++) expect((await request(gw.url).get('/r')).status).toBe(500) // the upstream's own answers pass through
    expect(up.received).toHaveLength(4)
    const degraded = await request(gw.url).get('/r')
    expect(degraded.status).toBe(200)
    expect(degraded.body).toEqual({ items: [], degraded: true })
    expect(up.received).toHaveLength(4)
    expect(gw.gateway.generation.services.get('api')!.breaker!.state()).toBe('open')
  })

  test('fewer failures than the volume threshold do not open it', async () => {
    up.set('500')
    for (let i = 0; i < 3; i++) await request(gw.url).get('/r')
    up.set('ok')
    expect((await request(gw.url).get('/r')).text).toBe('a')
    expect(gw.gateway.generation.services.get('api')!.breaker!.state()).toBe('closed')
  })

  test('after reset_timeout_ms one trial request decides; recovery closes it', async () => {
    up.set('500')
    for (let i = 0; i < 4; i++) await request(gw.url).get('/r')
    const breaker = gw.gateway.generation.services.get('api')!.breaker!
    expect(breaker.state()).toBe('open')
    up.set('ok')
    await new Promise(resolve => setTimeout(resolve, 350))
    expect(breaker.state()).toBe('half_open')
    const trial = await request(gw.url).get('/r')
    expect(trial.text).toBe('a')
    expect(breaker.state()).toBe('closed')
    expect((await request(gw.url).get('/r')).text).toBe('a')
  })

  test('a failed trial opens it again', async () => {
    up.set('500')
    for (let i = 0; i < 4; i++) await request(gw.url).get('/r')
    await new Promise(resolve => setTimeout(resolve, 350))
    const before = up.received.length
    await request(gw.url).get('/r')
    expect(up.received).toHaveLength(before + 1)
    expect(gw.gateway.generation.services.get('api')!.breaker!.state()).toBe('open')
  })
})

test('open without a fallback: 503 CircuitOpen with Retry-After', async () => {
  const up = await controllable('a')
  const gw = await startGateway(config([up.url], `    circuit_breaker: { volume_threshold: 2, reset_timeout_ms: 5000 }`))
  try {
    up.set('503')
    await request(gw.url).get('/r'); await request(gw.url).get('/r')
    const res = await request(gw.url).get('/r')
    expect(res.status).toBe(503)
    expect(res.body.error_code).toBe('CircuitOpen')
    expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1)
    expect(up.received).toHaveLength(2)
  } finally { await gw.close(); await up.close() }
})

test('timeouts and refused connections count as breaker failures', async () => {
  const port = await closedPort()
  const gw = await startGateway(config([`http://127.0.0.1:${port}`], `    timeout_ms: 100
    circuit_breaker: { volume_threshold: 1, reset_timeout_ms: 5000 }`))
  try {
    expect((await request(gw.url).get('/r')).status).toBe(502)
    // The refusal was counted: the breaker answers before passive ejection could.
    expect(gw.gateway.generation.services.get('api')!.breaker!.state()).toBe('open')
    expect((await request(gw.url).get('/r')).body.error_code).toBe('CircuitOpen')
  } finally { await gw.close() }
  const hang = await controllable('h')
  hang.set('hang')
  const gw2 = await startGateway(config([hang.url], `    timeout_ms: 100
    circuit_breaker: { volume_threshold: 2, reset_timeout_ms: 5000 }`))
  try {
    expect((await request(gw2.url).get('/r')).status).toBe(504)
    expect((await request(gw2.url).get('/r')).status).toBe(504)
    expect((await request(gw2.url).get('/r')).body.error_code).toBe('CircuitOpen')
  } finally { await gw2.close(); await hang.close() }
})

describe('retries', () => {
  test('a GET moves to the healthy instance', async () => {
    const [bad, good] = [await controllable('bad'), await controllable('good')]
    bad.set('503')
    const gw = await startGateway(config([bad.url, good.url], `    retries: { attempts: 1, on: [503], backoff_ms: 10 }`))
    try {
      for (let i = 0; i < 4; i++) {
        const res = await request(gw.url).get('/r')
        expect(res.status).toBe(200)
        expect(res.text).toBe('good')
      }
    } finally { await gw.close(); await bad.close(); await good.close() }
  })

  test('a POST is never retried', async () => {
    const [bad, good] = [await controllable('bad'), await controllable('good')]
    bad.set('503')
    const gw = await startGateway(config([bad.url, good.url], `    retries: { attempts: 3, on: [503], backoff_ms: 0 }`))
    try {
      const res = await request(gw.url).post('/r').send('x')
      expect(res.status).toBe(503)
      expect(bad.received).toHaveLength(1)
      expect(good.received).toHaveLength(0)
    } finally { await gw.close(); await bad.close(); await good.close() }
  })

  test('a PUT with a streamed body is not retried; attempts are bounded', async () => {
    const [a, b] = [await controllable('a'), await controllable('b')]
    a.set('503'); b.set('503')
    const gw = await startGateway(config([a.url, b.url], `    retries: { attempts: 2, on: [503], backoff_ms: 0 }`))
    try {
      expect((await request(gw.url).put('/r').send('body')).status).toBe(503)
      expect(a.received.length + b.received.length).toBe(1)
      const res = await request(gw.url).get('/r')
      expect(res.status).toBe(503)
      expect(a.received.length + b.received.length).toBe(1 + 3) // one try + two retries
    } finally { await gw.close(); await a.close(); await b.close() }
  })

  test('a refused connection is retried on the other instance', async () => {
    const good = await controllable('good')
    const gw = await startGateway(config([`http://127.0.0.1:${await closedPort()}`, good.url], `    retries: { attempts: 1, on: [connect-failure], backoff_ms: 5 }`))
    try {
      for (let i = 0; i < 3; i++) expect((await request(gw.url).get('/r')).text).toBe('good')
    } finally { await gw.close(); await good.close() }
  })
})

describe('timeouts', () => {
  test('connect_timeout_ms (502) and timeout_ms (504) are distinct, neither leaks an address', async () => {
    // A loopback listener that never accepts: once its backlog is full the
    // kernel drops new SYNs, so connecting hangs (Node servers always accept).
    const listener = spawn('python3', ['-c', [
      'import socket, sys, time',
      's = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)',
      'print(s.getsockname()[1], flush=True)',
      'fill = []',
      'while True:',
      '    c = socket.socket(); c.settimeout(0.3)',
      '    try: c.connect(s.getsockname()); fill.append(c)',
      '    except OSError: break',
      'print("full", flush=True)',
      'time.sleep(60)',
    ].join('\n')])
    const lines: string[] = []
    listener.stdout.on('data', (d: Buffer) => lines.push(...String(d).trim().split('\n')))
    while (!lines.includes('full')) await once(listener.stdout, 'data')
    const port = Number(lines[0])
    const hang = await controllable('h')
    hang.set('hang')
    const gw = await startGateway(`version: 1
services:
  dark:
    instances: [{ url: http://127.0.0.1:${port} }]
    connect_timeout_ms: 100
    timeout_ms: 5000
  slow:
    instances: [{ url: ${hang.url} }]
    timeout_ms: 150
routes:
  - { name: dark, service_name: dark, methods: [GET], path: /dark, upstream_path: / }
  - { name: slow, service_name: slow, methods: [GET], path: /slow, upstream_path: / }
`)
    try {
      const started = Date.now()
      const dark = await request(gw.url).get('/dark')
      expect(dark.status).toBe(502)
      expect(dark.body.error_code).toBe('UpstreamUnreachable')
      expect(Date.now() - started).toBeLessThan(2000)
      expect(dark.text).not.toContain(String(port))
      const slow = await request(gw.url).get('/slow')
      expect(slow.status).toBe(504)
      expect(slow.body.error_code).toBe('UpstreamTimeout')
      expect(slow.text).not.toContain(String(hang.port))
    } finally { await gw.close(); await hang.close(); listener.kill('SIGKILL') }
  })
})

test('an exception_handler module replaces the default degradation', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-eh-'))
  fs.mkdirSync(path.join(dir, 'pipes'))
  fs.writeFileSync(path.join(dir, 'pipes', 'cached.ts'), `import { defineExceptionHandler } from 'sluice'
export default defineExceptionHandler({
  handle (error, ctx) {
    if (error.code === 'NoHealthyInstance') return // the default answers this one
    ctx.respond(200, { items: ['cached'], degraded: true, reason: error.code })
  },
})
`)
  fs.writeFileSync(path.join(dir, 'pipes', 'thrower.js'), `module.exports = { handle () { throw new Error('handler bug') } }`)
  const gw = await startGateway(`version: 1
services:
  api:
    instances: [{ url: http://127.0.0.1:${await closedPort()} }]
    exception_handler: ./pipes/cached.ts
  other:
    instances: [{ url: http://127.0.0.1:${await closedPort()} }]
    exception_handler: ./pipes/thrower.js
routes:
  - { name: r, service_name: api, methods: [GET], path: /r, upstream_path: /r }
  - { name: o, service_name: other, methods: [GET], path: /o, upstream_path: /o }
`, {}, path.join(dir, 'routes.yaml'))
  try {
    const res = await request(gw.url).get('/r')
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ items: ['cached'], degraded: true, reason: 'UpstreamUnreachable' })
    const next = await request(gw.url).get('/r') // the instance is ejected now
    expect(next.status).toBe(503)
    expect(next.body.error_code).toBe('NoHealthyInstance')
    const thrown = await request(gw.url).get('/o')
    expect(thrown.status).toBe(502)
    expect(thrown.body.error_code).toBe('UpstreamUnreachable')
  } finally { await gw.close(); fs.rmSync(dir, { recursive: true, force: true }) }
})
