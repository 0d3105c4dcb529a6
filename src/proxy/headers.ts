/**
 * What the upstream is told about the request (http.md "Proxying"): hop-by-hop
 * headers removed (RFC 9110 §7.6.1), X-Forwarded-* from the socket unless the
 * peer is a trusted proxy, a sane X-Request-Id kept or a new one made.
 * Runs per request, so it mutates `req.headers` in place (http-proxy copies
 * them once into the upstream request) and checks before it deletes.
 */
import { randomUUID } from 'node:crypto'
import net from 'node:net'
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'

const SANE_REQUEST_ID = /^[\x21-\x7e]{1,128}$/

// Connection-specific headers that never cross a proxy. `upgrade` is kept
// on WebSocket upgrades; `transfer-encoding` is kept (the body is forwarded
// chunked exactly when it arrived chunked, which Node re-frames itself).
const HOP_BY_HOP = ['keep-alive', 'proxy-connection', 'te', 'trailer', 'proxy-authorization'] as const

/** `trust_proxy` compiled into a lookup. */
export type TrustCheck = (address: string) => boolean

export function compileTrust (cidrs: readonly string[]): TrustCheck | undefined {
  if (cidrs.length === 0) return undefined
  const list = new net.BlockList()
  for (const cidr of cidrs) {
    const [address, bits] = cidr.split('/')
    const family = net.isIPv6(address) ? 'ipv6' : 'ipv4'
    if (bits === undefined) list.addAddress(address, family)
    else list.addSubnet(address, Number(bits), family)
  }
  return (address) => {
    if (address.startsWith('::ffff:') && net.isIPv4(address.slice(7))) return list.check(address.slice(7), 'ipv4')
    return list.check(address, net.isIPv6(address) ? 'ipv6' : 'ipv4')
  }
}

function stripConnectionHeaders (h: IncomingHttpHeaders, keepUpgrade: boolean): void {
  const connection = h.connection
  if (connection !== undefined) {
    for (const token of connection.split(',')) {
      const name = token.trim().toLowerCase()
      if (name !== '' && !(keepUpgrade && name === 'upgrade')) delete h[name]
    }
    if (!keepUpgrade) delete h.connection
  }
  for (const name of HOP_BY_HOP) if (h[name] !== undefined) delete h[name]
  if (!keepUpgrade && h.upgrade !== undefined) delete h.upgrade
}

/**
 * Rewrites the request headers for the upstream and returns the request id.
 * `Host` is set by http-proxy (changeOrigin) to the chosen instance.
 */
export function prepareRequestHeaders (req: IncomingMessage, trust: TrustCheck | undefined, isUpgrade: boolean): string {
  const h = req.headers
  stripConnectionHeaders(h, isUpgrade)
  // Node already answered `Expect: 100-continue` to the client; the upstream
  // must not wait for a second go-ahead.
  if (h.expect !== undefined) delete h.expect

  const address = req.socket.remoteAddress ?? ''
  const trusted = trust !== undefined && trust(address)
  const priorFor = h['x-forwarded-for']
  h['x-forwarded-for'] = trusted && priorFor !== undefined ? `${String(priorFor)}, ${address}` : address
  if (!trusted || h['x-forwarded-proto'] === undefined) {
    h['x-forwarded-proto'] = (req.socket as { encrypted?: boolean }).encrypted === true ? 'https' : 'http'
  }
  if (!trusted || h['x-forwarded-host'] === undefined) {
    if (h.host !== undefined) h['x-forwarded-host'] = h.host
    else delete h['x-forwarded-host']
  }

  const id = requestIdFor(req)
  h['x-request-id'] = id
  return id
}

/** The client's X-Request-Id when it is sane (≤ 128 visible ASCII), else a new one. */
export function requestIdFor (req: IncomingMessage): string {
  const id = req.headers['x-request-id']
  return typeof id === 'string' && SANE_REQUEST_ID.test(id) ? id : randomUUID()
}

/** Hop-by-hop headers of the upstream's response are not the client's business. */
export function stripResponseHeaders (h: IncomingHttpHeaders): void {
  const connection = h.connection
  if (connection !== undefined) {
    for (const token of connection.split(',')) {
      const name = token.trim().toLowerCase()
      if (name !== '' && name !== 'close' && name !== 'keep-alive') delete h[name]
    }
    delete h.connection
  }
  if (h['keep-alive'] !== undefined) delete h['keep-alive']
  if (h['proxy-connection'] !== undefined) delete h['proxy-connection']
}

export function requestIdOf (res: ServerResponse): string | undefined {
  const id = res.getHeader('x-request-id')
  return typeof id === 'string' ? id : undefined
}
