/** The CLI as users run it: a spawned `bin/sluice.js`, its output and exit codes. */
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import http from 'node:http'
import { once } from 'node:events'
import { closedPort, startUpstream, type Upstream } from './support/upstream'

const BIN = path.join(__dirname, '..', 'bin', 'sluice.js')
let dir: string
let upstream: Upstream

function write (name: string, text: string): string {
  const file = path.join(dir, name)
  fs.writeFileSync(file, text)
  return file
}

function sluice (...args: string[]): { status: number | null, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', cwd: dir, env: { ...process.env, LOG_LEVEL: 'warn' } })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

const GOOD = (url: string, port = 0): string => `version: 1
server: { host: 127.0.0.1, port: ${port} }
admin: { port: 0 }
services:
  users:
    instances: [{ url: ${url} }, { url: http://127.0.0.1:9 }]
routes:
  - name: user
    service_name: users
    methods: [GET]
    path: /users/<int:id>
    upstream_path: /v1/users/<id>
  - name: tenant-user
    service_name: users
    methods: [POST]
    path: /t/users/<id>
    upstream_path: /v1/<tenant>/users/<id>
`

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-cli-'))
  upstream = await startUpstream()
})
afterAll(async () => { await upstream.close(); fs.rmSync(dir, { recursive: true, force: true }) })

test('check: a valid file prints a summary and exits 0', () => {
  write('routes.yaml', GOOD(upstream.url))
  const r = sluice('check')
  expect(r.stderr).toBe('')
  expect(r.status).toBe(0)
  expect(r.stdout).toMatch(/^routes\.yaml: OK — 2 routes, 1 services/)
})

test('check: every error is printed as file:line:col path: message, exit 1', () => {
  const file = write('bad.yaml', `version: 1
services:
  users:
    instances: [{ url: http://127.0.0.1:1 }]
routes:
  - name: a
    service_name: user
    methods: [GET]
    path: /a
    upstream_path: /a
  - name: b
    service_name: users
    methods: [GET]
    path: /b
    upstream_paht: /b
`)
  const r = sluice('check', '-c', file)
  expect(r.status).toBe(1)
  const lines = r.stderr.trim().split('\n')
  expect(lines.length).toBeGreaterThanOrEqual(2)
  for (const line of lines) expect(line).toMatch(/^bad\.yaml:\d+:\d+ \S+: .+/)
  expect(r.stderr).toContain('bad.yaml:7:19 routes[0].service_name: service "user" is not declared (did you mean "users"?)')
  expect(r.stderr).toMatch(/bad\.yaml:15:5 routes\[1\]\.upstream_paht: unknown key "upstream_paht" \(did you mean "upstream_path"\?\)/)
})

test('check: SLUICE_CONFIG names the file when -c is absent', () => {
  const file = write('other.yaml', GOOD(upstream.url))
  const r = spawnSync(process.execPath, [BIN, 'check'], { encoding: 'utf8', cwd: dir, env: { ...process.env, SLUICE_CONFIG: file } })
  expect(r.status).toBe(0)
  expect(r.stdout).toContain('OK')
})

test('check: a missing file is a config error, exit 1', () => {
  const r = sluice('check', '-c', 'nope.yaml')
  expect(r.status).toBe(1)
  expect(r.stderr).toMatch(/^nope\.yaml:1:1/)
})

test('routes: prints the compiled route table', () => {
  write('routes.yaml', GOOD(upstream.url))
  const r = sluice('routes')
  expect(r.status).toBe(0)
  const [header, first] = r.stdout.split('\n')
  expect(header).toMatch(/^NAME\s+METHODS\s+PATH\s+UPSTREAM\s+SERVICE\s+PIPES$/)
  expect(first).toMatch(/^user\s+GET\s+\/users\/<int:id>\s+\/v1\/users\/<id>\s+users\s+-$/)
})

test('explain: route, params and the exact upstream URLs; nothing is sent', () => {
  write('routes.yaml', GOOD(upstream.url))
  const before = upstream.received.length
  const r = sluice('explain', 'GET', 'http://gw.example/users/42?x=1')
  expect(r.status).toBe(0)
  expect(r.stdout).toContain('route:    user (service users)')
  expect(r.stdout).toContain('params:   id="42"')
  expect(r.stdout).toContain(`upstream: ${upstream.url}/v1/users/42?x=1`)
  expect(r.stdout).toContain('http://127.0.0.1:9/v1/users/42?x=1')
  expect(upstream.received.length).toBe(before)
})

test('explain: -H supplies an upstream-only placeholder', () => {
  write('routes.yaml', GOOD(upstream.url))
  const r = sluice('explain', 'POST', '/t/users/5', '-H', 'Tenant: acme')
  expect(r.stdout).toContain(`upstream: ${upstream.url}/v1/acme/users/5`)
})

test('explain: a refusal shows the status and error_code the client would get', () => {
  write('routes.yaml', GOOD(upstream.url))
  expect(sluice('explain', 'DELETE', '/users/1').stdout).toContain('answer:   405 MethodNotAllowed')
  expect(sluice('explain', 'GET', '/nothing').stdout).toContain('answer:   404 RouteNotFound')
  expect(sluice('explain', 'POST', '/t/users/5').stdout).toContain('answer:   400 MissingParameter')
})

test('usage errors exit 1 with the usage on stderr', () => {
  const r = sluice('frobnicate')
  expect(r.status).toBe(1)
  expect(r.stderr).toContain('unknown command "frobnicate"')
  expect(sluice('explain', 'GET').status).toBe(1)
})

test('start: serves traffic, and exits 0 on SIGTERM', async () => {
  const port = await closedPort()
  write('routes.yaml', GOOD(upstream.url, port))
  const child = spawn(process.execPath, [BIN, 'start', '-c', 'routes.yaml', '--no-watch'], { cwd: dir, env: { ...process.env, LOG_LEVEL: 'info' } })
  try {
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += String(d) })
    while (!out.includes('"event":"listening"')) await once(child.stdout, 'data')
    const body = await new Promise<string>((resolve, reject) => {
      http.get(`http://127.0.0.1:${port}/users/3`, (res) => {
        let text = ''
        res.on('data', (c) => { text += String(c) })
        res.on('end', () => resolve(text))
      }).on('error', reject)
    })
    expect(JSON.parse(body).url).toBe('/v1/users/3')
    child.kill('SIGTERM')
    const [code] = await once(child, 'exit')
    expect(code).toBe(0)
  } finally { child.kill('SIGKILL') }
})

test('start: a port in use is exit 2 with one clear line', async () => {
  write('routes.yaml', GOOD(upstream.url, upstream.port))
  const child = spawn(process.execPath, [BIN, 'start', '--no-watch'], { cwd: dir })
  let err = ''
  child.stderr.on('data', (d: Buffer) => { err += String(d) })
  const [code] = await once(child, 'exit')
  expect(code).toBe(2)
  expect(err.trim()).toBe(`sluice: cannot listen on 127.0.0.1:${upstream.port}: the port is in use`)
})

test('start: custom pipes load from pipes_dir as .ts, .js, .mjs and .cjs', async () => {
  const pipesDir = path.join(dir, 'ext-pipes')
  fs.mkdirSync(pipesDir, { recursive: true })
  const body = (name: string): string => `{ name: '${name}', phase: 'inbound', create: () => (ctx) => { ctx.request.headers['x-${name}'] = 'ran' } }`
  fs.writeFileSync(path.join(pipesDir, 'p-ts.ts'), `import { definePipe } from 'sluice'\nexport default definePipe(${body('p-ts')})\n`)
  fs.writeFileSync(path.join(pipesDir, 'p-js.js'), `module.exports = ${body('p-js')}\n`)
  fs.writeFileSync(path.join(pipesDir, 'p-mjs.mjs'), `export default ${body('p-mjs')}\n`)
  fs.writeFileSync(path.join(pipesDir, 'p-cjs.cjs'), `module.exports = ${body('p-cjs')}\n`)
  const port = await closedPort()
  write('pipes.yaml', `version: 1
server: { host: 127.0.0.1, port: ${port} }
admin: { port: 0 }
pipes_dir: ./ext-pipes
services:
  users:
    instances: [{ url: ${upstream.url} }]
routes:
  - name: piped
    service_name: users
    methods: [GET]
    path: /piped
    upstream_path: /piped
    pipelines:
      inbound: [{ name: p-ts }, { name: p-js }, { name: p-mjs }, { name: p-cjs }]
`)
  expect(sluice('check', '-c', 'pipes.yaml').status).toBe(0)
  const child = spawn(process.execPath, [BIN, 'start', '-c', 'pipes.yaml', '--no-watch'], { cwd: dir })
  try {
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += String(d) })
    while (!out.includes('"event":"listening"')) await once(child.stdout, 'data')
    const received = await new Promise<string>((resolve, reject) => {
      http.get(`http://127.0.0.1:${port}/piped`, (res) => {
        let text = ''
        res.on('data', (c) => { text += String(c) })
        res.on('end', () => resolve(text))
      }).on('error', reject)
    })
    const headers = JSON.parse(received).headers
    for (const name of ['p-ts', 'p-js', 'p-mjs', 'p-cjs']) expect(headers[`x-${name}`]).toBe('ran')
  } finally { child.kill('SIGKILL') }
})

test('check: a pipe property error names the pipe\'s line and column, exit 1', () => {
  write('badpipe.yaml', `version: 1
services:
  users:
    instances: [{ url: http://127.0.0.1:1 }]
routes:
  - name: r
    service_name: users
    methods: [GET]
    path: /r
    upstream_path: /r
    pipelines:
      inbound:
        - name: rate-limit
          properties: { limit: 10, window_s: 60, algoritm: fixed-window }
`)
  const r = sluice('check', '-c', 'badpipe.yaml')
  expect(r.status).toBe(1)
  expect(r.stderr.trim()).toBe('badpipe.yaml:14:23 routes[0].pipelines.inbound[0].properties: pipe "rate-limit": unknown property "algoritm" (did you mean "algorithm"?)')
})

test('start: bad --workers and --log-format values are usage errors; a redis store is refused, not ignored', () => {
  write('routes.yaml', GOOD(upstream.url))
  for (const args of [['--workers', '0'], ['--workers', 'many'], ['--log-format', 'xml']]) {
    const r = sluice('start', ...args)
    expect(r.status).toBe(1)
    expect(r.stderr).toMatch(/^sluice: --(workers|log-format) /)
  }
  write('redis.yaml', GOOD(upstream.url).replace('version: 1\n', 'version: 1\nstore: { type: redis, url: "redis://127.0.0.1:6379" }\n'))
  const redis = sluice('start', '-c', 'redis.yaml')
  expect(redis.status).toBe(1)
  expect(redis.stderr).toContain('store.type redis is not available yet')
})

test('start --log-format pretty: lines for humans on stderr, access lines included; no JSON on stdout', async () => {
  const port = await closedPort()
  write('routes.yaml', GOOD(upstream.url, port))
  const child = spawn(process.execPath, [BIN, 'start', '-c', 'routes.yaml', '--no-watch', '--log-format', 'pretty'], { cwd: dir, env: { ...process.env, LOG_LEVEL: 'info' } })
  let out = ''
  let err = ''
  child.stdout.on('data', (d: Buffer) => { out += String(d) })
  child.stderr.on('data', (d: Buffer) => { err += String(d) })
  try {
    while (!err.includes('sluice is serving')) await once(child.stderr, 'data')
    await new Promise<void>((resolve, reject) => { http.get(`http://127.0.0.1:${port}/users/3`, (res) => { res.resume(); res.on('end', resolve) }).on('error', reject) })
    while (!/INFO.*request/.test(err)) await once(child.stderr, 'data')
    // pino-pretty's shape: "[time] LEVEL: message" then the fields indented, not a JSON object per line.
    expect(err).toMatch(/^\[[\d:.]+\] INFO: sluice is serving$/m)
    expect(err).toMatch(/^ {4}route: "user"$/m)
    expect(err).not.toMatch(/^\{"level"/m)
    expect(out).toBe('')
  } finally { child.kill('SIGKILL') }
})
