/**
 * `sluice start --workers 2` (operations.md "Scale"), through the spawned CLI:
 * the workers share one rate-limit count and one /metrics, reloads reach
 * both, a killed worker is replaced, and SIGTERM ends them all with exit 0.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import http from 'node:http'
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { once } from 'node:events'
import type { AdminInstance, AdminService } from '../src/admin/types'
import { mergeServices } from '../src/server/cluster'
import { closedPort, startUpstream, type Upstream } from './support/upstream'
import { parse, value } from './support/prometheus'

jest.setTimeout(30_000)

const BIN = path.join(__dirname, '..', 'bin', 'sluice.js')

/** A GET on a connection of its own, so cluster's round robin spreads requests over the workers. */
function get (url: string, init: { method?: string } = {}): Promise<{ status: number, body: string, requestId: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { agent: false, method: init.method ?? 'GET' }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { body += d })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, requestId: String(res.headers['x-request-id']) }))
    })
    req.on('error', reject)
    req.end()
  })
}

/** Request ids are `<process prefix>-<counter>`: the prefix tells which worker answered. */
const workerOf = (requestId: string): string => requestId.slice(0, requestId.lastIndexOf('-'))

describe('two workers', () => {
  let up: Upstream
  let up2: Upstream
  let child: ChildProcessWithoutNullStreams
  let out = ''
  let dir: string
  let url: string
  let admin: string
  const config = (target: string, instances = [up.url]): string => `version: 1
server: { host: 127.0.0.1, port: ${port}, workers: 2, shutdown_timeout_ms: 3000 }
admin: { host: 127.0.0.1, port: 0 }
services:
  api: { instances: [${instances.map(u => `{ url: ${u} }`).join(', ')}] }
routes:
  - name: limited
    service_name: api
    methods: [GET]
    path: /limited
    upstream_path: /limited
    pipelines: { inbound: [{ name: rate-limit, properties: { limit: 10, window_s: 3600 } }] }
  - { name: open, service_name: api, methods: [GET], path: /open, upstream_path: ${target} }
`
  let port = 0

  const until = async (check: () => boolean | Promise<boolean>, what: string): Promise<void> => {
    for (let i = 0; i < 200; i++) { if (await check()) return; await new Promise(resolve => setTimeout(resolve, 50)) }
    throw new Error(`${what}: not reached; output:\n${out}`)
  }
  const readyPids = (): number[] => [...out.matchAll(/"event":"worker","pid":(\d+),"state":"ready"/g)].map(m => Number(m[1]))
  const scrape = async (): Promise<ReturnType<typeof parse>> => parse((await get(`${admin}/metrics`)).body)

  beforeAll(async () => {
    up = await startUpstream((req, res) => { res.end(req.url) })
    up2 = await startUpstream((req, res) => { res.end(`second ${req.url}`) })
    port = await closedPort()
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-cluster-'))
    fs.writeFileSync(path.join(dir, 'routes.yaml'), config('/one'))
    child = spawn(process.execPath, [BIN, 'start', '-c', 'routes.yaml', '--no-watch'], { cwd: dir })
    child.stdout.on('data', (d: Buffer) => { out += String(d) })
    child.stderr.on('data', (d: Buffer) => { out += String(d) })
    await until(() => /"event":"listening"[^\n]*"workers":2/.test(out) && /"event":"admin"[^\n]*"port":\d+/.test(out), 'cluster up')
    url = `http://127.0.0.1:${port}`
    admin = `http://127.0.0.1:${Number(/"event":"admin"[^\n]*"port":(\d+)/.exec(out)?.[1])}`
  })
  afterAll(async () => {
    if (child.exitCode === null) child.kill('SIGKILL')
    await up.close()
    await up2.close()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  test('a limit of 10 lets exactly 10 through across both workers, and /metrics counts both', async () => {
    const answers = await Promise.all(Array.from({ length: 30 }, () => get(`${url}/limited`)))
    expect(answers.filter(a => a.status === 200)).toHaveLength(10)
    expect(answers.filter(a => a.status === 429)).toHaveLength(20)
    expect(new Set(answers.map(a => workerOf(a.requestId))).size).toBe(2)
    await until(async () => value(await scrape(), 'sluice_rate_limited_total', { route: 'limited' }) === 20, 'rate-limited count')
    const exp = await scrape()
    expect(value(exp, 'sluice_http_requests_total', { route: 'limited', service: 'api', method: 'GET', status_class: '2xx', source: 'upstream' })).toBe(10)
    expect(value(exp, 'sluice_http_requests_total', { route: 'limited', status_class: '4xx', source: 'gateway' })).toBe(20)
    expect(value(exp, 'sluice_http_request_duration_seconds_count', { route: 'limited', service: 'api' })).toBe(30)
    // One config for both: the generation is 1, not the sum over workers.
    expect(value(exp, 'sluice_config_generation')).toBe(1)
    expect(exp.samples.some(s => s.name === 'process_cpu_user_seconds_total')).toBe(true)
  })

  test('POST /admin/reload reaches every worker', async () => {
    fs.writeFileSync(path.join(dir, 'routes.yaml'), config('/two'))
    const res = await get(`${admin}/admin/reload`, { method: 'POST' })
    expect(res.status).toBe(200)
    expect(JSON.parse(res.body)).toEqual({ generation: 2 })
    const answers = await Promise.all(Array.from({ length: 12 }, () => get(`${url}/open`)))
    expect(new Set(answers.map(a => workerOf(a.requestId))).size).toBe(2)
    expect(answers.map(a => a.body)).toEqual(Array(12).fill('/two'))
    const routes = JSON.parse((await get(`${admin}/admin/routes`)).body) as Array<{ name: string, upstream_path: string }>
    expect(routes.find(r => r.name === 'open')?.upstream_path).toBe('/two')
    expect(value(await scrape(), 'sluice_config_generation')).toBe(2)
  })

  test('an invalid file: 422 with its errors from the workers, both keep serving the old config', async () => {
    fs.writeFileSync(path.join(dir, 'routes.yaml'), 'version: 1\nroutes: [ {')
    const res = await get(`${admin}/admin/reload`, { method: 'POST' })
    expect(res.status).toBe(422)
    expect((JSON.parse(res.body) as { errors: string[] }).errors[0]).toMatch(/routes\.yaml:\d+:\d+/)
    const answers = await Promise.all(Array.from({ length: 8 }, () => get(`${url}/open`)))
    expect(answers.map(a => a.body)).toEqual(Array(8).fill('/two'))
    fs.writeFileSync(path.join(dir, 'routes.yaml'), config('/two'))
  })

  test('a killed worker is replaced and the new one serves the current generation', async () => {
    const [victim] = readyPids()
    process.kill(victim, 'SIGKILL')
    await until(() => readyPids().length === 3, 'replacement ready')
    expect(out).toMatch(new RegExp(`"event":"worker","pid":${victim},"state":"exited"`))
    const answers = await Promise.all(Array.from({ length: 12 }, () => get(`${url}/open`)))
    expect(answers.map(a => a.status)).toEqual(Array(12).fill(200))
    expect(answers.map(a => a.body)).toEqual(Array(12).fill('/two'))
    expect(new Set(answers.map(a => workerOf(a.requestId))).size).toBe(2)
  })

  test('a drained instance stays drained in a replacement worker after a reload moved it in the file', async () => {
    const reload = async (instances: string[], generation: number): Promise<void> => {
      fs.writeFileSync(path.join(dir, 'routes.yaml'), config('/two', instances))
      expect(JSON.parse((await get(`${admin}/admin/reload`, { method: 'POST' })).body)).toEqual({ generation })
    }
    await reload([up.url, up2.url], 3)
    expect((await get(`${admin}/admin/services/api/instances/api-1/drain`, { method: 'POST' })).status).toBe(200)
    // The drained instance (up2) is first in the file now: its id is api-0.
    await reload([up2.url, up.url], 4)
    const [victim] = readyPids().slice(-2)
    process.kill(victim, 'SIGKILL')
    await until(() => readyPids().length === 4, 'replacement ready')
    const answers = await Promise.all(Array.from({ length: 16 }, () => get(`${url}/open`)))
    expect(new Set(answers.map(a => workerOf(a.requestId))).size).toBe(2)
    expect(answers.map(a => a.body)).toEqual(Array(16).fill('/two'))
  })

  test('a port change on reload moves every worker to the new port; the old one stops accepting', async () => {
    const before = url
    port = await closedPort()
    fs.writeFileSync(path.join(dir, 'routes.yaml'), config('/two'))
    expect(JSON.parse((await get(`${admin}/admin/reload`, { method: 'POST' })).body)).toEqual({ generation: 5 })
    url = `http://127.0.0.1:${port}`
    const answers = await Promise.all(Array.from({ length: 12 }, () => get(`${url}/open`)))
    expect(answers.map(a => a.body)).toEqual(Array(12).fill('/two'))
    expect(new Set(answers.map(a => workerOf(a.requestId))).size).toBe(2)
    await until(() => get(`${before}/open`).then(() => false, (err: NodeJS.ErrnoException) => err.code === 'ECONNREFUSED'), 'old port closed')
  })

  test('SIGTERM drains every worker and the primary exits 0', async () => {
    const pids = readyPids().slice(-2)
    child.kill('SIGTERM')
    const [code] = await once(child, 'exit') as [number | null]
    expect(code).toBe(0)
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow()
  })
})

test('/admin/services in a cluster: in-flight counts add up; health and breaker are the worst any worker sees', () => {
  const instance = (health: 'healthy' | 'unhealthy' | 'drained', inflight: number): AdminInstance =>
    ({ id: 'api-0', url: 'http://a', weight: 1, labels: [], health, drained: health === 'drained', inflight, source: 'static' })
  const view = (breaker: AdminService['breaker'], health: 'healthy' | 'unhealthy' | 'drained', inflight: number): AdminService[] =>
    [{ name: 'api', balancer: 'round-robin', breaker, instances: [instance(health, inflight)] }]
  const [merged] = mergeServices([view('closed', 'healthy', 2), view('open', 'unhealthy', 3), view('half_open', 'healthy', 0)])
  expect(merged.breaker).toBe('open')
  expect(merged.instances[0]).toMatchObject({ health: 'unhealthy', inflight: 5 })
  expect(mergeServices([view(null, 'healthy', 1), view(null, 'drained', 1)])[0]).toMatchObject({ breaker: null, instances: [{ health: 'drained', inflight: 2 }] })
  expect(mergeServices([])).toEqual([])
})
