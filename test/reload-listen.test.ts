/**
 * Hot reload of the listener itself (operations.md "Hot reload"): a port the
 * file moves is bound anew before the old one drains, and TLS files are read
 * again so a certificate renewed in place is served without a restart.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import http from 'node:http'
import tls from 'node:tls'
import { X509Certificate } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { once } from 'node:events'
import net, { type AddressInfo } from 'node:net'
import { loadConfigText } from '../src/config'
import { createGateway, type Gateway } from '../src/gateway'
import { closedPort, startUpstream, type Upstream } from './support/upstream'

let dir: string
const file = (name: string): string => path.join(dir, name)

/** Two different self-signed certificates for 127.0.0.1, "first" and "second". */
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-reload-listen-'))
  for (const name of ['first', 'second']) {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '1', '-subj', `/CN=${name}`, '-addext', 'subjectAltName=IP:127.0.0.1'],
    { cwd: dir, stdio: 'ignore' })
  }
})
afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }) })

const fingerprint = (name: string): string => new X509Certificate(fs.readFileSync(file(`${name}.pem`))).fingerprint256

function configText (upstream: string, server: string): string {
  return `version: 1
server: ${server}
services:
  api:
    instances: [{ url: ${upstream} }]
routes:
  - { name: r, service_name: api, methods: [GET], path: /r, upstream_path: /r }
  - { name: slow, service_name: api, methods: [GET], path: /slow, upstream_path: /slow }
`
}

/** A gateway whose reloads read `text.current`, listening on port 0 as the caller's choice. */
async function startReloadable (text: { current: string }): Promise<Gateway> {
  const routes = file('routes.yaml')
  const gateway = createGateway({ config: loadConfigText(text.current, routes), loadConfig: () => loadConfigText(text.current, routes) })
  await gateway.listen({ port: 0, host: '127.0.0.1' })
  return gateway
}

/** A GET on a connection of its own (no keep-alive agent to hide a refused connect). */
function get (port: number, target: string): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: target, agent: false }, (res) => {
      let body = ''
      res.on('data', (c) => { body += String(c) })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    }).on('error', reject)
  })
}

/** A TLS connection to the gateway; the caller ends it. */
async function tlsConnect (port: number): Promise<tls.TLSSocket> {
  const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false })
  await once(socket, 'secureConnect')
  return socket
}

/** One HTTP/1.1 request written on an open TLS connection, kept alive; resolves with the response text. */
async function requestOn (socket: tls.TLSSocket, target: string): Promise<string> {
  socket.write(`GET ${target} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n`)
  let text = ''
  while (!/\r\n\r\n[\s\S]*ok$/.test(text)) text += String((await once(socket, 'data'))[0])
  return text
}

/** An upstream answering "ok", and holding /slow until `release()`. */
async function slowUpstream (): Promise<Upstream & { arrived: Promise<void>, release (): void }> {
  let arrived!: () => void
  let release!: () => void
  const arrivedP = new Promise<void>((resolve) => { arrived = resolve })
  const released = new Promise<void>((resolve) => { release = resolve })
  const up = await startUpstream((req, res) => {
    if (req.url !== '/slow') { res.end('ok'); return }
    arrived()
    void released.then(() => res.end('slow ok'))
  })
  return Object.assign(up, { arrived: arrivedP, release })
}

test('a port change in the file rebinds: the new port serves, the old refuses, a request in flight on the old one finishes', async () => {
  const up = await slowUpstream()
  const [first, second] = [await closedPort(), await closedPort()]
  const text = { current: configText(up.url, `{ host: 127.0.0.1, port: ${first} }`) }
  const gateway = await startReloadable(text)
  try {
    const old = (gateway.address as AddressInfo).port
    const inflight = get(old, '/slow')
    await up.arrived
    text.current = configText(up.url, `{ host: 127.0.0.1, port: ${second} }`)
    expect(await gateway.reload()).toEqual({ ok: true, generation: 2 })
    expect(gateway.address?.port).toBe(second)
    expect(await get(second, '/r')).toEqual({ status: 200, body: 'ok' })
    await expect(get(old, '/r')).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    up.release()
    expect(await inflight).toEqual({ status: 200, body: 'slow ok' })
  } finally { up.release(); await gateway.close(); await up.close() }
})

test('a port given to listen() stays through reloads that leave the file\'s port alone', async () => {
  const up = await startUpstream((_req, res) => { res.end('ok') })
  const text = { current: configText(up.url, `{ host: 127.0.0.1, port: ${await closedPort()} }`) }
  const gateway = await startReloadable(text)
  try {
    const port = (gateway.address as AddressInfo).port
    text.current = text.current.replace('path: /r,', 'path: /moved,')
    expect((await gateway.reload()).ok).toBe(true)
    expect(gateway.address?.port).toBe(port)
    expect(await get(port, '/moved')).toEqual({ status: 200, body: 'ok' })
  } finally { await gateway.close(); await up.close() }
})

test('a new port already taken fails the reload, naming the address; the old port and generation keep serving', async () => {
  const up = await startUpstream((_req, res) => { res.end('ok') })
  const squatter = http.createServer()
  await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve))
  const taken = (squatter.address() as AddressInfo).port
  const text = { current: configText(up.url, `{ host: 127.0.0.1, port: ${await closedPort()} }`) }
  const gateway = await startReloadable(text)
  try {
    const old = (gateway.address as AddressInfo).port
    text.current = configText(up.url, `{ host: 127.0.0.1, port: ${taken} }`)
    const result = await gateway.reload()
    expect(result.ok).toBe(false)
    if (result.ok) return
    expect(result.errors).toEqual([expect.stringMatching(new RegExp(`routes\\.yaml:\\d+:\\d+ server\\.port: cannot listen on 127\\.0\\.0\\.1:${taken}: the port is in use`))])
    expect(gateway.generationNumber).toBe(1)
    expect(gateway.address?.port).toBe(old)
    expect(await get(old, '/r')).toEqual({ status: 200, body: 'ok' })
  } finally { await gateway.close(); await up.close(); squatter.close() }
})

test('a certificate renewed in place is served to new TLS connections; a connection opened before keeps working', async () => {
  const up = await startUpstream((_req, res) => { res.end('ok') })
  fs.copyFileSync(file('first.pem'), file('cert.pem'))
  fs.copyFileSync(file('first.key'), file('cert.key'))
  const text = { current: configText(up.url, `{ host: 127.0.0.1, tls: { cert: ${file('cert.pem')}, key: ${file('cert.key')} } }`) }
  const gateway = await startReloadable(text)
  const port = (gateway.address as AddressInfo).port
  const before = await tlsConnect(port)
  let after: tls.TLSSocket | undefined
  try {
    expect(before.getPeerCertificate().fingerprint256).toBe(fingerprint('first'))
    fs.copyFileSync(file('second.pem'), file('cert.pem'))
    fs.copyFileSync(file('second.key'), file('cert.key'))
    expect((await gateway.reload()).ok).toBe(true)
    after = await tlsConnect(port)
    expect(after.getPeerCertificate().fingerprint256).toBe(fingerprint('second'))
    expect(await requestOn(before, '/r')).toMatch(/^HTTP\/1\.1 200 /)
    expect(gateway.address?.port).toBe(port)
  } finally { before.destroy(); after?.destroy(); await gateway.close(); await up.close() }
})

test('a certificate file gone fails the reload, naming the file; the old certificate is still served', async () => {
  const up = await startUpstream((_req, res) => { res.end('ok') })
  fs.copyFileSync(file('first.pem'), file('gone.pem'))
  fs.copyFileSync(file('first.key'), file('gone.key'))
  const text = { current: configText(up.url, `{ host: 127.0.0.1, tls: { cert: ${file('gone.pem')}, key: ${file('gone.key')} } }`) }
  const gateway = await startReloadable(text)
  const port = (gateway.address as AddressInfo).port
  let socket: tls.TLSSocket | undefined
  try {
    fs.rmSync(file('gone.pem'))
    const result = await gateway.reload()
    expect(result.ok).toBe(false)
    if (result.ok) return
    expect(result.errors).toEqual([expect.stringMatching(/routes\.yaml:\d+:\d+ server\.tls\.cert: cannot read .*gone\.pem: ENOENT$/)])
    expect(result.errors[0]).toContain(file('gone.pem'))
    expect(gateway.generationNumber).toBe(1)
    socket = await tlsConnect(port)
    expect(socket.getPeerCertificate().fingerprint256).toBe(fingerprint('first'))
    expect(await requestOn(socket, '/r')).toMatch(/^HTTP\/1\.1 200 /)
  } finally { socket?.destroy(); await gateway.close(); await up.close() }
})

test('turning TLS on at the same host:port replaces the listener on that port; a request in flight on the plain one finishes', async () => {
  const up = await slowUpstream()
  const port = await closedPort()
  const routes = file('routes.yaml')
  const text = { current: configText(up.url, `{ host: 127.0.0.1, port: ${port} }`) }
  const gateway = createGateway({ config: loadConfigText(text.current, routes), loadConfig: () => loadConfigText(text.current, routes) })
  await gateway.listen()
  let socket: tls.TLSSocket | undefined
  try {
    const inflight = get(port, '/slow')
    await up.arrived
    text.current = configText(up.url, `{ host: 127.0.0.1, port: ${port}, tls: { cert: ${file('first.pem')}, key: ${file('first.key')} } }`)
    expect((await gateway.reload()).ok).toBe(true)
    expect(gateway.address?.port).toBe(port)
    socket = await tlsConnect(port)
    expect(socket.getPeerCertificate().fingerprint256).toBe(fingerprint('first'))
    expect(await requestOn(socket, '/r')).toMatch(/^HTTP\/1\.1 200 /)
    up.release()
    expect(await inflight).toEqual({ status: 200, body: 'slow ok' })
  } finally { up.release(); socket?.destroy(); await gateway.close(); await up.close() }
})

test('changed server.limits apply to the running listener: a reload shortens the keep-alive of idle connections', async () => {
  const up = await startUpstream()
  const text = { current: configText(up.url, '{ limits: { keep_alive_timeout_ms: 60000 } }') }
  const gateway = await startReloadable(text)
  const port = (gateway.address as AddressInfo).port
  /** How long an idle keep-alive connection stays open after one request, up to `waitMs`. */
  const idleLife = async (waitMs: number): Promise<number> => {
    const socket = net.connect(port, '127.0.0.1')
    await once(socket, 'connect')
    socket.write('GET /r HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n')
    await once(socket, 'data')
    const answeredAt = Date.now()
    const closed = once(socket, 'close').then(() => Date.now() - answeredAt)
    let timer: NodeJS.Timeout | undefined
    const life = await Promise.race([closed, new Promise<number>((resolve) => { timer = setTimeout(() => resolve(Infinity), waitMs) })])
    clearTimeout(timer)
    socket.destroy()
    return life
  }
  try {
    expect(await idleLife(600)).toBe(Infinity)
    text.current = configText(up.url, '{ limits: { keep_alive_timeout_ms: 150 } }')
    expect(await gateway.reload()).toEqual({ ok: true, generation: 2 })
    expect((gateway.address as AddressInfo).port).toBe(port) // not rebound
    expect(await idleLife(3000)).toBeLessThan(1500)
  } finally { await gateway.close(); await up.close() }
})
