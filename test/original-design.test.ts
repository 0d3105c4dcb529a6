/**
 * The original design's own test: three routes on one service, each a
 * four-tuple (path, upstream_path, methods, service_name).
 */
import request from 'supertest'
import { startUpstream, type Upstream } from './support/upstream'
import { startGateway, type RunningGateway } from './support/gateway'

const ACCOUNT_PATH = '/accounts/<account>/users/<user>/projects/<project>/<service_name>/resource/<resource_id>'

let upstream: Upstream
let gw: RunningGateway

beforeAll(async () => {
  upstream = await startUpstream()
  gw = await startGateway(`
version: 1
services:
  resources:
    instances:
      - url: ${upstream.url}
routes:
  - name: submit-resource
    service_name: resources
    methods: [POST]
    path: ${ACCOUNT_PATH}/submit/
    upstream_path: /v1/resource/<resource_id>/submit/
  - name: change-resource
    service_name: resources
    methods: [PUT, DELETE]
    path: ${ACCOUNT_PATH}/
    upstream_path: /v1/resource/<resource_id>/
  - name: get-resource
    service_name: resources
    methods: [GET]
    path: ${ACCOUNT_PATH}/
    upstream_path: /v1/resource/<resource_id>/
`)
})
afterAll(async () => { await gw.close(); await upstream.close() })
beforeEach(() => { upstream.received.length = 0 })

const base = '/accounts/acme/users/u1/projects/p1/resources/resource/r-42'

test('POST …/submit/ reaches /v1/resource/<resource_id>/submit/ with the body intact', async () => {
  const body = JSON.stringify({ payload: 'x'.repeat(5000), unicode: 'ünïcødé ✓' })
  const res = await request(gw.url).post(`${base}/submit/`).set('content-type', 'application/json').send(body)
  expect(res.status).toBe(200)
  expect(upstream.received).toHaveLength(1)
  expect(upstream.received[0].method).toBe('POST')
  expect(upstream.received[0].url).toBe('/v1/resource/r-42/submit/')
  expect(upstream.received[0].body.toString('utf8')).toBe(body)
})

test.each(['PUT', 'DELETE'] as const)('%s on the resource path reaches /v1/resource/<resource_id>/', async (method) => {
  const agent = request(gw.url)
  const res = await (method === 'PUT' ? agent.put(`${base}/`) : agent.delete(`${base}/`)).send('{"a":1}').set('content-type', 'application/json')
  expect(res.status).toBe(200)
  expect(upstream.received[0]).toMatchObject({ method, url: '/v1/resource/r-42/' })
  expect(upstream.received[0].body.toString()).toBe('{"a":1}')
})

test('GET on the resource path reaches /v1/resource/<resource_id>/ with the query unchanged', async () => {
  const res = await request(gw.url).get(`${base}/?expand=owner&x=%20y`)
  expect(res.status).toBe(200)
  expect(upstream.received[0]).toMatchObject({ method: 'GET', url: '/v1/resource/r-42/?expand=owner&x=%20y' })
})

test('POST to the PUT/DELETE path is 405 with Allow, and the upstream is not called', async () => {
  const res = await request(gw.url).post(`${base}/`).send('{}')
  expect(res.status).toBe(405)
  expect(res.body.error_code).toBe('MethodNotAllowed')
  expect(res.headers.allow).toBe('DELETE, GET, HEAD, PUT')
  expect(upstream.received).toHaveLength(0)
})

test('<service_name> in the path is the route\'s service name', async () => {
  const res = await request(gw.url).get('/accounts/acme/users/u1/projects/p1/other/resource/r-42/')
  expect(res.status).toBe(404)
  expect(res.body.error_code).toBe('RouteNotFound')
})
