/** The pipeline runner: order, short-circuits, failures, bodies, custom pipe modules. */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import http from 'node:http'
import { once } from 'node:events'
import request from 'supertest'
import { loadConfigText, ConfigError } from '../src/config'
import { createPipeCatalog } from '../src/pipes/catalog'
import { compileGeneration } from '../src/gateway'
import { startUpstream, echo, type Upstream } from './support/upstream'
import { startGateway, type RunningGateway } from './support/gateway'

let dir: string
let upstream: Upstream

/** Writes a pipe module into the temp pipes_dir. */
function pipe (file: string, source: string): void {
  fs.writeFileSync(path.join(dir, 'pipes', file), source)
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-pipes-'))
  fs.mkdirSync(path.join(dir, 'pipes'))
  // Records its tag in a header, so the upstream and the client see the order.
  pipe('tag.js', `module.exports = {
    name: 'tag', phase: 'both',
    schema: { type: 'object', properties: { tag: { type: 'string' } }, required: ['tag'], additionalProperties: false },
    create: ({ tag }) => ({
      inbound: (ctx) => { ctx.request.headers['x-order'] = (ctx.request.headers['x-order'] ? ctx.request.headers['x-order'] + ',' : '') + tag },
      outbound: (ctx) => { ctx.response.headers['x-order'] = (ctx.response.headers['x-order'] ? ctx.response.headers['x-order'] + ',' : '') + tag },
    }),
  }`)
  pipe('answer.cjs', `module.exports = { name: 'answer', phase: 'inbound', create: () => (ctx) => ctx.respond(418, { short: true }, { 'x-answered': 'yes' }) }`)
  pipe('deny.js', `module.exports = { name: 'deny', phase: 'inbound', create: () => (ctx) => ctx.fail(403, 'Forbidden', 'not you') }`)
  pipe('boom.js', `module.exports = { name: 'boom', phase: 'inbound', create: () => () => { throw new Error('secret internal detail') } }`)
  pipe('slow.ts', `import { definePipe } from 'sluice'
export default definePipe({
  name: 'slow', phase: 'inbound',
  create: () => async (ctx) => {
    await new Promise((resolve) => setTimeout(resolve, 5))
    ctx.state.set('slow.done', true)
  },
})`)
  pipe('reads-state.js', `module.exports = { name: 'reads-state', phase: 'inbound', create: () => (ctx) => { ctx.request.headers['x-slow-done'] = String(ctx.state.get('slow.done')) } }`)
  pipe('upper-body.js', `module.exports = { name: 'upper-body', phase: 'inbound', create: () => async (ctx) => { ctx.request.setBody((await ctx.request.body()).toString().toUpperCase()) } }`)
  pipe('peek-body.js', `module.exports = { name: 'peek-body', phase: 'inbound', create: () => async (ctx) => { ctx.request.headers['x-body-bytes'] = String((await ctx.request.body()).length) } }`)
  pipe('rewrite.js', `module.exports = { name: 'rewrite', phase: 'inbound', create: () => (ctx) => {
    ctx.request.upstreamPath = '/rewritten' + ctx.request.upstreamPath
    ctx.request.query.set('added', 'yes')
    ctx.request.query.delete('drop')
    ctx.setResponseHeader('x-from-inbound', 'set')
  } }`)
  pipe('wrap.js', `module.exports = { name: 'wrap', phase: 'outbound', buffer: true, create: () => async (ctx) => {
    const body = (await ctx.response.body()).toString()
    ctx.response.setBody({ wrapped: body, status: ctx.response.status })
    ctx.response.status = 299
  } }`)
  pipe('bad-create.js', `module.exports = { name: 'bad-create', phase: 'inbound', create: () => { throw new Error('cannot open key file') } }`)
  upstream = await startUpstream(echo)
})
afterAll(async () => { await upstream.close(); fs.rmSync(dir, { recursive: true, force: true }) })
beforeEach(() => { upstream.received.length = 0 })

function routesYaml (routes: string, global = ''): string {
  return `version: 1
pipes_dir: ./pipes
services:
  api:
    instances: [{ url: ${upstream.url} }]
${global}
routes:
${routes}`
}

async function gateway (routes: string, global = ''): Promise<RunningGateway> {
  return startGateway(routesYaml(routes, global), {}, path.join(dir, 'routes.yaml'))
}

test('order: global inbound, route inbound, upstream, route outbound, global outbound', async () => {
  const gw = await gateway(`  - name: r
    service_name: api
    methods: [GET]
    path: /r
    upstream_path: /r
    pipelines:
      inbound: [{ name: tag, properties: { tag: route-in } }]
      outbound: [{ name: tag, properties: { tag: route-out } }]
`, `global:
  inbound: [{ name: tag, properties: { tag: global-in } }]
  outbound: [{ name: tag, properties: { tag: global-out } }]
`)
  try {
    const res = await request(gw.url).get('/r')
    expect(res.status).toBe(200)
    expect(upstream.received[0].headers['x-order']).toBe('global-in,route-in')
    // the outbound halves of pipes placed on the inbound side run after their scope's outbound pipes
    expect(res.headers['x-order']).toBe('route-out,route-in,global-out,global-in')
  } finally { await gw.close() }
})

const one = (pipes: string, extra = ''): string => `  - name: r
    service_name: api
    methods: [GET, POST, PUT]
    path: /r
    upstream_path: /up
    pipelines:
      inbound: [${pipes}]
${extra}`

test('ctx.respond ends the request at the gateway; later pipes and the upstream are skipped', async () => {
  const gw = await gateway(one('{ name: answer }, { name: boom }'))
  try {
    const res = await request(gw.url).get('/r')
    expect(res.status).toBe(418)
    expect(res.body).toEqual({ short: true })
    expect(res.headers['x-answered']).toBe('yes')
    expect(res.headers['x-request-id']).toBeDefined()
    expect(upstream.received).toHaveLength(0)
  } finally { await gw.close() }
})

test('ctx.fail answers the standard JSON error', async () => {
  const gw = await gateway(one('{ name: deny }'))
  try {
    const res = await request(gw.url).get('/r')
    expect(res.status).toBe(403)
    expect(res.body).toEqual({ error_code: 'Forbidden', error_message: 'not you', request_id: res.headers['x-request-id'] })
    expect(upstream.received).toHaveLength(0)
  } finally { await gw.close() }
})

test('a throwing pipe is a 500 InternalServerError without its details, and the gateway keeps serving', async () => {
  const gw = await gateway(one('{ name: boom }') + `  - { name: ok, service_name: api, methods: [GET], path: /ok, upstream_path: /ok }\n`)
  try {
    const res = await request(gw.url).get('/r')
    expect(res.status).toBe(500)
    expect(res.body.error_code).toBe('InternalServerError')
    expect(res.text).not.toContain('secret internal detail')
    expect(upstream.received).toHaveLength(0)
    expect((await request(gw.url).get('/ok')).status).toBe(200)
  } finally { await gw.close() }
})

test('async pipes are awaited and share per-request state', async () => {
  const gw = await gateway(one('{ name: slow }, { name: reads-state }'))
  try {
    await request(gw.url).get('/r')
    expect(upstream.received[0].headers['x-slow-done']).toBe('true')
  } finally { await gw.close() }
})

test('a pipe that reads the body gets it buffered, and the same bytes go upstream with their length', async () => {
  const gw = await gateway(one('{ name: peek-body }'))
  try {
    const body = Buffer.from([0, 1, 2, 250, 251, 252])
    await request(gw.url).post('/r').set('content-type', 'application/octet-stream').send(body)
    expect(upstream.received[0].headers['x-body-bytes']).toBe('6')
    expect(upstream.received[0].headers['content-length']).toBe('6')
  } finally { await gw.close() }
})

test('a chunked body read by a pipe goes upstream with a Content-Length', async () => {
  const gw = await gateway(one('{ name: upper-body }'))
  try {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.request(`${gw.url}/r`, { method: 'PUT' }, resolve)
      req.on('error', reject)
      req.write('hello ')
      setImmediate(() => req.end('world'))
    })
    res.resume()
    await once(res, 'end')
    expect(upstream.received[0].body.toString()).toBe('HELLO WORLD')
    expect(upstream.received[0].headers['content-length']).toBe('11')
    expect(upstream.received[0].headers['transfer-encoding']).toBeUndefined()
  } finally { await gw.close() }
})

test('a body no pipe asks for is streamed, not buffered', async () => {
  const gw = await gateway(one('{ name: tag, properties: { tag: t } }'))
  try {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.request(`${gw.url}/r`, { method: 'POST' }, resolve)
      req.on('error', reject)
      req.write('a')
      setImmediate(() => req.end('b'))
    })
    res.resume()
    await once(res, 'end')
    expect(upstream.received[0].headers['transfer-encoding']).toBe('chunked')
  } finally { await gw.close() }
})

test('inbound pipes rewrite the upstream path and query, and add response headers', async () => {
  const gw = await gateway(one('{ name: rewrite }'))
  try {
    const res = await request(gw.url).get('/r?keep=1&drop=2')
    expect(upstream.received[0].url).toBe('/rewritten/up?keep=1&added=yes')
    expect(res.headers['x-from-inbound']).toBe('set')
  } finally { await gw.close() }
})

test('an unchanged query is forwarded byte for byte', async () => {
  const gw = await gateway(one('{ name: tag, properties: { tag: t } }'))
  try {
    await request(gw.url).get('/r?a=%20b&c')
    expect(upstream.received[0].url).toBe('/up?a=%20b&c')
  } finally { await gw.close() }
})

test('a buffer: true outbound pipe reads and replaces the response body; Content-Length follows', async () => {
  const gw = await gateway(one('', '      outbound: [{ name: wrap }]\n'))
  try {
    const res = await request(gw.url).get('/r')
    expect(res.status).toBe(299)
    expect(res.headers['content-type']).toMatch(/^application\/json/)
    expect(Number(res.headers['content-length'])).toBe(Buffer.byteLength(res.text))
    expect(JSON.parse(res.body.wrapped).url).toBe('/up')
  } finally { await gw.close() }
})

test('text/event-stream is never buffered: buffer pipes skip it and events still flow', async () => {
  let push: ((s: string) => void) | undefined
  const sse = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write('data: one\n\n')
    push = (s) => res.write(s)
  })
  const gw = await startGateway(`version: 1
pipes_dir: ./pipes
services:
  api:
    instances: [{ url: ${sse.url} }]
routes:
  - { name: r, service_name: api, methods: [GET], path: /r, upstream_path: /r, pipelines: { outbound: [{ name: wrap }] } }
`, {}, path.join(dir, 'routes.yaml'))
  try {
    const res = await new Promise<http.IncomingMessage>((resolve) => http.get(`${gw.url}/r`, resolve))
    expect(res.statusCode).toBe(200)
    const [first] = await once(res, 'data') as [Buffer]
    expect(first.toString()).toBe('data: one\n\n')
    push?.('data: two\n\n')
    const [second] = await once(res, 'data') as [Buffer]
    expect(second.toString()).toBe('data: two\n\n')
    res.destroy()
  } finally { await gw.close(); await sse.close() }
})

test('a custom pipe in TypeScript loads without a build step', async () => {
  const gw = await gateway(one('{ name: slow }'))
  try {
    expect((await request(gw.url).get('/r')).status).toBe(200)
  } finally { await gw.close() }
})

test('properties that fail the pipe\'s schema are a config error at the pipe\'s line and column', () => {
  const yaml = routesYaml(one('{ name: tag, properties: { tga: x } }'))
  let error: unknown
  try { loadConfigText(yaml, path.join(dir, 'routes.yaml'), { env: {}, pipes: (pipesDir) => createPipeCatalog({ pipesDir }) }) } catch (err) { error = err }
  expect(error).toBeInstanceOf(ConfigError)
  const message = (error as ConfigError).message
  expect(message).toMatch(/routes\.yaml:\d+:\d+ routes\[0\]\.pipelines\.inbound\[0\]/)
  expect(message).toContain('unknown property "tga" (did you mean "tag"?)')
})

test('a pipe whose create throws is a config error at its place', () => {
  const yaml = routesYaml(one('{ name: bad-create }'))
  const loaded = loadConfigText(yaml, path.join(dir, 'routes.yaml'), { env: {}, pipes: (pipesDir) => createPipeCatalog({ pipesDir }) })
  expect(() => compileGeneration(loaded)).toThrow(/routes\.yaml:14:17 routes\[0\]\.pipelines\.inbound\[0\]: pipe "bad-create" could not be created: cannot open key file/)
})

test('an inbound pipe placed in the outbound list is a config error', () => {
  const yaml = routesYaml(one('', '      outbound: [{ name: deny }]\n'))
  expect(() => loadConfigText(yaml, path.join(dir, 'routes.yaml'), { env: {}, pipes: (pipesDir) => createPipeCatalog({ pipesDir }) }))
    .toThrow(/is an inbound pipe; move it to the inbound list/)
})

describe('Express/connect middleware as a pipe', () => {
  beforeAll(() => {
    pipe('mw-header.js', `const { fromMiddleware } = require('sluice')
module.exports = fromMiddleware('mw-header', () => (req, res, next) => { res.setHeader('x-mw', 'ran'); req.headers['x-mw-seen'] = 'yes'; next() })`)
    pipe('mw-answer.js', `const { fromMiddleware } = require('sluice')
module.exports = fromMiddleware('mw-answer', () => (req, res) => { res.statusCode = 401; res.end('no entry') })`)
    pipe('mw-error.js', `const { fromMiddleware } = require('sluice')
module.exports = fromMiddleware('mw-error', () => (req, res, next) => next(Object.assign(new Error('bad origin'), { status: 403 })))`)
  })

  test('a middleware that calls next() continues the pipeline; its response headers stay', async () => {
    const gw = await gateway(one('{ name: mw-header }'))
    try {
      const res = await request(gw.url).get('/r')
      expect(res.status).toBe(200)
      expect(res.headers['x-mw']).toBe('ran')
      expect(upstream.received[0].headers['x-mw-seen']).toBe('yes')
    } finally { await gw.close() }
  })

  test('a middleware that answers ends the request; the upstream is not called', async () => {
    const gw = await gateway(one('{ name: mw-answer }'))
    try {
      const res = await request(gw.url).get('/r')
      expect(res.status).toBe(401)
      expect(res.text).toBe('no entry')
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })

  test('next(err) with a 4xx status refuses the request with that status', async () => {
    const gw = await gateway(one('{ name: mw-error }'))
    try {
      const res = await request(gw.url).get('/r')
      expect(res.status).toBe(403)
      expect(res.body.error_message).toBe('bad origin')
      expect(upstream.received).toHaveLength(0)
    } finally { await gw.close() }
  })
})

describe('buffered responses at the edges', () => {
  test('HEAD on a route with a buffer pipe keeps the upstream\'s Content-Length', async () => {
    const gw = await gateway(one('', '      outbound: [{ name: wrap }]\n'))
    try {
      const get = await request(gw.url).get('/r').set('x-fixed', '1')
      const head = await request(gw.url).head('/r').set('x-fixed', '1')
      expect(head.status).toBe(200)
      expect(Number(head.headers['content-length'])).toBeGreaterThan(0)
      expect(get.status).toBe(299)
    } finally { await gw.close() }
  })

  test.each([
    ['with a Content-Length', true],
    ['chunked', false],
  ])('a response over the limit passes through untouched (%s)', async (_what, declared) => {
    const big = Buffer.alloc(5000, 'z')
    const up = await startUpstream((_req, res) => {
      if (declared) res.writeHead(200, { 'content-type': 'application/json', 'content-length': big.length })
      else res.writeHead(200, { 'content-type': 'application/json' })
      res.write(big.subarray(0, 100))
      setImmediate(() => res.end(big.subarray(100)))
    })
    const gw = await startGateway(`version: 1
pipes_dir: ./pipes
server: { limits: { max_body_bytes: 1000 } }
services:
  api:
    instances: [{ url: ${up.url} }]
routes:
  - { name: r, service_name: api, methods: [GET], path: /r, upstream_path: /r, pipelines: { outbound: [{ name: wrap }] } }
`, {}, path.join(dir, 'routes.yaml'))
    try {
      const res = await request(gw.url).get('/r').buffer(true).parse((r, cb) => {
        const chunks: Buffer[] = []
        r.on('data', (c: Buffer) => chunks.push(c))
        r.on('end', () => cb(null, Buffer.concat(chunks)))
      })
      expect(res.status).toBe(200)
      expect((res.body as Buffer).equals(big)).toBe(true)
    } finally { await gw.close(); await up.close() }
  })
})
