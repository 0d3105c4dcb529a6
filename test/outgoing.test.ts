/**
 * The upstream request's options are built per instance at load
 * (src/proxy/outgoing.ts) instead of by http-proxy's setupOutgoing on every
 * request: they must say what setupOutgoing would have said.
 */
import http, { type IncomingMessage } from 'node:http'
import https from 'node:https'
import { setupOutgoing } from 'http-proxy/lib/http-proxy/common'
import { compileOutgoing, upstreamPath, type OutgoingTarget } from '../src/proxy/outgoing'

const TARGETS: OutgoingTarget[] = [
  { protocol: 'http:', host: '127.0.0.1:8080', hostname: '127.0.0.1', port: '8080' },
  { protocol: 'http:', host: 'svc.internal:80', hostname: 'svc.internal', port: '80' },
  { protocol: 'https:', host: 'api.example.com:443', hostname: 'api.example.com', port: '443' },
  { protocol: 'http:', host: '[::1]:9000', hostname: '::1', port: '9000' },
]

const URLS = [
  '/items/42', '/items/42?x=1&y=2', '/', '*', '/a//b', '//evil.com/x', '///x', '/r/http://x.y/z',
  '/r/https://x.y//z', '/p?next=http://a//b', '/p?a=1?b=2', '/p//q?r=//s', '/%2F%2Fx', '/a:/b', '/ünï/ç?q=ä',
]

function fakeRequest (url: string, method = 'GET'): IncomingMessage {
  return { method, url, headers: { host: 'gateway.example:8080', accept: 'application/json', 'x-forwarded-for': '10.1.2.3' } } as unknown as IncomingMessage
}

// The keys of the options that Node's http.request and the agent read and that setupOutgoing sets to a value.
function meaningful (options: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(options)) if (value !== undefined && key !== 'host') out[key] = value
  return out
}

describe.each(TARGETS)('for $protocol//$host', (target) => {
  const agent = target.protocol === 'https:' ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true })
  afterAll(() => agent.destroy())
  const proxyOptions = { target, agent, changeOrigin: true, secure: false, toProxy: true }
  const outgoing = compileOutgoing(target, agent, false)

  test.each(URLS)('%s gets the options setupOutgoing gives', (url) => {
    for (const method of ['GET', 'POST', 'DELETE']) {
      const expected = setupOutgoing({}, proxyOptions, fakeRequest(url, method)) as Record<string, unknown>
      const actual = outgoing(fakeRequest(url, method)) as Record<string, unknown>
      expect(meaningful(actual)).toEqual(meaningful(expected))
      // Node takes hostname over host; setupOutgoing's host is host:port, which the agent never sees.
      expect(expected.host).toBe(target.host)
    }
  })

  test('the request keeps its own headers object; Host names the instance in the copy', () => {
    const req = fakeRequest('/x')
    const options = outgoing(req)
    expect(options.headers).not.toBe(req.headers)
    expect(req.headers.host).toBe('gateway.example:8080')
    expect((options.headers as Record<string, string>).host).toBe(target.host)
  })
})

test('a path with nothing to collapse is passed on as the same string', () => {
  const url = '/svc5/items/42?page=2'
  expect(upstreamPath(url)).toBe(url)
  expect(upstreamPath('/a//b?c=//d')).toBe('/a/b?c=//d')
})
