/** Proxying (http.md): what the upstream receives and what the client gets back. */
import http from 'node:http'
import net from 'node:net'
import { once } from 'node:events'
import request from 'supertest'
import WebSocket, { WebSocketServer } from 'ws'
import { closedPort, echo, startUpstream, type Upstream } from './support/upstream'
import { startGateway, type RunningGateway } from './support/gateway'
import { refusedUpgrade } from './support/websocket'

function config (url: string, extraRoutes = '', serviceExtra = '', server = ''): string {
  return `
version: 1
${server}
services:
  api:
    instances: [{ url: ${url} }]
${serviceExtra}
routes:
  - { name: all, service_name: api, methods: [GET, POST, PUT, DELETE, PATCH, OPTIONS], path: "/api/<path:rest>", upstream_path: "/<rest>" }
${extraRoutes}`
}

describe('against an echoing upstream', () => {
  let upstream: Upstream
  let gw: RunningGateway
  beforeAll(async () => {
    upstream = await startUpstream(echo)
    gw = await startGateway(config(upstream.url, `
  - { name: tenant, service_name: api, methods: [GET, POST], path: "/t/<id>", upstream_path: "/tenants/<tenant>/items/<id>" }
`, '', `
server:
  trust_proxy: [10.0.0.0/8, 127.0.0.1/32]
`))
  })
  afterAll(async () => { await gw.close(); await upstream.close() })
  beforeEach(() => { upstream.received.length = 0 })

  test('requests with and without bodies on one keep-alive connection reach the upstream with exactly their bodies', async () => {
    // A request with no Transfer-Encoding and no (or a zero) Content-Length
    // is sent upstream without piping; every other one streams its body.
    const socket = net.connect(gw.port, '127.0.0.1')
    await once(socket, 'connect')
    socket.write(
      'GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n' +
      'GET /api/b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello' +
      'DELETE /api/c HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n' +
      'POST /api/d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' +
      'HEAD /api/e HTTP/1.1\r\nHost: x\r\n\r\n' +
      'GET /api/f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    let raw = ''
    socket.setEncoding('latin1')
    socket.on('data', (d: string) => { raw += d })
    await once(socket, 'end')
    expect(raw.match(/HTTP\/1\.1 200 OK\r\n/g)).toHaveLength(6)
    expect(upstream.received.map(r => [r.method, r.url, r.body.toString()])).toEqual([
      ['GET', '/a', ''], ['GET', '/b', 'hello'], ['DELETE', '/c', ''], ['POST', '/d', 'abc'], ['HEAD', '/e', ''], ['GET', '/f', ''],
    ])
    const [a, b, c, d] = upstream.received
    expect([a.headers['content-length'], a.headers['transfer-encoding']]).toEqual([undefined, undefined])
    expect(b.headers['content-length']).toBe('5')
    expect(c.headers['content-length']).toBe('0')
    expect(d.headers['transfer-encoding']).toBe('chunked')
  })

  test('upstream 4xx and 5xx statuses and bodies pass through unchanged', async () => {
    const up = await startUpstream((req, res) => { res.writeHead(Number(req.url?.slice(1)), { 'x-up': 'yes' }); res.end(`status ${req.url}`) })
    const g = await startGateway(config(up.url))
    try {
      for (const status of [201, 404, 418, 500, 503]) {
        const res = await request(g.url).get(`/api/${status}`)
        expect(res.status).toBe(status)
        expect(res.text).toBe(`status /${status}`)
        expect(res.headers['x-up']).toBe('yes')
      }
    } finally { await g.close(); await up.close() }
  })

  test('redirects are passed back, never followed', async () => {
    const up = await startUpstream((_req, res) => { res.writeHead(302, { location: 'http://elsewhere.invalid/x' }); res.end() })
    const g = await startGateway(config(up.url))
    try {
      const res = await request(g.url).get('/api/go').redirects(0)
      expect(res.status).toBe(302)
      expect(res.headers.location).toBe('http://elsewhere.invalid/x')
      expect(up.received).toHaveLength(1)
    } finally { await g.close(); await up.close() }
  })

  test('hop-by-hop request headers are removed, end-to-end ones kept', async () => {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.request(`${gw.url}/api/h`, {
        method: 'POST',
        headers: {
          connection: 'keep-alive, x-hop',
          'x-hop': 'secret',
          'keep-alive': 'timeout=5',
          'proxy-connection': 'keep-alive',
          te: 'trailers',
          trailer: 'x-t', // Node allows a Trailer header on a chunked body only
          'transfer-encoding': 'chunked',
          'proxy-authorization': 'Basic Zm9vOmJhcg==',
          upgrade: 'h2c',
          'x-end-to-end': 'kept',
          traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
          tracestate: 'vendor=value',
        },
      }, resolve)
      req.on('error', reject)
      req.end('body')
    })
    res.resume()
    expect(res.statusCode).toBe(200)
    const h = upstream.received[0].headers
    for (const name of ['x-hop', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'proxy-authorization', 'upgrade']) expect(h[name]).toBeUndefined()
    expect(h.connection).not.toMatch(/x-hop/)
    expect(h['x-end-to-end']).toBe('kept')
    expect(h.traceparent).toBe('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01')
    expect(h.tracestate).toBe('vendor=value')
  })

  test('Host is the upstream\'s; X-Forwarded-Host and -Proto describe the client side', async () => {
    await request(gw.url).get('/api/host').set('host', 'gateway.example')
    const h = upstream.received[0].headers
    expect(h.host).toBe(`127.0.0.1:${upstream.port}`)
    expect(h['x-forwarded-host']).toBe('gateway.example')
    expect(h['x-forwarded-proto']).toBe('http')
  })

  test('X-Forwarded-For from a trusted proxy is appended to', async () => {
    await request(gw.url).get('/api/xff').set('x-forwarded-for', '203.0.113.7')
    expect(upstream.received[0].headers['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1')
  })

  test('a sane X-Request-Id is kept and returned; an insane one is replaced', async () => {
    const kept = await request(gw.url).get('/api/id').set('x-request-id', 'abc-123')
    expect(kept.headers['x-request-id']).toBe('abc-123')
    expect(upstream.received[0].headers['x-request-id']).toBe('abc-123')
    const replaced = await request(gw.url).get('/api/id').set('x-request-id', 'x'.repeat(129))
    expect(replaced.headers['x-request-id']).toMatch(/^[A-Za-z0-9_-]{22}-\d+$/)
    expect(upstream.received[1].headers['x-request-id']).toBe(replaced.headers['x-request-id'])
    const generated = await request(gw.url).get('/api/id')
    expect(generated.headers['x-request-id']).toMatch(/^[A-Za-z0-9_-]{22}-\d+$/)
    expect(generated.headers['x-request-id']).not.toBe(replaced.headers['x-request-id'])
  })

  test('an upstream-only placeholder takes its value from a header first', async () => {
    await request(gw.url).get('/t/7?tenant=from-query').set('Tenant', 'from-header')
    expect(upstream.received[0].url).toBe('/tenants/from-header/items/7?tenant=from-query')
  })

  test('…then from the query string', async () => {
    await request(gw.url).get('/t/7?tenant=acme')
    expect(upstream.received[0].url).toBe('/tenants/acme/items/7?tenant=acme')
  })

  test('…then from a urlencoded form field, sending the same bytes on', async () => {
    const body = 'a=1&tenant=form-co&z=%20'
    await request(gw.url).post('/t/7').set('content-type', 'application/x-www-form-urlencoded').send(body)
    expect(upstream.received[0].url).toBe('/tenants/form-co/items/7')
    expect(upstream.received[0].body.toString()).toBe(body)
    expect(upstream.received[0].headers['content-length']).toBe(String(body.length))
  })

  test('…then from a multipart field, the body byte-identical', async () => {
    const boundary = '----sluiceBoundary42'
    const body = Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="tenant"\r\n\r\nmulti-co\r\n`),
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`),
      Buffer.from([0, 1, 2, 255, 13, 10, 45, 45]),
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ])
    await request(gw.url).post('/t/7').set('content-type', `multipart/form-data; boundary=${boundary}`).send(body)
    expect(upstream.received[0].url).toBe('/tenants/multi-co/items/7')
    expect(upstream.received[0].body.equals(body)).toBe(true)
  })

  test('…then from a top-level JSON field', async () => {
    const body = '{"tenant": "json-co", "n": 1}'
    await request(gw.url).post('/t/7').set('content-type', 'application/json').send(body)
    expect(upstream.received[0].url).toBe('/tenants/json-co/items/7')
    expect(upstream.received[0].body.toString()).toBe(body)
  })

  test('no value anywhere is 400 MissingParameter naming it, and nothing goes upstream', async () => {
    const res = await request(gw.url).post('/t/7').set('content-type', 'application/json').send('{"other": 1}')
    expect(res.status).toBe(400)
    expect(res.body.error_code).toBe('MissingParameter')
    expect(res.body.error_message).toMatch(/"tenant"/)
    expect(upstream.received).toHaveLength(0)
  })

  test('multipart bodies stream through byte-identical, boundary intact', async () => {
    const boundary = 'XyZ-boundary'
    const body = Buffer.concat([Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n\r\n`), Buffer.alloc(100_000, 7), Buffer.from(`\r\n--${boundary}--\r\n`)])
    await request(gw.url).post('/api/upload').set('content-type', `multipart/form-data; boundary=${boundary}`).send(body)
    expect(upstream.received[0].headers['content-type']).toBe(`multipart/form-data; boundary=${boundary}`)
    expect(upstream.received[0].body.equals(body)).toBe(true)
  })

  test('a chunked request body is forwarded chunked', async () => {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.request(`${gw.url}/api/chunked`, { method: 'POST' }, resolve)
      req.on('error', reject)
      req.write('part one,')
      setImmediate(() => req.end('part two'))
    })
    res.resume()
    expect(res.statusCode).toBe(200)
    expect(upstream.received[0].headers['transfer-encoding']).toBe('chunked')
    expect(upstream.received[0].body.toString()).toBe('part one,part two')
  })
})

describe('streaming', () => {
  test('server-sent events are flushed per event, not buffered', async () => {
    let push: ((s: string) => void) | undefined
    const up = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
      res.write('data: first\n\n')
      push = (s) => res.write(s)
    })
    const gw = await startGateway(config(up.url))
    try {
      const res = await new Promise<http.IncomingMessage>((resolve) => http.get(`${gw.url}/api/events`, resolve))
      expect(res.headers['content-type']).toBe('text/event-stream')
      const [first] = await once(res, 'data') as [Buffer]
      expect(first.toString()).toBe('data: first\n\n')
      push?.('data: second\n\n')
      const [second] = await once(res, 'data') as [Buffer]
      expect(second.toString()).toBe('data: second\n\n')
      res.destroy()
    } finally { await gw.close(); await up.close() }
  })

  test('a long chunked watch stream passes each chunk as it arrives', async () => {
    let push: ((s: string) => void) | undefined
    let end: (() => void) | undefined
    const up = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.write('{"type":"ADDED"}\n')
      push = (s) => res.write(s)
      end = () => res.end()
    })
    const gw = await startGateway(config(up.url))
    try {
      const res = await new Promise<http.IncomingMessage>((resolve) => http.get(`${gw.url}/api/watch`, resolve))
      expect(res.headers['transfer-encoding']).toBe('chunked')
      const lines: string[] = []
      res.on('data', (c: Buffer) => lines.push(c.toString()))
      await new Promise(resolve => setTimeout(resolve, 20)) // the first chunk, without the stream ending
      expect(lines).toEqual(['{"type":"ADDED"}\n'])
      for (let i = 0; i < 3; i++) {
        push?.(`{"type":"MODIFIED","n":${i}}\n`)
        await once(res, 'data')
      }
      end?.()
      await once(res, 'end')
      expect(lines.join('')).toBe('{"type":"ADDED"}\n{"type":"MODIFIED","n":0}\n{"type":"MODIFIED","n":1}\n{"type":"MODIFIED","n":2}\n')
    } finally { await gw.close(); await up.close() }
  })

  test('a large download is held back while the client does not read, then arrives whole', async () => {
    const size = 64 * 1024 * 1024
    const chunk = Buffer.alloc(256 * 1024)
    for (let i = 0; i < chunk.length; i++) chunk[i] = i % 251
    let written = 0
    const up = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size })
      const write = (): void => {
        while (written < size) {
          written += chunk.length
          if (!res.write(chunk)) { res.once('drain', write); return }
        }
        res.end()
      }
      write()
    }, { bufferBody: false })
    const gw = await startGateway(config(up.url))
    try {
      const res = await new Promise<http.IncomingMessage>((resolve) => http.get(`${gw.url}/api/big`, resolve))
      res.pause()
      await new Promise(resolve => setTimeout(resolve, 500))
      // Socket buffers on both hops hold a few MiB; the gateway holds no more than its response's buffer.
      expect(written).toBeLessThan(size / 2)
      let received = 0
      let intact = true
      res.on('data', (c: Buffer) => {
        for (let i = 0; i < c.length; i += 4093) if (c[i] !== (received + i) % chunk.length % 251) intact = false
        received += c.length
      })
      res.resume()
      await once(res, 'end')
      expect(received).toBe(size)
      expect(intact).toBe(true)
    } finally { await gw.close(); await up.close() }
  })

  test('a large upload streams through without being buffered whole', async () => {
    let seen = 0
    const up = await startUpstream((req, res) => {
      req.on('data', (c: Buffer) => { seen += c.length })
      req.on('end', () => res.end(String(seen)))
    }, { bufferBody: false })
    const gw = await startGateway(config(up.url, '', '', 'server:\n  limits: { max_body_bytes: 1073741824 }'))
    try {
      const size = 64 * 1024 * 1024
      const chunk = Buffer.alloc(1024 * 1024, 1)
      const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
        const req = http.request(`${gw.url}/api/big`, { method: 'PUT', headers: { 'content-length': size } }, resolve)
        req.on('error', reject)
        let sent = 0
        const write = (): void => {
          while (sent < size) { sent += chunk.length; if (!req.write(chunk)) { req.once('drain', write); return } }
          req.end()
        }
        write()
      })
      let text = ''
      for await (const c of res) text += String(c)
      expect(text).toBe(String(size))
    } finally { await gw.close(); await up.close() }
  })
})

describe('failures', () => {
  test('connect refused is 502 UpstreamUnreachable without internal addresses', async () => {
    const port = await closedPort()
    const gw = await startGateway(config(`http://127.0.0.1:${port}`))
    try {
      const res = await request(gw.url).get('/api/x')
      expect(res.status).toBe(502)
      expect(res.body.error_code).toBe('UpstreamUnreachable')
      expect(res.text).not.toContain(String(port))
      expect(res.text).not.toContain('127.0.0.1')
      expect(res.text).not.toContain('ECONNREFUSED')
    } finally { await gw.close() }
  })

  test('no response headers within timeout_ms is 504 UpstreamTimeout', async () => {
    const up = await startUpstream(() => { /* never answers */ })
    const gw = await startGateway(config(up.url, '', '    timeout_ms: 150'))
    try {
      const started = Date.now()
      const res = await request(gw.url).get('/api/slow')
      expect(res.status).toBe(504)
      expect(res.body.error_code).toBe('UpstreamTimeout')
      expect(res.body.error_message).toContain('150 ms')
      expect(Date.now() - started).toBeGreaterThanOrEqual(140)
    } finally { await gw.close(); await up.close() }
  })

  test('a slow but streaming response is not a timeout once headers arrived', async () => {
    const up = await startUpstream((_req, res) => {
      res.writeHead(200)
      res.write('a')
      setTimeout(() => res.end('b'), 300)
    })
    const gw = await startGateway(config(up.url, '', '    timeout_ms: 100'))
    try {
      const res = await request(gw.url).get('/api/stream')
      expect(res.status).toBe(200)
      expect(res.text).toBe('ab')
    } finally { await gw.close(); await up.close() }
  })

  test('a declared body over max_body_bytes is 413 and the upstream never sees it', async () => {
    const up = await startUpstream()
    const gw = await startGateway(config(up.url, '', '', 'server:\n  limits: { max_body_bytes: 1000 }'))
    try {
      const res = await request(gw.url).post('/api/upload').send('x'.repeat(1001))
      expect(res.status).toBe(413)
      expect(res.body.error_code).toBe('PayloadTooLarge')
      expect(up.received).toHaveLength(0)
      const ok = await request(gw.url).post('/api/upload').send('x'.repeat(1000))
      expect(ok.status).toBe(200)
    } finally { await gw.close(); await up.close() }
  })

  test('a chunked body over max_body_bytes is counted as it streams: 413, upstream request aborted', async () => {
    const up = await startUpstream()
    const gw = await startGateway(config(up.url, '', '', 'server:\n  limits: { max_body_bytes: 1000 }'))
    try {
      const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
        const req = http.request(`${gw.url}/api/upload`, { method: 'POST' }, resolve)
        req.on('error', reject)
        req.write(Buffer.alloc(600))
        setTimeout(() => req.end(Buffer.alloc(600)), 10)
      })
      let text = ''
      for await (const c of res) text += String(c)
      expect(res.statusCode).toBe(413)
      expect(JSON.parse(text).error_code).toBe('PayloadTooLarge')
      expect(up.received).toHaveLength(0) // the upstream never got a complete request
    } finally { await gw.close(); await up.close() }
  })

  test('a client that disconnects mid-stream aborts the upstream request', async () => {
    let upstreamClosed: Promise<unknown> | undefined
    const up = await startUpstream((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write('data: hello\n\n')
      upstreamClosed = once(res, 'close')
    })
    const gw = await startGateway(config(up.url))
    try {
      const res = await new Promise<http.IncomingMessage>((resolve) => http.get(`${gw.url}/api/stream`, resolve))
      await once(res, 'data')
      res.destroy()
      await upstreamClosed
    } finally { await gw.close(); await up.close() }
  })

  test('a client that disconnects before the upstream answers aborts the upstream request', async () => {
    let closed: Promise<unknown> | undefined
    let arrived!: () => void
    const arrival = new Promise<void>((resolve) => { arrived = resolve })
    const up = await startUpstream((req) => { closed = once(req.socket, 'close'); arrived() })
    const gw = await startGateway(config(up.url))
    try {
      const req = http.get(`${gw.url}/api/wait`)
      req.on('error', () => {})
      await arrival
      req.destroy()
      await closed
    } finally { await gw.close(); await up.close() }
  })

  test('an upstream that dies mid-body ends the client response instead of hanging it', async () => {
    const up = await startUpstream((req, res) => {
      res.writeHead(200, { 'content-length': '100' })
      res.write('partial')
      setTimeout(() => req.socket.destroy(), 20)
    })
    const gw = await startGateway(config(up.url))
    try {
      let errored = ''
      const res = await new Promise<http.IncomingMessage>((resolve) => {
        http.get(`${gw.url}/api/die`, (r) => {
          r.on('error', (e) => { errored = e.message }) // 'aborted' is the expected outcome
          r.on('close', () => resolve(r))
          r.resume()
        })
      })
      expect(errored).toBe('aborted')
      expect(res.complete).toBe(false)
    } finally { await gw.close(); await up.close() }
  })
})

describe('connections', () => {
  test('requests reuse pooled keep-alive connections to the upstream', async () => {
    const up = await startUpstream()
    let connections = 0
    up.server.on('connection', () => { connections++ })
    const gw = await startGateway(config(up.url))
    try {
      for (let i = 0; i < 20; i++) expect((await request(gw.url).get(`/api/${i}`)).status).toBe(200)
      expect(connections).toBe(1)
    } finally { await gw.close(); await up.close() }
  })
})

describe('WebSockets', () => {
  test('an upgrade on a route is proxied both ways', async () => {
    const up = await startUpstream()
    const wss = new WebSocketServer({ server: up.server })
    let upgradeUrl = ''
    wss.on('connection', (socket, req) => {
      upgradeUrl = req.url ?? ''
      socket.on('message', (data) => socket.send(`echo:${String(data)}`))
    })
    const gw = await startGateway(config(up.url))
    try {
      const ws = new WebSocket(`ws://127.0.0.1:${gw.port}/api/socket?x=1`)
      await once(ws, 'open')
      ws.send('ping')
      const [data] = await once(ws, 'message') as [Buffer]
      expect(String(data)).toBe('echo:ping')
      expect(upgradeUrl).toBe('/socket?x=1')
      ws.close()
      await once(ws, 'close')
    } finally { wss.close(); await gw.close(); await up.close() }
  })

  test('an upgrade that matches no route is refused with 404 and the JSON error', async () => {
    const up = await startUpstream()
    const gw = await startGateway(config(up.url))
    try {
      const { status, body } = await refusedUpgrade(`ws://127.0.0.1:${gw.port}/nowhere`)
      expect(status).toBe(404)
      expect(JSON.parse(body).error_code).toBe('RouteNotFound')
    } finally { await gw.close(); await up.close() }
  })

  test('an upgrade to an unreachable upstream is refused with 502', async () => {
    const gw = await startGateway(config(`http://127.0.0.1:${await closedPort()}`))
    try {
      expect((await refusedUpgrade(`ws://127.0.0.1:${gw.port}/api/socket`)).status).toBe(502)
    } finally { await gw.close() }
  })
})

test('a raw socket that sends garbage gets a 400 from Node and the gateway keeps serving', async () => {
  const up = await startUpstream()
  const gw = await startGateway(config(up.url))
  try {
    const socket = net.connect(gw.port, '127.0.0.1')
    socket.write('NOT HTTP AT ALL\r\n\r\n')
    let text = ''
    for await (const c of socket) text += String(c)
    expect(text).toMatch(/^HTTP\/1\.1 400/)
    expect((await request(gw.url).get('/api/ok')).status).toBe(200)
  } finally { await gw.close(); await up.close() }
})

describe('WebSockets through pipes', () => {
  test('a WebSocket route\'s inbound pipes run on the upgrade: no key, no tunnel', async () => {
    // Attack: reach an authenticated route by upgrading instead of sending a plain request.
    const up = await startUpstream()
    const wss = new WebSocketServer({ server: up.server })
    let connections = 0
    wss.on('connection', (socket) => { connections++; socket.on('message', (d) => socket.send(`echo:${String(d)}`)) })
    const gw = await startGateway(config(up.url, `
  - name: ws
    service_name: api
    methods: [GET]
    path: /ws
    upstream_path: /ws
    pipelines:
      inbound: [{ name: api-key, properties: { keys: [s3cret-key-for-tests] } }]
`))
    try {
      const { status, body } = await refusedUpgrade(`ws://127.0.0.1:${gw.port}/ws`)
      expect(status).toBe(401)
      expect(JSON.parse(body).error_code).toBe('Unauthorized')
      expect(connections).toBe(0)

      const allowed = new WebSocket(`ws://127.0.0.1:${gw.port}/ws`, { headers: { authorization: 'token s3cret-key-for-tests' } })
      await once(allowed, 'open')
      allowed.send('hi')
      const [data] = await once(allowed, 'message') as [Buffer]
      expect(String(data)).toBe('echo:hi')
      allowed.close()
      await once(allowed, 'close')
    } finally { wss.close(); await gw.close(); await up.close() }
  })
})
