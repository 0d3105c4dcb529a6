/** The jwt pipe's cache of verified tokens must never extend a token's life. */
import jwt from 'jsonwebtoken'
import request from 'supertest'
import { startUpstream, type Upstream } from './support/upstream'
import { startGateway, type RunningGateway } from './support/gateway'

const SECRET = 'a-test-secret-that-is-32-bytes-long!!'
let upstream: Upstream
let gw: RunningGateway

beforeAll(async () => {
  upstream = await startUpstream()
  gw = await startGateway(`version: 1
services:
  api:
    instances: [{ url: ${upstream.url} }]
routes:
  - name: r
    service_name: api
    methods: [GET]
    path: /r
    upstream_path: /r
    pipelines:
      inbound:
        - name: jwt
          properties: { secret: "${SECRET}", algorithms: [HS256], forward_claims: { X-User-Id: sub } }
`)
})
afterAll(async () => { await gw.close(); await upstream.close() })

test('a token verified and cached is refused once its exp has passed', async () => {
  // Attack: replay a token after it expired, hoping the gateway remembers it was valid.
  const token = jwt.sign({ sub: 'u1', exp: Math.floor(Date.now() / 1000) + 1 }, SECRET, { algorithm: 'HS256' })
  expect((await request(gw.url).get('/r').set('authorization', `Bearer ${token}`)).status).toBe(200)
  expect((await request(gw.url).get('/r').set('authorization', `Bearer ${token}`)).status).toBe(200) // from the cache
  await new Promise(resolve => setTimeout(resolve, 1100 + (1000 - (Date.now() % 1000))))
  const late = await request(gw.url).get('/r').set('authorization', `Bearer ${token}`)
  expect(late.status).toBe(401)
  expect(late.body.error_code).toBe('Unauthorized')
})

test('a cached token still has its claims forwarded, and a spoofed claim header is replaced', async () => {
  const token = jwt.sign({ sub: 'alice' }, SECRET, { algorithm: 'HS256', expiresIn: 60 })
  upstream.received.length = 0
  for (let i = 0; i < 2; i++) await request(gw.url).get('/r').set('authorization', `Bearer ${token}`).set('x-user-id', 'mallory')
  expect(upstream.received.map(r => r.headers['x-user-id'])).toEqual(['alice', 'alice'])
})

test('a token with one changed signature character is not served from the cache', async () => {
  const token = jwt.sign({ sub: 'u2' }, SECRET, { algorithm: 'HS256', expiresIn: 60 })
  expect((await request(gw.url).get('/r').set('authorization', `Bearer ${token}`)).status).toBe(200)
  const forged = token.slice(0, -2) + (token.endsWith('AA') ? 'BB' : 'AA')
  expect((await request(gw.url).get('/r').set('authorization', `Bearer ${forged}`)).status).toBe(401)
})
