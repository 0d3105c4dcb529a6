/**
 * The example custom pipes of pipes/ and the configs of examples/pipes/,
 * loaded from disk as a user would (pipes_dir: ../../pipes) and served in
 * front of real upstreams on port 0, so the docs cannot rot.
 */
import { createHmac } from 'node:crypto'
import path from 'node:path'
import type { AddressInfo } from 'node:net'
import request from 'supertest'
import { ConfigError, loadConfigFile } from '../src/config'
import { createGateway, type Gateway } from '../src/gateway'
import { createPipeCatalog } from '../src/pipes/catalog'
import { echo, startUpstream, type Upstream, type UpstreamHandler } from './support/upstream'

const EXAMPLES = path.join(__dirname, '..', 'examples', 'pipes')

interface Served { url: string, gateway: Gateway, upstream: Upstream, close (): Promise<void> }

/** examples/pipes/<name>.yaml with its service URL pointing at a fresh upstream. */
async function serveExample (name: string, urlVariable: string, handler: UpstreamHandler = echo): Promise<Served> {
  const upstream = await startUpstream(handler)
  try {
    const loaded = loadConfigFile(path.join(EXAMPLES, `${name}.yaml`), {
      env: { [urlVariable]: upstream.url },
      pipes: (pipesDir) => createPipeCatalog({ pipesDir }),
    })
    const gateway = createGateway({ config: loaded })
    const { port } = await gateway.listen({ port: 0, host: '127.0.0.1' }) as AddressInfo
    return { url: `http://127.0.0.1:${port}`, gateway, upstream, close: async () => { await gateway.close(); await upstream.close() } }
  } catch (err) {
    await upstream.close()
    throw err
  }
}

describe('add-tenant-header (the pipe of pipes.md)', () => {
  let s: Served
  beforeAll(async () => { s = await serveExample('add-tenant-header', 'ORDERS_URL') })
  afterAll(async () => { await s.close() })

  test('the <account> placeholder goes upstream as X-Tenant', async () => {
    const res = await request(s.url).get('/accounts/acme/orders')
    expect(res.status).toBe(200)
    expect(s.upstream.received).toHaveLength(1)
    expect(s.upstream.received[0].url).toBe('/v1/orders')
    expect(s.upstream.received[0].headers['x-tenant']).toBe('acme')
  })

  test('a client cannot choose its tenant with the header itself', async () => {
    s.upstream.received.length = 0
    await request(s.url).get('/accounts/acme/orders').set('X-Tenant', 'other')
    expect(s.upstream.received[0].headers['x-tenant']).toBe('acme')
  })
})

describe('hmac-signature', () => {
  // A forged or replayed-with-changes webhook must not reach the service: only
  // the holder of the shared secret can produce the body's signature.
  const SECRET = 'whsec-test-0123456789abcdef'
  let s: Served
  const sign = (body: Buffer | string, secret = SECRET): string => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`

  beforeAll(async () => {
    process.env.WEBHOOK_SECRET = SECRET
    s = await serveExample('hmac-signature', 'HOOKS_URL')
  })
  afterAll(async () => {
    delete process.env.WEBHOOK_SECRET
    await s.close()
  })
  beforeEach(() => { s.upstream.received.length = 0 })

  test('a correctly signed body reaches the upstream byte for byte', async () => {
    const body = Buffer.concat([Buffer.from('{"event":"paid","note":"'), Buffer.from([0xff, 0x00, 0xc3]), Buffer.from('"}')])
    const res = await request(s.url).post('/webhooks/payments')
      .set('Content-Type', 'application/octet-stream').set('X-Signature', sign(body)).send(body)
    expect(res.status).toBe(200)
    expect(s.upstream.received).toHaveLength(1)
    expect(s.upstream.received[0].url).toBe('/hooks/payments')
    expect(s.upstream.received[0].body.equals(body)).toBe(true)
    expect(s.upstream.received[0].headers['content-length']).toBe(String(body.length))
  })

  test('upper-case hex is accepted', async () => {
    const body = '{"event":"refund"}'
    const res = await request(s.url).post('/webhooks/payments').set('X-Signature', sign(body).toUpperCase().replace('SHA256=', 'sha256=')).send(body)
    expect(res.status).toBe(200)
  })

  test.each([
    ['no signature', undefined],
    ['a malformed signature', 'sha256=abc'],
    ['another scheme', 'sha1=' + 'a'.repeat(40)],
    ['the signature of another body', sign('{"event":"paid","amount":1}')],
    ['a signature made with another secret', sign('{"event":"paid"}', 'not-the-secret-0000')],
  ])('%s: 401 Unauthorized with WWW-Authenticate; the upstream never sees it', async (_case, signature) => {
    const r = request(s.url).post('/webhooks/payments').set('Content-Type', 'application/json')
    const res = await (signature === undefined ? r : r.set('X-Signature', signature)).send('{"event":"paid"}')
    expect(res.status).toBe(401)
    expect(res.body).toMatchObject({ error_code: 'Unauthorized', request_id: res.headers['x-request-id'] })
    expect(res.headers['www-authenticate']).toMatch(/^Signature /)
    expect(s.upstream.received).toHaveLength(0)
  })

  test('with the secret\'s environment variable unset, the config does not load', async () => {
    delete process.env.WEBHOOK_SECRET
    try {
      await expect(serveExample('hmac-signature', 'HOOKS_URL')).rejects.toThrow(ConfigError)
      await expect(serveExample('hmac-signature', 'HOOKS_URL')).rejects.toThrow(/environment variable WEBHOOK_SECRET is not set/)
    } finally {
      process.env.WEBHOOK_SECRET = SECRET
    }
  })
})

describe('response-envelope', () => {
  let s: Served
  beforeAll(async () => {
    s = await serveExample('response-envelope', 'USERS_URL', (req, res) => {
      const id = Number(req.url?.split('/').pop())
      if (id === 0) { res.writeHead(404, { 'content-type': 'application/json' }); res.end('{"error":"no such user"}'); return }
      if (id === 1) { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('plain text'); return }
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' })
      res.end(JSON.stringify({ id, name: `User ${id}` }))
    })
  })
  afterAll(async () => { await s.close() })

  test('a JSON response is wrapped with its status and the request id; Content-Length follows', async () => {
    const res = await request(s.url).get('/users/42')
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ data: { id: 42, name: 'User 42' }, status: 200, request_id: res.headers['x-request-id'] })
    expect(res.headers['content-length']).toBe(String(Buffer.byteLength(res.text)))
  })

  test('an error response is wrapped too, its status kept', async () => {
    const res = await request(s.url).get('/users/0')
    expect(res.status).toBe(404)
    expect(res.body).toEqual({ data: { error: 'no such user' }, status: 404, request_id: res.headers['x-request-id'] })
  })

  test('a non-JSON response passes through untouched', async () => {
    const res = await request(s.url).get('/users/1')
    expect(res.text).toBe('plain text')
    expect(res.headers['content-type']).toBe('text/plain')
  })
})

describe('traffic (the built-in traffic pipes together)', () => {
  let s: Served
  beforeAll(async () => {
    s = await serveExample('traffic', 'USERS_URL', (req, res) => {
      const id = Number(req.url?.split('/').pop())
      if (id === 0) { res.writeHead(404, { 'content-type': 'application/json', server: 'users/1.0' }); res.end('{"error":"no such user"}'); return }
      res.writeHead(200, { 'content-type': 'application/json', 'x-powered-by': 'users', server: 'users/1.0' })
      res.end(JSON.stringify({ id, user_name: 'ann', password_hash: 'h', internal: { shard: 3 } }))
    })
  })
  afterAll(async () => { await s.close() })

  test('the body is rewritten, headers tidied, RateLimit-* on the answer', async () => {
    const res = await request(s.url).get('/api/users/7').set('X-Api-Key', 'k1')
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ id: 7, name: 'ann', api_version: 2 })
    expect(res.headers['cache-control']).toBe('no-store')
    expect(res.headers['x-powered-by']).toBeUndefined()
    expect(res.headers.server).toBeUndefined()
    expect(res.headers['ratelimit-limit']).toBe('100')
    expect(res.headers['ratelimit-remaining']).toBe('99')
  })

  test('a missing user is a 204 without a body', async () => {
    const res = await request(s.url).get('/api/users/0').set('X-Api-Key', 'k2')
    expect(res.status).toBe(204)
    expect(res.text).toBe('')
    expect(res.headers['content-length']).toBeUndefined()
  })
})
