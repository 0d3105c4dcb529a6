/**
 * The filter pipes (pipes.md "Built-in pipes"): ip-filter, referer-filter,
 * cors, request-size, request-validate, request-headers — through a running
 * gateway, against a real upstream that records what reached it.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import http from 'node:http'
import net from 'node:net'
import { once } from 'node:events'
import request from 'supertest'
import { startUpstream, echo, type Upstream, type UpstreamHandler } from './support/upstream'
import { startGateway, type RunningGateway } from './support/gateway'

let dir: string
let upstream: Upstream

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-filters-'))
  fs.mkdirSync(path.join(dir, 'pipes'))
  // Stands in for an auth pipe (jwt, api-key): refuses everything.
  fs.writeFileSync(path.join(dir, 'pipes', 'refuse.js'),
    "module.exports = { name: 'refuse', phase: 'inbound', create: () => (ctx) => ctx.fail(401, 'Unauthorized', 'no credentials') }")
  upstream = await startUpstream(echo)
})
afterAll(async () => { await upstream.close(); fs.rmSync(dir, { recursive: true, force: true }) })
beforeEach(() => { upstream.received.length = 0 })

/** One pipe placement, written as the JSON subset of YAML. */
function pipe (name: string, properties?: object): string {
  return JSON.stringify(properties === undefined ? { name } : { name, properties })
}

interface Setup {
  /** route inbound pipes */
  inbound?: string[]
  global?: string[]
  server?: string
  methods?: string
  upstreamUrl?: string
}

function yaml ({ inbound = [], global = [], server = '', methods = '[GET, POST, PUT]', upstreamUrl = upstream.url }: Setup): string {
  return `version: 1
pipes_dir: ./pipes
${server}
services:
  api:
    instances: [{ url: ${upstreamUrl} }]
global:
  inbound: [${global.join(', ')}]
routes:
  - name: r
    service_name: api
    methods: ${methods}
    path: "/api/<path:rest>"
    upstream_path: "/<rest>"
    pipelines:
      inbound: [${inbound.join(', ')}]
`
}

async function gateway (setup: Setup): Promise<RunningGateway> {
  return startGateway(yaml(setup), {}, path.join(dir, 'routes.yaml'))
}

/** The gateway refuses to start; the message names the pipe's place. */
async function configError (setup: Setup): Promise<string> {
  try {
    const gw = await gateway(setup)
    await gw.close()
  } catch (err) {
    return (err as Error).message
  }
  throw new Error('the config was accepted')
}

/** A request written byte for byte, for what HTTP clients will not send (a repeated header). */
async function rawRequest (url: string, head: string): Promise<{ status: number, body: string }> {
  const { port } = new URL(url)
  const socket = net.connect(Number(port), '127.0.0.1')
  await once(socket, 'connect')
  socket.write(head)
  let text = ''
  socket.setEncoding('utf8')
  socket.on('data', (chunk: string) => { text += chunk })
  await once(socket, 'end')
  socket.destroy()
  return { status: Number(text.slice(9, 12)), body: text.slice(text.indexOf('\r\n\r\n') + 4) }
}

describe('ip-filter', () => {
  test('an allowed address passes', async () => {
    const gw = await gateway({ inbound: [pipe('ip-filter', { allow: ['127.0.0.0/8'] })] })
    try {
      const res = await request(gw.url).get('/api/x')
      expect(res.status).toBe(200)
      expect(upstream.received).toHaveLength(1)
      expect(upstream.received[0].url).toBe('/x')
    } finally { await gw.close() }
  })

  test('a denied address is refused with 403 Forbidden and never reaches the upstream', async () => {
    // Stops a blocked network from reaching the service at all.
    const gw = await gateway({ inbound: [pipe('ip-filter', { deny: ['127.0.0.1'] })] })
    try {
      const res = await request(gw.url).get('/api/x')
      expect(res.status).toBe(403)
      expect(res.body).toMatchObject({ error_code: 'Forbidden', error_message: 'the client address is not allowed' })
      expect(res.body.request_id).toBe(res.headers['x-request-id'])
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('with allow set, an address outside it is refused', async () => {
    const gw = await gateway({ inbound: [pipe('ip-filter', { allow: ['10.0.0.0/8', '::1'] })] })
    try {
      const res = await request(gw.url).get('/api/x')
      expect(res.status).toBe(403)
      expect(res.body.error_code).toBe('Forbidden')
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('deny wins over allow', async () => {
    const gw = await gateway({ inbound: [pipe('ip-filter', { allow: ['127.0.0.0/8'], deny: ['127.0.0.1/32'] })] })
    try {
      const res = await request(gw.url).get('/api/x')
      expect(res.status).toBe(403)
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('IPv6 clients behind a trusted proxy are matched by IPv6 ranges', async () => {
    const gw = await gateway({
      server: 'server:\n  trust_proxy: [127.0.0.1/32]',
      inbound: [pipe('ip-filter', { allow: ['2001:db8::/32'], deny: ['2001:db8:bad::/48'] })],
    })
    try {
      const inside = await request(gw.url).get('/api/x').set('x-forwarded-for', '2001:db8:1::7')
      expect(inside.status).toBe(200)
      const outside = await request(gw.url).get('/api/x').set('x-forwarded-for', '2001:db9::7')
      expect(outside.status).toBe(403)
      const denied = await request(gw.url).get('/api/x').set('x-forwarded-for', '2001:db8:bad::1')
      expect(denied.status).toBe(403)
      expect(upstream.received).toHaveLength(1)
      expect(upstream.received[0].headers['x-forwarded-for']).toBe('2001:db8:1::7, 127.0.0.1')
    } finally { await gw.close() }
  })

  test('the client is the first untrusted hop, not whatever the client wrote first in X-Forwarded-For', async () => {
    // Stops a client from prepending an allowed address to X-Forwarded-For to pass as it.
    const gw = await gateway({
      server: 'server:\n  trust_proxy: [127.0.0.1/32]',
      inbound: [pipe('ip-filter', { allow: ['10.0.0.0/8'] })],
    })
    try {
      const res = await request(gw.url).get('/api/x').set('x-forwarded-for', '10.1.2.3, 203.0.113.9')
      expect(res.status).toBe(403)
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('X-Forwarded-For from a peer that is not a trusted proxy is ignored', async () => {
    // Stops a client from claiming an allowed address in a header it writes itself.
    const gw = await gateway({ inbound: [pipe('ip-filter', { allow: ['10.0.0.0/8'] })] })
    try {
      const res = await request(gw.url).get('/api/x').set('x-forwarded-for', '10.1.2.3')
      expect(res.status).toBe(403)
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('an IPv4-mapped IPv6 address meets the IPv4 rules', async () => {
    // Stops a denied IPv4 client from slipping past an IPv4 deny rule by writing its address as ::ffff:a.b.c.d.
    const gw = await gateway({
      server: 'server:\n  trust_proxy: [127.0.0.1/32]',
      inbound: [pipe('ip-filter', { allow: ['10.0.0.0/8', '2001:db8::/32'], deny: ['10.6.0.0/16'] })],
    })
    try {
      const mappedAllowed = await request(gw.url).get('/api/x').set('x-forwarded-for', '::ffff:10.1.2.3')
      expect(mappedAllowed.status).toBe(200)
      for (const mapped of ['::FFFF:10.6.0.1', '::ffff:a06:1', '0:0:0:0:0:ffff:0a06:0001']) {
        const denied = await request(gw.url).get('/api/x').set('x-forwarded-for', mapped)
        expect([mapped, denied.status]).toEqual([mapped, 403])
      }
      expect(upstream.received).toHaveLength(1)
    } finally { await gw.close() }
  })

  test('an IPv4-mapped range in the config matches plain IPv4 clients', async () => {
    const gw = await gateway({ inbound: [pipe('ip-filter', { deny: ['::ffff:127.0.0.0/104'] })] })
    try {
      expect((await request(gw.url).get('/api/x')).status).toBe(403)
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('an entry that is not an address or range is a config error at the pipe', async () => {
    expect(await configError({ inbound: [pipe('ip-filter', { allow: ['10.0.0.0/33'] })] }))
      .toMatch(/routes\.yaml:\d+:\d+ routes\[0\]\.pipelines\.inbound\[0\]: pipe "ip-filter" could not be created: allow: "10\.0\.0\.0\/33" has a prefix longer than the address/)
    expect(await configError({ inbound: [pipe('ip-filter', { deny: ['example.com'] })] }))
      .toMatch(/deny: "example\.com" is not an IP address or CIDR range/)
    expect(await configError({ inbound: [pipe('ip-filter', {})] })).toMatch(/set allow, deny or both/)
  })
})

describe('referer-filter', () => {
  const allow = (extra: object = {}): string => pipe('referer-filter', { allow: ['*.example.com', 'example.org'], ...extra })

  test('a Referer whose host matches a glob passes, case-insensitively', async () => {
    const gw = await gateway({ inbound: [allow()] })
    try {
      for (const referer of ['https://app.example.com/page', 'https://a.b.example.com/', 'HTTP://Example.ORG:8080/x?y=1']) {
        const res = await request(gw.url).get('/api/x').set('referer', referer)
        expect(res.status).toBe(200)
      }
      expect(upstream.received.map(r => r.headers.referer)).toEqual(['https://app.example.com/page', 'https://a.b.example.com/', 'HTTP://Example.ORG:8080/x?y=1'])
    } finally { await gw.close() }
  })

  test('a Referer from another site is refused with 403 Forbidden', async () => {
    // Stops other sites from hotlinking or driving requests to the route; look-alike hosts included.
    const gw = await gateway({ inbound: [allow()] })
    try {
      for (const referer of [
        'https://evil.net/',
        'https://example.com/', // *.example.com is subdomains only
        'https://example.com.evil.net/',
        'https://evilexample.com/',
        'https://evil.net/a.example.com',
        'https://app.example.com@evil.net/',
        'https://evil.net/?r=https://example.org/',
      ]) {
        const res = await request(gw.url).get('/api/x').set('referer', referer)
        expect([referer, res.status, res.body.error_code]).toEqual([referer, 403, 'Forbidden'])
      }
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('a missing Referer is refused unless allow_missing', async () => {
    const strict = await gateway({ inbound: [allow()] })
    try {
      const res = await request(strict.url).get('/api/x')
      expect(res.status).toBe(403)
      expect(res.body.error_message).toBe('a Referer header is required')
      expect(upstream.received).toHaveLength(0)
    } finally { await strict.close() }
    const lenient = await gateway({ inbound: [allow({ allow_missing: true })] })
    try {
      expect((await request(lenient.url).get('/api/x')).status).toBe(200)
      expect((await request(lenient.url).get('/api/x').set('referer', 'https://evil.net/')).status).toBe(403)
      expect(upstream.received).toHaveLength(1)
    } finally { await lenient.close() }
  })

  test('a Referer that is not an absolute URL is refused, even with allow_missing', async () => {
    const gw = await gateway({ inbound: [allow({ allow_missing: true })] })
    try {
      for (const referer of ['app.example.com', '/relative/path', 'https://', 'not a url']) {
        const res = await request(gw.url).get('/api/x').set('referer', referer)
        expect([referer, res.status]).toEqual([referer, 403])
      }
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('a repeated Referer is refused', async () => {
    // Stops a request from showing an allowed Referer to the gateway and another one to a component that reads the last copy.
    const gw = await gateway({ inbound: [allow()] })
    try {
      const res = await rawRequest(gw.url, 'GET /api/x HTTP/1.1\r\nHost: x\r\nReferer: https://app.example.com/\r\n' +
        'Referer: https://evil.net/\r\nConnection: close\r\n\r\n')
      expect(res.status).toBe(403)
      expect(JSON.parse(res.body)).toMatchObject({ error_code: 'Forbidden', error_message: 'the Referer header is repeated' })
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('a pattern with a scheme or path is a config error', async () => {
    expect(await configError({ inbound: [pipe('referer-filter', { allow: ['https://example.org/'] })] }))
      .toMatch(/pipe "referer-filter" could not be created: allow: "https:\/\/example\.org\/" is not a host pattern/)
  })
})

describe('cors', () => {
  const preflight = (gw: RunningGateway, origin: string, method = 'PUT'): request.Test =>
    request(gw.url).options('/api/items').set('origin', origin).set('access-control-request-method', method)

  test('a preflight from an allowed origin is answered 204 at the gateway', async () => {
    const gw = await gateway({
      methods: '[GET, PUT, OPTIONS]',
      inbound: [pipe('cors', { origins: ['https://app.example.com'], max_age_s: 600 })],
    })
    try {
      const res = await preflight(gw, 'https://app.example.com').set('access-control-request-headers', 'content-type, x-trace')
      expect(res.status).toBe(204)
      expect(res.headers['access-control-allow-origin']).toBe('https://app.example.com')
      expect(res.headers['access-control-allow-methods']).toBe('GET, HEAD, PUT, PATCH, POST, DELETE')
      expect(res.headers['access-control-allow-headers']).toBe('content-type, x-trace')
      expect(res.headers['access-control-max-age']).toBe('600')
      expect(res.headers['access-control-allow-credentials']).toBeUndefined()
      expect(res.headers.vary).toBe('Origin, Access-Control-Request-Headers')
      expect(res.headers['content-length']).toBe('0')
      expect(res.headers['x-request-id']).toBeDefined()
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('the preflight is answered before an auth pipe placed earlier would refuse it', async () => {
    // Browsers never send credentials on a preflight: an auth pipe must not see it, or no cross-origin call can start.
    const gw = await gateway({
      methods: '[GET, PUT, OPTIONS]',
      global: [pipe('refuse')],
      inbound: [pipe('refuse'), pipe('cors', { origins: ['https://app.example.com'], methods: ['GET', 'PUT'], headers: ['Authorization'] })],
    })
    try {
      const res = await preflight(gw, 'https://app.example.com')
      expect(res.status).toBe(204)
      expect(res.headers['access-control-allow-origin']).toBe('https://app.example.com')
      expect(res.headers['access-control-allow-methods']).toBe('GET, PUT')
      expect(res.headers['access-control-allow-headers']).toBe('Authorization')
      expect(res.headers.vary).toBe('Origin')
      // the actual request still meets the auth pipe
      const actual = await request(gw.url).put('/api/items').set('origin', 'https://app.example.com')
      expect(actual.status).toBe(401)
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('a preflight on a route that does not declare OPTIONS is answered too', async () => {
    const gw = await gateway({ methods: '[GET, PUT]', inbound: [pipe('cors', { origins: ['https://app.example.com'] })] })
    try {
      const res = await preflight(gw, 'https://app.example.com')
      expect(res.status).toBe(204)
      expect(res.headers['access-control-allow-origin']).toBe('https://app.example.com')
      // a plain OPTIONS there is still the 405 it was
      const plain = await request(gw.url).options('/api/items')
      expect(plain.status).toBe(405)
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('a preflight from a disallowed origin gets 204 without any Access-Control-Allow-* (the browser then refuses)', async () => {
    const gw = await gateway({ methods: '[GET, PUT, OPTIONS]', inbound: [pipe('cors', { origins: ['https://app.example.com'] })] })
    try {
      const res = await preflight(gw, 'https://evil.net')
      expect(res.status).toBe(204)
      expect(Object.keys(res.headers).filter(h => h.startsWith('access-control-'))).toEqual([])
      expect(res.headers.vary).toBe('Origin, Access-Control-Request-Headers')
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('an actual request from an allowed origin: Allow-Origin, credentials and expose on the upstream\'s response', async () => {
    const up = await startUpstream((_req, res) => {
      res.writeHead(200, { vary: 'Accept-Encoding', 'x-total': '3', 'content-type': 'text/plain' })
      res.end('ok')
    })
    const gw = await gateway({
      upstreamUrl: up.url,
      inbound: [pipe('cors', { origins: ['https://app.example.com'], credentials: true, expose: ['X-Total'] })],
    })
    try {
      const res = await request(gw.url).get('/api/items').set('origin', 'https://app.example.com')
      expect(res.status).toBe(200)
      expect(res.text).toBe('ok')
      expect(res.headers['access-control-allow-origin']).toBe('https://app.example.com')
      expect(res.headers['access-control-allow-credentials']).toBe('true')
      expect(res.headers['access-control-expose-headers']).toBe('X-Total')
      expect(res.headers['access-control-allow-methods']).toBeUndefined()
      expect(res.headers.vary).toBe('Accept-Encoding, Origin')
      expect(up.received).toHaveLength(1)
      expect(up.received[0].headers.origin).toBe('https://app.example.com')
    } finally { await gw.close(); await up.close() }
  })

  test('the upstream\'s own Access-Control-* headers are replaced by the policy', async () => {
    // Stops an upstream that answers `Access-Control-Allow-Origin: *` from opening what routes.yaml keeps closed.
    const up = await startUpstream((_req, res) => {
      res.writeHead(200, { 'access-control-allow-origin': '*', 'access-control-allow-credentials': 'true', 'access-control-expose-headers': 'x-secret' })
      res.end('{}')
    })
    const gw = await gateway({ upstreamUrl: up.url, inbound: [pipe('cors', { origins: ['https://app.example.com'] })] })
    try {
      const refused = await request(gw.url).get('/api/items').set('origin', 'https://evil.net')
      expect(refused.status).toBe(200) // CORS is enforced by the browser, as the cors package and Kong leave it
      expect(Object.keys(refused.headers).filter(h => h.startsWith('access-control-'))).toEqual([])
      expect(refused.headers.vary).toBe('Origin')
      const allowed = await request(gw.url).get('/api/items').set('origin', 'https://app.example.com')
      expect(allowed.headers['access-control-allow-origin']).toBe('https://app.example.com')
      expect(allowed.headers['access-control-allow-credentials']).toBeUndefined()
      expect(allowed.headers['access-control-expose-headers']).toBeUndefined()
    } finally { await gw.close(); await up.close() }
  })

  test('errors the gateway produces carry the CORS headers, so the page can read them', async () => {
    const gw = await gateway({
      global: [pipe('cors', { origins: ['https://app.example.com'] })],
      inbound: [pipe('refuse')],
    })
    try {
      const res = await request(gw.url).get('/api/items').set('origin', 'https://app.example.com')
      expect(res.status).toBe(401)
      expect(res.body.error_code).toBe('Unauthorized')
      expect(res.headers['access-control-allow-origin']).toBe('https://app.example.com')
      expect(res.headers.vary).toBe('Origin')
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('origin globs match subdomains of the same scheme and port only', async () => {
    const gw = await gateway({ inbound: [pipe('cors', { origins: ['https://*.example.com', 'http://localhost:*'] })] })
    try {
      const allowOrigin = async (origin: string): Promise<string | undefined> =>
        (await request(gw.url).get('/api/x').set('origin', origin)).headers['access-control-allow-origin']
      expect(await allowOrigin('https://app.example.com')).toBe('https://app.example.com')
      expect(await allowOrigin('https://a.b.example.com')).toBe('https://a.b.example.com')
      expect(await allowOrigin('http://localhost:5173')).toBe('http://localhost:5173')
      for (const origin of ['https://example.com', 'http://app.example.com', 'https://app.example.com:8443',
        'https://app.example.com.evil.net', 'https://evilexample.com', 'http://localhost.evil.net']) {
        expect([origin, await allowOrigin(origin)]).toEqual([origin, undefined])
      }
    } finally { await gw.close() }
  })

  test('"*" answers "*" without credentials', async () => {
    const gw = await gateway({ inbound: [pipe('cors')] })
    try {
      const res = await request(gw.url).get('/api/x').set('origin', 'https://any.site')
      expect(res.headers['access-control-allow-origin']).toBe('*')
      expect(res.headers.vary).toBeUndefined()
      const pre = await preflight(gw, 'https://any.site')
      expect(pre.status).toBe(204)
      expect(pre.headers['access-control-allow-origin']).toBe('*')
      expect(pre.headers.vary).toBe('Access-Control-Request-Headers')
    } finally { await gw.close() }
  })

  test('"*" with credentials reflects the Origin, but never "null"', async () => {
    // Stops sandboxed iframes and file: pages (Origin: null), which any attacker can create, from reading credentialed answers.
    const gw = await gateway({ inbound: [pipe('cors', { origins: ['*'], credentials: true })] })
    try {
      const res = await request(gw.url).get('/api/x').set('origin', 'https://any.site')
      expect(res.headers['access-control-allow-origin']).toBe('https://any.site')
      expect(res.headers['access-control-allow-credentials']).toBe('true')
      expect(res.headers.vary).toBe('Origin')
      const opaque = await request(gw.url).get('/api/x').set('origin', 'null')
      expect(opaque.headers['access-control-allow-origin']).toBeUndefined()
      expect(opaque.headers['access-control-allow-credentials']).toBeUndefined()
    } finally { await gw.close() }
  })

  test('a request without Origin passes untouched but for Vary', async () => {
    const gw = await gateway({ inbound: [pipe('cors', { origins: ['https://app.example.com'] })] })
    try {
      const res = await request(gw.url).get('/api/x')
      expect(res.status).toBe(200)
      expect(Object.keys(res.headers).filter(h => h.startsWith('access-control-'))).toEqual([])
      expect(res.headers.vary).toBe('Origin')
      expect(upstream.received).toHaveLength(1)
    } finally { await gw.close() }
  })

  test('an origin written with a path or a default port is a config error', async () => {
    expect(await configError({ inbound: [pipe('cors', { origins: ['https://app.example.com/'] })] }))
      .toMatch(/pipe "cors" could not be created: origins: "https:\/\/app\.example\.com\/" is not an origin: write scheme:\/\/host\[:port\]/)
    expect(await configError({ inbound: [pipe('cors', { origins: ['https://app.example.com:443'] })] }))
      .toMatch(/origins: "https:\/\/app\.example\.com:443" is not how a browser sends that origin \(it sends "https:\/\/app\.example\.com"\)/)
    expect(await configError({ inbound: [pipe('cors', { origin: ['https://app.example.com'] })] }))
      .toMatch(/unknown property "origin"/)
  })
})

/** Sends `chunks` with Transfer-Encoding: chunked (no Content-Length) and reads the answer. */
async function chunkedPost (url: string, chunks: Buffer[], headers: http.OutgoingHttpHeaders = {}): Promise<{ status: number, body: string }> {
  const req = http.request(url, { method: 'POST', headers: { 'transfer-encoding': 'chunked', ...headers } })
  const answered = once(req, 'response') as Promise<[http.IncomingMessage]>
  req.on('error', () => {}) // the gateway may close once it has refused
  for (const chunk of chunks) req.write(chunk)
  req.end()
  const [res] = await answered
  let body = ''
  for await (const chunk of res) body += String(chunk)
  return { status: res.statusCode ?? 0, body }
}

describe('request-size', () => {
  test('a body within max_bytes goes upstream byte for byte', async () => {
    const gw = await gateway({ inbound: [pipe('request-size', { max_bytes: 16 })] })
    try {
      const res = await request(gw.url).post('/api/x').set('content-type', 'application/octet-stream').send(Buffer.from('0123456789abcdef'))
      expect(res.status).toBe(200)
      expect(upstream.received[0].body.toString()).toBe('0123456789abcdef')
      expect(upstream.received[0].headers['content-length']).toBe('16')
    } finally { await gw.close() }
  })

  test('a declared Content-Length over max_bytes is refused with 413 before the body is sent', async () => {
    // Stops a client from tying up the route with a body the route will never accept.
    const gw = await gateway({ inbound: [pipe('request-size', { max_bytes: 1024 })] })
    try {
      const req = http.request(`${gw.url}/api/x`, { method: 'POST', headers: { 'content-length': '10000000', 'content-type': 'application/octet-stream' } })
      req.on('error', () => {})
      const answered = once(req, 'response') as Promise<[http.IncomingMessage]>
      req.flushHeaders() // headers only: the body is never written
      const [res] = await answered
      let body = ''
      for await (const chunk of res) body += String(chunk)
      req.destroy()
      expect(res.statusCode).toBe(413)
      expect(JSON.parse(body)).toMatchObject({ error_code: 'PayloadTooLarge', error_message: 'the request body is larger than 1024 bytes' })
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('a chunked body over max_bytes is refused with 413 and never reaches the upstream', async () => {
    const gw = await gateway({ inbound: [pipe('request-size', { max_bytes: 100 })] })
    try {
      const res = await chunkedPost(`${gw.url}/api/x`, [Buffer.alloc(60, 'a'), Buffer.alloc(60, 'b')])
      expect(res.status).toBe(413)
      expect(JSON.parse(res.body).error_code).toBe('PayloadTooLarge')
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('a chunked body within max_bytes goes upstream whole, with its length', async () => {
    const gw = await gateway({ inbound: [pipe('request-size', { max_bytes: 100 })] })
    try {
      const res = await chunkedPost(`${gw.url}/api/x`, [Buffer.alloc(50, 'a'), Buffer.alloc(50, 'b')])
      expect(res.status).toBe(200)
      expect(upstream.received[0].body.toString()).toBe('a'.repeat(50) + 'b'.repeat(50))
      expect(upstream.received[0].headers['content-length']).toBe('100')
    } finally { await gw.close() }
  })
})

describe('request-validate', () => {
  const validate = pipe('request-validate', {
    body: {
      type: 'object',
      required: ['name', 'email'],
      properties: { name: { type: 'string', minLength: 1 }, email: { type: 'string', format: 'email' }, age: { type: 'integer', minimum: 0 } },
      additionalProperties: false,
    },
    query: {
      type: 'object',
      properties: { limit: { type: 'integer', maximum: 100 }, tag: { type: 'array', items: { type: 'string' } } },
      additionalProperties: false,
    },
    headers: { type: 'object', required: ['X-Api-Version'], properties: { 'X-Api-Version': { enum: ['1', '2'] } } },
  })

  test('a request that matches its schemas goes upstream unchanged', async () => {
    const gw = await gateway({ inbound: [validate] })
    try {
      const body = '{"name":"Ada","email":"ada@example.com","age":36}'
      const res = await request(gw.url).post('/api/users?limit=10&tag=a&tag=b').set('x-api-version', '2').set('content-type', 'application/json').send(body)
      expect(res.status).toBe(200)
      expect(upstream.received).toHaveLength(1)
      expect(upstream.received[0].url).toBe('/users?limit=10&tag=a&tag=b')
      expect(upstream.received[0].body.toString()).toBe(body)
      // a single value meets `type: array`; the upstream still gets the client's query
      expect((await request(gw.url).post('/api/users?tag=a').set('x-api-version', '1').send({ name: 'B', email: 'b@example.com' })).status).toBe(200)
      expect(upstream.received[1].url).toBe('/users?tag=a')
    } finally { await gw.close() }
  })

  test('a request that does not is refused with 400 ValidationFailed listing every error', async () => {
    // Stops malformed input from reaching a service that trusts the gateway to have checked it.
    const gw = await gateway({ inbound: [validate] })
    try {
      const res = await request(gw.url).post('/api/users?limit=abc&extra=1').set('content-type', 'application/json')
        .send('{"name":"","email":"not-an-email","admin":true}')
      expect(res.status).toBe(400)
      expect(res.body.error_code).toBe('ValidationFailed')
      expect(res.body.error_message).toBe('query must NOT have additional properties (and 5 more)')
      expect(res.body.request_id).toBe(res.headers['x-request-id'])
      expect(res.body.errors).toEqual([
        { location: 'query', instancePath: '', keyword: 'additionalProperties', message: 'must NOT have additional properties', params: { additionalProperty: 'extra' } },
        { location: 'query', instancePath: '/limit', keyword: 'type', message: 'must be integer', params: { type: 'integer' } },
        { location: 'headers', instancePath: '', keyword: 'required', message: "must have required property 'x-api-version'", params: { missingProperty: 'x-api-version' } },
        { location: 'body', instancePath: '', keyword: 'additionalProperties', message: 'must NOT have additional properties', params: { additionalProperty: 'admin' } },
        { location: 'body', instancePath: '/name', keyword: 'minLength', message: 'must NOT have fewer than 1 characters', params: { limit: 1 } },
        { location: 'body', instancePath: '/email', keyword: 'format', message: 'must match format "email"', params: { format: 'email' } },
      ])
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('a body that is not JSON is refused with one parse error entry', async () => {
    const gw = await gateway({ inbound: [pipe('request-validate', { body: { type: 'object' } })] })
    try {
      const res = await request(gw.url).post('/api/x').set('content-type', 'application/json').send('{"name":')
      expect(res.status).toBe(400)
      expect(res.body.error_code).toBe('ValidationFailed')
      expect(res.body.errors).toEqual([{ location: 'body', instancePath: '', keyword: 'json', message: expect.stringMatching(/^is not valid JSON: /), params: {} }])
      // {"\xff":1}: a decoder that swaps in U+FFFD would see another key than the upstream's
      const invalidUtf8 = await chunkedPost(`${gw.url}/api/x`, [Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d])], { 'content-type': 'application/json' })
      expect(invalidUtf8.status).toBe(400)
      expect(JSON.parse(invalidUtf8.body).errors[0].message).toBe('is not valid JSON: invalid UTF-8')
      const empty = await request(gw.url).post('/api/x').set('content-type', 'application/json')
      expect(empty.status).toBe(400)
      expect(empty.body.errors[0]).toMatchObject({ keyword: 'required', message: 'must have a JSON body' })
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('a body sent under a non-JSON Content-Type is refused, even if it parses as JSON', async () => {
    // Stops a body from being validated as JSON at the gateway and read as a form (or text) by the upstream.
    const gw = await gateway({ inbound: [pipe('request-validate', { body: { type: 'object', properties: { role: { const: 'user' } } } })] })
    try {
      for (const type of ['application/x-www-form-urlencoded', 'text/plain']) {
        const res = await request(gw.url).post('/api/x').set('content-type', type).send('{"role":"user"}')
        expect(res.status).toBe(400)
        expect(res.body.errors).toEqual([{ location: 'body', instancePath: '', keyword: 'contentType', message: 'must be sent with Content-Type: application/json', params: {} }])
      }
      expect(upstream.received).toHaveLength(0)
      const json = await request(gw.url).post('/api/x').set('content-type', 'application/merge-patch+json; charset=utf-8').send('{"role":"user"}')
      expect(json.status).toBe(200)
      expect(upstream.received[0].body.toString()).toBe('{"role":"user"}')
    } finally { await gw.close() }
  })

  test('a chunked JSON body is validated and goes upstream with its length', async () => {
    const gw = await gateway({ inbound: [pipe('request-validate', { body: { type: 'object', required: ['a'] } })] })
    try {
      const ok = await chunkedPost(`${gw.url}/api/x`, [Buffer.from('{"a"'), Buffer.from(':1}')], { 'content-type': 'application/json' })
      expect(ok.status).toBe(200)
      expect(upstream.received[0].body.toString()).toBe('{"a":1}')
      expect(upstream.received[0].headers['content-length']).toBe('7')
      const bad = await chunkedPost(`${gw.url}/api/x`, [Buffer.from('{"b"'), Buffer.from(':1}')], { 'content-type': 'application/json' })
      expect(bad.status).toBe(400)
      expect(upstream.received).toHaveLength(1)
    } finally { await gw.close() }
  })

  test('a query key named __proto__ is validated as a key like any other', async () => {
    const gw = await gateway({ inbound: [pipe('request-validate', { query: { type: 'object', additionalProperties: false, properties: { q: { type: 'string' } } } })] })
    try {
      const res = await request(gw.url).get('/api/x?q=1&__proto__=x')
      expect(res.status).toBe(400)
      expect(res.body.errors).toEqual([{ location: 'query', instancePath: '', keyword: 'additionalProperties', message: 'must NOT have additional properties', params: { additionalProperty: '__proto__' } }])
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('at most 100 errors are listed', async () => {
    const gw = await gateway({ inbound: [pipe('request-validate', { body: { type: 'array', items: { type: 'string' } } })] })
    try {
      const res = await request(gw.url).post('/api/x').set('content-type', 'application/json').send(JSON.stringify(new Array(500).fill(1)))
      expect(res.status).toBe(400)
      expect(res.body.errors).toHaveLength(100)
      expect(res.body.error_message).toBe('body/0 must be string (and 499 more)')
    } finally { await gw.close() }
  })

  test('a schema ajv cannot compile (a misspelt keyword) is a config error at the pipe', async () => {
    expect(await configError({ inbound: [pipe('request-validate', { body: { type: 'object', properties: { name: { type: 'string', minlength: 1 } } } })] }))
      .toMatch(/pipe "request-validate" could not be created: body: the JSON Schema does not compile: strict mode: unknown keyword: "minlength"/)
    expect(await configError({ inbound: [pipe('request-validate', {})] })).toMatch(/set at least one of body, query or headers/)
  })
})

describe('request-headers', () => {
  test('set replaces, remove drops', async () => {
    const gw = await gateway({ inbound: [pipe('request-headers', { set: { 'X-Tenant': 'acme', 'User-Agent': 'sluice' }, remove: ['Cookie', 'x-debug'] })] })
    try {
      const res = await request(gw.url).get('/api/x').set('x-tenant', 'spoofed').set('cookie', 'session=1').set('x-debug', '1').set('x-kept', 'yes')
      expect(res.status).toBe(200)
      const { headers } = upstream.received[0]
      expect(headers['x-tenant']).toBe('acme')
      expect(headers['user-agent']).toBe('sluice')
      expect(headers.cookie).toBeUndefined()
      expect(headers['x-debug']).toBeUndefined()
      expect(headers['x-kept']).toBe('yes')
    } finally { await gw.close() }
  })

  test('allow drops every header not listed, but never the gateway\'s own or the body\'s framing', async () => {
    // Stops clients from passing internal headers (X-Internal-User, X-Forwarded-User…) the upstream would trust.
    const gw = await gateway({ inbound: [pipe('request-headers', { allow: ['Content-Type', 'accept'] })] })
    try {
      const res = await request(gw.url).post('/api/x').set('x-internal-user', 'admin').set('accept', 'application/json')
        .set('content-type', 'application/json').set('x-request-id', 'trace-1').send('{"a":1}')
      expect(res.status).toBe(200)
      const { headers, body } = upstream.received[0]
      expect(Object.keys(headers).sort()).toEqual(['accept', 'connection', 'content-length', 'content-type', 'host',
        'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-request-id'])
      expect(headers['x-request-id']).toBe('trace-1')
      expect(headers.connection).toBe('keep-alive') // the gateway's pooled connection to the upstream
      expect(body.toString()).toBe('{"a":1}')
    } finally { await gw.close() }
  })

  test('order: allow, then remove, then set', async () => {
    const gw = await gateway({ inbound: [pipe('request-headers', { allow: ['x-a', 'x-b'], remove: ['x-b'], set: { 'x-c': 'set' } })] })
    try {
      await request(gw.url).get('/api/x').set('x-a', '1').set('x-b', '2').set('x-c', 'client').set('x-d', '4')
      const { headers } = upstream.received[0]
      expect([headers['x-a'], headers['x-b'], headers['x-c'], headers['x-d']]).toEqual(['1', undefined, 'set', undefined])
    } finally { await gw.close() }
  })

  test('framing and hop-by-hop headers cannot be set or removed; values cannot break the header section', async () => {
    expect(await configError({ inbound: [pipe('request-headers', { set: { 'Content-Length': '0' } })] }))
      .toMatch(/pipe "request-headers" could not be created: set: "Content-Length" is managed by the gateway/)
    expect(await configError({ inbound: [pipe('request-headers', { remove: ['transfer-encoding'] })] }))
      .toMatch(/remove: "transfer-encoding" is managed by the gateway/)
    // Stops a value with CR LF from injecting a header (or a second request) towards the upstream.
    expect(await configError({ inbound: [pipe('request-headers', { set: { 'x-a': 'b\r\nx-admin: 1' } })] }))
      .toMatch(/pipe "request-headers" could not be created: set: the value of "x-a" contains a line break or control character/)
    expect(await configError({ inbound: [pipe('request-headers', { allow: ['x a'] })] })).toMatch(/allow: "x a" is not a header name/)
  })
})
