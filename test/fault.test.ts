/**
 * The fault test: two instances under a bounded load loop, one killed and
 * restarted mid-run. Only requests in flight on the killed instance may
 * fail, and nothing may crash or leave an unhandled rejection.
 */
import http from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { startGateway } from './support/gateway'

interface Instance { port: number, start (): Promise<void>, kill (): number, close (): Promise<void>, served: number }

/** A real instance that answers after a tick (so requests are in flight) and can die abruptly. */
async function killable (name: string): Promise<Instance> {
  const sockets = new Set<Socket>()
  let inFlight = 0
  const state = { served: 0 }
  const server = http.createServer((_req, res) => {
    inFlight++
    setTimeout(() => { inFlight--; state.served++; res.end(name) }, 2)
  })
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    port,
    get served () { return state.served },
    start: () => new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve)),
    kill () {
      const dying = inFlight
      server.close()
      for (const s of sockets) s.destroy()
      inFlight = 0
      return dying
    },
    close: () => new Promise<void>((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()) }),
  }
}

test('killing and restarting an instance mid-load fails only its in-flight requests', async () => {
  const rejections: unknown[] = []
  const onRejection = (err: unknown): void => { rejections.push(err) }
  process.on('unhandledRejection', onRejection)
  const [a, b] = [await killable('a'), await killable('b')]
  const gw = await startGateway(`version: 1
services:
  api:
    instances: [{ url: http://127.0.0.1:${a.port} }, { url: http://127.0.0.1:${b.port} }]
    timeout_ms: 2000
    retries: { attempts: 1, on: [connect-failure, 502, 503, 504], backoff_ms: 5 }
routes:
  - { name: r, service_name: api, methods: [GET], path: /r, upstream_path: /r }
`)
  const agent = new http.Agent({ keepAlive: true, maxSockets: 20 })
  const get = (): Promise<number> => new Promise((resolve) => {
    http.get(`${gw.url}/r`, { agent }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) })
      .on('error', () => resolve(-1))
  })
  try {
    const total = 3000
    let sent = 0
    let failed = 0
    let dyingInFlight = 0
    const worker = async (): Promise<void> => {
      while (sent < total) {
        const n = ++sent
        if (n === 1000) dyingInFlight = a.kill()
        if (n === 2000) await a.start()
        const status = await get()
        if (status !== 200) failed++
      }
    }
    await Promise.all(Array.from({ length: 20 }, worker))
    expect(failed).toBeLessThanOrEqual(dyingInFlight)
    expect(b.served).toBeGreaterThan(1000)
    expect(rejections).toEqual([])
  } finally {
    process.off('unhandledRejection', onRejection)
    agent.destroy()
    await gw.close(); await a.close(); await b.close()
  }
}, 60_000)
