/** Balancing, label routing, draining and health through the running gateway, against real instances. */
import request from 'supertest'
import { startUpstream, type Upstream } from './support/upstream'
import { startGateway, type RunningGateway } from './support/gateway'

/** An instance that says who it is, and fails on command. */
async function instance (name: string): Promise<Upstream & { failHealth (fail: boolean): void }> {
  let failing = false
  const up = await startUpstream((req, res) => {
    if (req.url === '/healthz') { res.writeHead(failing ? 500 : 200).end(); return }
    res.setHeader('x-served-by', name)
    res.end(name)
  })
  return Object.assign(up, { failHealth (fail: boolean) { failing = fail } })
}

function yaml (service: string): string {
  return `version: 1
services:
  api:
${service}
routes:
  - { name: r, service_name: api, methods: [GET], path: "/r", upstream_path: "/r" }
`
}

async function servedBy (gw: RunningGateway, n: number, headers: Record<string, string> = {}): Promise<string[]> {
  const out: string[] = []
  for (let i = 0; i < n; i++) {
    const res = await request(gw.url).get('/r').set(headers)
    out.push(res.status === 200 ? res.text : `${res.status} ${res.body.error_code}`)
  }
  return out
}

const count = (list: string[], name: string): number => list.filter(x => x === name).length

test('a 3:1 weighted service gets exactly 30 and 10 of 40 requests', async () => {
  const [a, b] = [await instance('a'), await instance('b')]
  const gw = await startGateway(yaml(`    balancer: weighted-round-robin
    instances:
      - { url: ${a.url}, weight: 3 }
      - { url: ${b.url}, weight: 1 }`))
  try {
    const served = await servedBy(gw, 40)
    expect(count(served, 'a')).toBe(30)
    expect(count(served, 'b')).toBe(10)
  } finally { await gw.close(); await a.close(); await b.close() }
})

test('label isolation holds in both directions', async () => {
  const [plain, tenantA, tenantB] = [await instance('plain'), await instance('tenant-a'), await instance('tenant-b')]
  const gw = await startGateway(yaml(`    instances:
      - { url: ${plain.url} }
      - { url: ${tenantA.url}, labels: [tenant-a] }
      - { url: ${tenantB.url}, labels: [tenant-b] }`))
  try {
    expect(new Set(await servedBy(gw, 6))).toEqual(new Set(['plain']))
    expect(new Set(await servedBy(gw, 6, { 'X-Route-Label': 'tenant-a' }))).toEqual(new Set(['tenant-a']))
    expect(new Set(await servedBy(gw, 6, { 'x-route-label': 'tenant-b' }))).toEqual(new Set(['tenant-b']))
    const none = await request(gw.url).get('/r').set('X-Route-Label', 'tenant-c')
    expect(none.status).toBe(503)
    expect(none.body.error_code).toBe('NoHealthyInstance')
  } finally { await gw.close(); await plain.close(); await tenantA.close(); await tenantB.close() }
})

test('an unlabelled request finds no instance when every instance is labelled', async () => {
  const a = await instance('a')
  const gw = await startGateway(yaml(`    instances:
      - { url: ${a.url}, labels: [tenant-a] }`))
  try {
    const res = await request(gw.url).get('/r')
    expect(res.status).toBe(503)
    expect(res.body.error_code).toBe('NoHealthyInstance')
    expect(a.received).toHaveLength(0)
  } finally { await gw.close(); await a.close() }
})

test('an unhealthy instance leaves rotation within its threshold and returns after recovery', async () => {
  const [a, b] = [await instance('a'), await instance('b')]
  const gw = await startGateway(yaml(`    instances: [{ url: ${a.url} }, { url: ${b.url} }]
    health_check: { path: /healthz, interval_ms: 20, timeout_ms: 200, healthy_threshold: 2, unhealthy_threshold: 2 }`))
  const service = gw.gateway.generation.services.get('api')!
  const until = async (check: () => boolean): Promise<void> => {
    for (let i = 0; i < 200 && !check(); i++) await new Promise(resolve => setTimeout(resolve, 10))
    expect(check()).toBe(true)
  }
  try {
    a.failHealth(true)
    await until(() => !service.instances[0].healthy)
    expect(new Set(await servedBy(gw, 6))).toEqual(new Set(['b']))
    a.failHealth(false)
    await until(() => service.instances[0].healthy)
    expect(new Set(await servedBy(gw, 6))).toEqual(new Set(['a', 'b']))
  } finally { await gw.close(); await a.close(); await b.close() }
})

test('a drained instance gets no new requests; undrained it takes traffic again', async () => {
  const [a, b] = [await instance('a'), await instance('b')]
  const gw = await startGateway(yaml(`    instances: [{ url: ${a.url} }, { url: ${b.url} }]`))
  const service = gw.gateway.generation.services.get('api')!
  try {
    expect(service.setDrained('api-0', true)).toBe(true)
    expect(new Set(await servedBy(gw, 6))).toEqual(new Set(['b']))
    expect(service.setDrained('api-0', false)).toBe(true)
    expect(new Set(await servedBy(gw, 6))).toEqual(new Set(['a', 'b']))
    expect(service.setDrained('no-such', true)).toBe(false)
    service.setDrained('api-0', true); service.setDrained('api-1', true)
    expect((await request(gw.url).get('/r')).body.error_code).toBe('NoHealthyInstance')
  } finally { await gw.close(); await a.close(); await b.close() }
})

test('a connect failure ejects the instance: the next requests go to the other one', async () => {
  const [a, b] = [await instance('a'), await instance('b')]
  const gw = await startGateway(yaml(`    instances: [{ url: ${a.url} }, { url: ${b.url} }]`))
  try {
    await a.close() // refuses from now on
    const served = await servedBy(gw, 6)
    expect(served[0]).toBe('502 UpstreamUnreachable')
    expect(new Set(served.slice(1))).toEqual(new Set(['b']))
  } finally { await gw.close(); await b.close() }
})
