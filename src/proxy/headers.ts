/**
 * What the upstream is told about the request (http.md "Proxying"): hop-by-hop
 * headers removed (RFC 9110 §7.6.1), X-Forwarded-* from the socket unless the
 * peer is a trusted proxy, a sane X-Request-Id kept or a new one made.
 */
import hyperid from 'hyperid'
import net from 'node:net'
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'

const SANE_REQUEST_ID = /^[\x21-\x7e]{1,128}$/

// Unique per process and cheap (a random prefix and a counter): a request id
// needs to be unique, not unguessable, and randomUUID's entropy refills
// showed up in the per-request profile.
const nextRequestId = hyperid({ urlSafe: true })

// Never copied upstream: connection-specific headers (RFC 9110 §7.6.1) and
// the ones this module writes itself. `transfer-encoding` is copied: the body
// is forwarded chunked exactly when it arrived chunked. `expect` is dropped
// because Node already answered the client's 100-continue.
const NOT_COPIED = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'proxy-authorization',
  'upgrade', 'expect', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-request-id'])
// On a WebSocket upgrade these two are the point of the request.
const KEPT_ON_UPGRADE = new Set(['connection', 'upgrade'])

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

/** Header names the Connection header lists (RFC 9110 §7.6.1), beyond the usual lone token. */
function listedInConnection (connection: string | undefined): Set<string> | undefined {
  if (connection === undefined || connection === 'keep-alive' || connection === 'close' || connection === 'Keep-Alive') return undefined
  return new Set(connection.split(',').map(token => token.trim().toLowerCase()))
}

/**
 * Replaces `req.headers` with what the upstream gets and returns the request
 * id. The headers are built in one pass into a fresh object: deleting from
 * Node's own object would turn it into a slow dictionary for the rest of the
 * request. `Host` is set later to the chosen instance (http-proxy's
 * changeOrigin).
 */
export function prepareRequestHeaders (req: IncomingMessage, trust: TrustCheck | undefined, isUpgrade: boolean): string {
  const incoming = req.headers
  const listed = listedInConnection(incoming.connection)
  const out: IncomingHttpHeaders = {}
  for (const name in incoming) {
    if (NOT_COPIED.has(name) && !(isUpgrade && KEPT_ON_UPGRADE.has(name))) continue
    if (listed !== undefined && listed.has(name) && !(isUpgrade && name === 'upgrade')) continue
    out[name] = incoming[name]
  }

  const address = req.socket.remoteAddress ?? ''
  const trusted = trust !== undefined && trust(address)
  const priorFor = incoming['x-forwarded-for']
  out['x-forwarded-for'] = trusted && priorFor !== undefined ? `${String(priorFor)}, ${address}` : address
  const priorProto = incoming['x-forwarded-proto']
  out['x-forwarded-proto'] = trusted && priorProto !== undefined
    ? priorProto
    : (req.socket as { encrypted?: boolean }).encrypted === true ? 'https' : 'http'
  const host = trusted && incoming['x-forwarded-host'] !== undefined ? incoming['x-forwarded-host'] : incoming.host
  if (host !== undefined) out['x-forwarded-host'] = host
  const id = requestIdFor(req)
  out['x-request-id'] = id
  req.headers = out
  return id
}

/** The client's X-Request-Id when it is sane (≤ 128 visible ASCII), else a new one. */
export function requestIdFor (req: IncomingMessage): string {
  const id = req.headers['x-request-id']
  return typeof id === 'string' && SANE_REQUEST_ID.test(id) ? id : nextRequestId()
}
