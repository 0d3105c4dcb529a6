/** Hot reload: an atomic swap under load, invalid files changing nothing, old generations disposed. */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import http from 'node:http'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import request from 'supertest'
import { loadConfigFile } from '../src/config'
import { createGateway } from '../src/gateway'
import { createPipeCatalog } from '../src/pipes/catalog'
import { closedPort, startUpstream } from './support/upstream'

function configText (upstream: string, extra: string): string {
  return `version: 1
services:
  api:
    instances: [{ url: ${upstream} }]
    health_check: { path: /healthz, interval_ms: 50 }
    circuit_breaker: { volume_threshold: 50 }
routes:
  - { name: main, service_name: api, methods: [GET], path: "/items/<id>", upstream_path: "/v1/items/<id>" }
${extra}`
}

test('a reload storm under load: 20 reloads, half invalid, no failed or misrouted request, nothing leaked', async () => {
  const up = await startUpstream((req, res) => { res.end(req.url) })
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-reload-'))
  const file = path.join(dir, 'routes.yaml')
  fs.writeFileSync(file, configText(up.url, ''))
  const load = (): ReturnType<typeof loadConfigFile> => loadConfigFile(file, { pipes: (pipesDir) => createPipeCatalog({ pipesDir }) })
  const gateway = createGateway({ config: load(), loadConfig: load })
  const { port } = await gateway.listen({ port: 0, host: '127.0.0.1' }) as AddressInfo
  const agent = new http.Agent({ keepAlive: true, maxSockets: 10 })
  const get = (id: number): Promise<[number, string]> => new Promise((resolve) => {
    http.get(`http://127.0.0.1:${port}/items/${id}`, { agent }, (res) => {
      let body = ''
      res.on('data', (c) => { body += String(c) })
      res.on('end', () => resolve([res.statusCode ?? 0, body]))
    }).on('error', (err) => resolve([-1, err.message]))
  })
  const before = process.getActiveResourcesInfo().length
  try {
    let stop = false
    let sent = 0
    const problems: string[] = []
    const client = async (): Promise<void> => {
      while (!stop || sent < 2000) {
        const id = ++sent
        const [status, body] = await get(id)
        if (status !== 200 || body !== `/v1/items/${id}`) problems.push(`${id}: ${status} ${body}`)
        if (sent >= 6000) break
      }
    }
    const clients = Promise.all(Array.from({ length: 10 }, client))
    const results: boolean[] = []
    for (let i = 0; i < 20; i++) {
      fs.writeFileSync(file, i % 2 === 0
        ? configText(up.url, `  - { name: extra${i}, service_name: api, methods: [GET], path: "/extra${i}", upstream_path: "/x" }\n`)
        : 'version: 1\nroutes: [ this is not yaml')
      results.push((await gateway.reload()).ok)
      await new Promise(resolve => setTimeout(resolve, 15))
    }
    stop = true
    await clients
    expect(problems).toEqual([])
    expect(results).toEqual(Array.from({ length: 20 }, (_, i) => i % 2 === 0))
    expect(gateway.generationNumber).toBe(11)
    expect(gateway.generation.routes.map(r => r.name)).toEqual(['main', 'extra18'])
    // An invalid file changed nothing: the last valid config still serves.
    expect((await request(`http://127.0.0.1:${port}`).get('/extra18')).status).toBe(200)
  } finally {
    agent.destroy()
    await gateway.close()
    await up.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
  // The replaced generations' health checks, breakers and pools are gone.
  await new Promise(resolve => setTimeout(resolve, 100))
  expect(process.getActiveResourcesInfo().length).toBeLessThanOrEqual(before + 2)
}, 60_000)

test('an invalid reload reports every error with its position and keeps the old config', async () => {
  const up = await startUpstream()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-reload-'))
  const file = path.join(dir, 'routes.yaml')
  fs.writeFileSync(file, configText(up.url, ''))
  const load = (): ReturnType<typeof loadConfigFile> => loadConfigFile(file, { pipes: (pipesDir) => createPipeCatalog({ pipesDir }) })
  const gateway = createGateway({ config: load(), loadConfig: load })
  try {
    fs.writeFileSync(file, configText(up.url, '  - { name: bad, service_name: nope, methods: [GET], path: "/b", upstream_pth: "/b" }\n'))
    const result = await gateway.reload()
    expect(result.ok).toBe(false)
    if (result.ok) return
    expect(result.errors.length).toBeGreaterThanOrEqual(2)
    for (const line of result.errors) expect(line).toMatch(/routes\.yaml:\d+:\d+ \S+: /)
    expect(gateway.generationNumber).toBe(1)
  } finally { await gateway.close(); await up.close(); fs.rmSync(dir, { recursive: true, force: true }) }
})

test('sluice start reloads on SIGHUP and when the file changes', async () => {
  const up = await startUpstream((req, res) => { res.end(req.url) })
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-reload-'))
  const file = path.join(dir, 'routes.yaml')
  const port = await closedPort()
  const text = (target: string): string => `version: 1
server: { host: 127.0.0.1, port: ${port} }
admin: { port: 0 }
services:
  api:
    instances: [{ url: ${up.url} }]
routes:
  - { name: r, service_name: api, methods: [GET], path: /r, upstream_path: ${target} }
`
  fs.writeFileSync(file, text('/one'))
  const child = spawn(process.execPath, [path.join(__dirname, '..', 'bin', 'sluice.js'), 'start', '-c', file], { cwd: dir })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += String(d) })
  const fetchBody = async (): Promise<string> => (await request(`http://127.0.0.1:${port}`).get('/r')).text
  const until = async (check: () => Promise<boolean>): Promise<void> => {
    for (let i = 0; i < 100; i++) { if (await check()) return; await new Promise(resolve => setTimeout(resolve, 50)) }
    throw new Error(`not reached; output:\n${out}`)
  }
  try {
    while (!out.includes('"event":"listening"')) await once(child.stdout, 'data')
    expect(await fetchBody()).toBe('/one')
    fs.writeFileSync(file, text('/two'))
    await until(async () => (await fetchBody()) === '/two')
    // Written without the watcher noticing: only the signal reloads it.
    child.kill('SIGHUP')
    fs.writeFileSync(file, text('/three'))
    child.kill('SIGHUP')
    await until(async () => (await fetchBody()) === '/three')
    // Log lines go out in batches (at most 100 ms late).
    await until(async () => /"event":"reload","result":"success"/.test(out))
  } finally {
    child.kill('SIGKILL')
    await up.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('sluice start: a reload that moves the admin port rebinds the admin listener', async () => {
  const up = await startUpstream()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-reload-'))
  const file = path.join(dir, 'routes.yaml')
  const [first, second] = [await closedPort(), await closedPort()]
  const text = (adminPort: number): string => `version: 1
server: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: ${adminPort} }
services: { api: { instances: [{ url: ${up.url} }] } }
routes: [{ name: r, service_name: api, methods: [GET], path: /r, upstream_path: /r }]
`
  fs.writeFileSync(file, text(first))
  const child = spawn(process.execPath, [path.join(__dirname, '..', 'bin', 'sluice.js'), 'start', '-c', file, '--no-watch'], { cwd: dir })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += String(d) })
  const healthz = async (port: number): Promise<number | string> => {
    try { return (await request(`http://127.0.0.1:${port}`).get('/healthz')).status } catch (e) { return (e as NodeJS.ErrnoException).code ?? 'error' }
  }
  try {
    while (!out.includes('"event":"admin"')) await once(child.stdout, 'data')
    expect(await healthz(first)).toBe(200)
    fs.writeFileSync(file, text(second))
    child.kill('SIGHUP')
    for (let i = 0; i < 100 && await healthz(second) !== 200; i++) await new Promise(resolve => setTimeout(resolve, 50))
    expect(await healthz(second)).toBe(200)
    expect(await healthz(first)).toBe('ECONNREFUSED')
  } finally {
    child.kill('SIGKILL')
    await up.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
