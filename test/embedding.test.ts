/** The same compiled handlers serve on the gateway's own listener and inside an Express app. */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import express from 'express'
import request from 'supertest'
import { loadConfigText } from '../src/config'
import { createGateway, type Gateway } from '../src/gateway'
import { createPipeCatalog } from '../src/pipes/catalog'
import { startUpstream, type Upstream } from './support/upstream'

let upstream: Upstream
let gateway: Gateway

beforeAll(async () => {
  upstream = await startUpstream()
  gateway = createGateway({
    config: loadConfigText(`
version: 1
services:
  users:
    instances: [{ url: ${upstream.url} }]
routes:
  - { name: user, service_name: users, methods: [GET, POST], path: "/users/<int:id>", upstream_path: "/v1/users/<id>" }
`, 'routes.yaml', { env: {}, pipes: (pipesDir) => createPipeCatalog({ pipesDir }) }),
  })
})
afterAll(async () => { await gateway.close(); await upstream.close() })
beforeEach(() => { upstream.received.length = 0 })

test('gateway.handler serves a plain node:http server', async () => {
  const server = http.createServer(gateway.handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  try {
    const res = await request(`http://127.0.0.1:${(server.address() as AddressInfo).port}`).get('/users/7')
    expect(res.status).toBe(200)
    expect(upstream.received[0].url).toBe('/v1/users/7')
    const miss = await request(`http://127.0.0.1:${(server.address() as AddressInfo).port}`).get('/nope')
    expect(miss.body.error_code).toBe('RouteNotFound')
  } finally { await new Promise((resolve) => server.close(resolve)) }
})

test('app.use(gateway.middleware) proxies matched routes inside Express', async () => {
  const app = express()
  app.use(gateway.middleware)
  const res = await request(app).post('/users/9').set('content-type', 'application/json').send('{"name":"ann"}')
  expect(res.status).toBe(200)
  expect(upstream.received[0]).toMatchObject({ method: 'POST', url: '/v1/users/9' })
  expect(upstream.received[0].body.toString()).toBe('{"name":"ann"}')
  expect(res.headers['x-request-id']).toBeDefined()
})

test('inside Express, an unmatched path goes on to the next handler', async () => {
  const app = express()
  app.use(gateway.middleware)
  app.get('/local', (_req, res) => { res.json({ local: true }) })
  const res = await request(app).get('/local')
  expect(res.status).toBe(200)
  expect(res.body).toEqual({ local: true })
  expect(upstream.received).toHaveLength(0)
})

test('inside Express, a known path with the wrong method is still the gateway\'s 405', async () => {
  const app = express()
  app.use(gateway.middleware)
  const res = await request(app).delete('/users/9')
  expect(res.status).toBe(405)
  expect(res.headers.allow).toBe('GET, HEAD, POST')
})

test('mounted under a prefix, routes match below it', async () => {
  const app = express()
  app.use('/gw', gateway.middleware)
  const res = await request(app).get('/gw/users/5?x=1')
  expect(res.status).toBe(200)
  expect(upstream.received[0].url).toBe('/v1/users/5?x=1')
})
