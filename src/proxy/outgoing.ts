/**
 * The options of one upstream request: what http-proxy's `setupOutgoing`
 * builds from an instance's proxy options (target host:port, changeOrigin,
 * toProxy), shaped once per instance at load. setupOutgoing copies ten TLS
 * fields from the target, joins the path with two splits and three regex
 * replaces, and leaves an object of seventeen keys that the agent spreads
 * twice more; here the request gets the six or seven keys Node reads.
 * A test holds the two to the same result (test/outgoing.test.ts).
 */
import type { Agent, IncomingMessage, OutgoingHttpHeaders, RequestOptions } from 'node:http'
import { urlJoin } from 'http-proxy/lib/http-proxy/common'

export interface OutgoingTarget {
  protocol: 'http:' | 'https:'
  /** host:port, as changeOrigin writes it into Host. */
  host: string
  hostname: string
  port: string
}

export type Outgoing = (req: IncomingMessage) => RequestOptions

export function compileOutgoing (target: OutgoingTarget, agent: Agent, rejectUnauthorized: boolean): Outgoing {
  const { hostname, port, host } = target
  if (target.protocol === 'https:') {
    return (req) => ({ hostname, port, method: req.method, path: upstreamPath(req.url ?? '/'), headers: withHost(req.headers, host), agent, rejectUnauthorized })
  }
  return (req) => ({ hostname, port, method: req.method, path: upstreamPath(req.url ?? '/'), headers: withHost(req.headers, host), agent })
}

/**
 * The path http-proxy sends for `url`: urlJoin collapses repeated slashes
 * and mends a scheme it collapsed, in the path only. A URL with neither
 * `//` nor `:/` anywhere comes out as it went in, so only a URL with one of
 * them goes through urlJoin.
 */
export function upstreamPath (url: string): string {
  return url.includes('//') || url.includes(':/') ? urlJoin('', url) : url
}

/** A copy of the headers with Host naming the instance (changeOrigin): the request's own object stays as pipes saw it. */
function withHost (headers: OutgoingHttpHeaders, host: string): OutgoingHttpHeaders {
  return { ...headers, host }
}
