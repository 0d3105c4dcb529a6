/** Matching: converters, precedence, 404/405/308, HEAD, and a large table. */
import request from 'supertest'
import { startUpstream, type Upstream } from './support/upstream'
import { startGateway, type RunningGateway } from './support/gateway'

let upstream: Upstream
let gw: RunningGateway

const UUID = '3f2c8a7e-1b4d-4c9a-9e2f-0a1b2c3d4e5f'

beforeAll(async () => {
  upstream = await startUpstream()
  const route = (name: string, methods: string, path: string, upstreamPath: string): string =>
    `  - { name: ${name}, service_name: s, methods: [${methods}], path: "${path}", upstream_path: "${upstreamPath}" }\n`
  gw = await startGateway(`
version: 1
services:
  s:
    instances: [{ url: ${upstream.url} }]
routes:
${route('static', 'GET', '/items/special', '/static')}${route('int', 'GET', '/items/<int:id>', '/int/<id>')}${route('uuid', 'GET', '/items/<uuid:id>', '/uuid/<id>')}${route('param', 'GET', '/items/<id>', '/param/<id>')}${route('files', 'GET', '/files/<path:rest>', '/f/<rest>')}${route('raw', 'GET', '/files/<path:rest>/raw', '/raw/<rest>')}${route('slash', 'GET', '/dir/', '/dir-slash')}${route('noslash', 'GET', '/plain', '/plain')}${route('colon', 'GET', '/a:b/<x>', '/colon/<x>')}${route('post-only', 'POST', '/submit', '/submit')}`)
})
afterAll(async () => { await gw.close(); await upstream.close() })
beforeEach(() => { upstream.received.length = 0 })

async function upstreamUrl (path: string): Promise<string> {
  const res = await request(gw.url).get(path)
  expect(res.status).toBe(200)
  return upstream.received[upstream.received.length - 1].url
}

test('a static segment wins over <int:>, <uuid:> and <param>', async () => {
  expect(await upstreamUrl('/items/special')).toBe('/static')
})

test('<int:> takes digits only; other values fall to <param>', async () => {
  expect(await upstreamUrl('/items/123')).toBe('/int/123')
  expect(await upstreamUrl('/items/12a')).toBe('/param/12a')
})

test('<uuid:> takes a UUID', async () => {
  expect(await upstreamUrl(`/items/${UUID}`)).toBe(`/uuid/${UUID}`)
})

test('<path:> takes one or more segments, with or without a static tail', async () => {
  expect(await upstreamUrl('/files/a/b/c.txt')).toBe('/f/a/b/c.txt')
  expect(await upstreamUrl('/files/a/b/raw')).toBe('/raw/a/b')
  expect(await upstreamUrl('/files/one')).toBe('/f/one')
})

test('values are percent-encoded on the way up', async () => {
  expect(await upstreamUrl('/items/a%20b@c')).toBe('/param/a%20b%40c')
})

test('a literal colon in a static segment matches itself', async () => {
  expect(await upstreamUrl('/a:b/z')).toBe('/colon/z')
})

test('an empty <param> does not match', async () => {
  const res = await request(gw.url).get('/items/')
  expect(res.status).toBe(404)
  expect(res.body.error_code).toBe('RouteNotFound')
})

test('the other trailing-slash form is a 308 to the written one, query kept', async () => {
  const a = await request(gw.url).get('/dir?q=1').redirects(0)
  expect(a.status).toBe(308)
  expect(a.headers.location).toBe('/dir/?q=1')
  const b = await request(gw.url).get('/plain/').redirects(0)
  expect(b.status).toBe(308)
  expect(b.headers.location).toBe('/plain')
  const c = await request(gw.url).get('/files/a/b/').redirects(0)
  expect(c.status).toBe(308)
  expect(c.headers.location).toBe('/files/a/b')
  expect(upstream.received).toHaveLength(0)
})

test('HEAD is allowed wherever GET is', async () => {
  const res = await request(gw.url).head('/plain')
  expect(res.status).toBe(200)
  expect(upstream.received[0].method).toBe('HEAD')
})

test('a path that matches for another method is 405 with Allow', async () => {
  const res = await request(gw.url).get('/submit')
  expect(res.status).toBe(405)
  expect(res.headers.allow).toBe('POST')
  expect(res.body).toMatchObject({ error_code: 'MethodNotAllowed' })
  expect(res.body.request_id).toBe(res.headers['x-request-id'])
})

test('no match is 404 RouteNotFound as JSON', async () => {
  const res = await request(gw.url).get('/nothing/here')
  expect(res.status).toBe(404)
  expect(res.headers['content-type']).toMatch(/^application\/json/)
  expect(res.body).toMatchObject({ error_code: 'RouteNotFound', error_message: expect.any(String), request_id: expect.any(String) })
})

test('a malformed percent-encoding is 400 BadRequest', async () => {
  const res = await request(gw.url).get('/nothing/%zz')
  expect(res.status).toBe(400)
  expect(res.body.error_code).toBe('BadRequest')
})
