/** Failure modes of the forwarding itself: aborts by the thousand, broken upstreams. */
import http from 'node:http'
import net from 'node:net'
import type { AddressInfo, Socket } from 'node:net'
import request from 'supertest'
import { startUpstream } from './support/upstream'
import { startGateway } from './support/gateway'

const config = (url: string): string => `
version: 1
services:
  api:
    instances: [{ url: ${url} }]
routes:
  - { name: all, service_name: api, methods: [GET], path: "/api/<path:rest>", upstream_path: "/<rest>" }
`

test('10,000 client aborts mid-stream leave no upstream request, socket or handle behind', async () => {
  // Each request streams forever until the client goes away.
  let open = 0
  const up = await startUpstream((req, res) => {
    if (req.url === '/after') { res.end('ok'); return }
    open++
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write('data: x\n\n')
    res.on('close', () => { open-- })
  })
  const upstreamSockets = new Set<Socket>()
  up.server.on('connection', (s) => { upstreamSockets.add(s); s.on('close', () => upstreamSockets.delete(s)) })
  const gw = await startGateway(config(up.url))
  const instance = gw.gateway.generation.services.get('api')!.instances[0]
  try {
    const before = process.getActiveResourcesInfo().length
    const agent = new http.Agent({ keepAlive: false })
    const one = (): Promise<void> => new Promise((resolve, reject) => {
      const req = http.get(`${gw.url}/api/stream`, { agent }, (res) => {
        res.once('data', () => { req.destroy(); resolve() })
      })
      req.on('error', (err) => { if (!req.destroyed) reject(err) })
      req.setTimeout(5000, () => reject(new Error('request stalled')))
    })
    const total = 10_000
    let started = 0
    const worker = async (): Promise<void> => { while (started < total) { started++; await one() } }
    await Promise.all(Array.from({ length: 25 }, worker))
    // Everything the aborts started must wind down by itself.
    for (let i = 0; i < 200 && (open > 0 || instance.inflight > 0); i++) await new Promise(resolve => setTimeout(resolve, 25))
    expect(open).toBe(0)
    expect(instance.inflight).toBe(0)
    expect(upstreamSockets.size).toBe(0)
    expect(process.getActiveResourcesInfo().length).toBeLessThanOrEqual(before + 5)
    expect((await request(gw.url).get('/api/after')).status).toBe(200)
  } finally { await gw.close(); await up.close() }
}, 120_000)

test('an upstream that answers garbage is a 502, and the gateway keeps serving', async () => {
  const garbage = net.createServer((socket) => socket.once('data', () => socket.end('HTTP/1.1 200 OK\r\nBad Header Name: x\r\n\r\n')))
  await new Promise<void>((resolve) => garbage.listen(0, '127.0.0.1', resolve))
  const gw = await startGateway(config(`http://127.0.0.1:${(garbage.address() as AddressInfo).port}`))
  try {
    const res = await request(gw.url).get('/api/x')
    expect(res.status).toBe(502)
    expect(res.body.error_code).toBe('UpstreamUnreachable')
    expect(res.text).not.toMatch(/HPE_|Bad Header/)
    const again = await request(gw.url).get('/api/y')
    expect(again.status).toBe(502)
  } finally { await gw.close(); await new Promise((resolve) => garbage.close(resolve)) }
})

test('an upstream that closes the connection without answering is a 502', async () => {
  const rude = net.createServer((socket) => socket.once('data', () => socket.destroy()))
  await new Promise<void>((resolve) => rude.listen(0, '127.0.0.1', resolve))
  const gw = await startGateway(config(`http://127.0.0.1:${(rude.address() as AddressInfo).port}`))
  try {
    const res = await request(gw.url).get('/api/x')
    expect(res.status).toBe(502)
    expect(res.body.error_code).toBe('UpstreamUnreachable')
  } finally { await gw.close(); await new Promise((resolve) => rude.close(resolve)) }
})
