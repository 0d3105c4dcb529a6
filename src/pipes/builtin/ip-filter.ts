/**
 * `ip-filter`: allow or deny the client address (ctx.request.ip, trust_proxy
 * already applied) by address or CIDR range, IPv4 and IPv6. Both lists are
 * compiled into node:net BlockLists at load.
 */
import net from 'node:net'
import { definePipe, type PipeContext } from '../types'

interface IpFilterProperties {
  allow?: string[]
  deny?: string[]
}

const ENTRY = {
  type: 'string',
  minLength: 1,
  description: 'an address (10.1.2.3, ::1) or a CIDR range (10.0.0.0/8, fd00::/8)',
}

/** An address without an IPv6 zone (`fe80::1%eth0`), IPv4-mapped IPv6 as the IPv4 it carries. */
function normalize (address: string): { address: string, family: 'ipv4' | 'ipv6' } | undefined {
  const bare = address.includes('%') ? address.slice(0, address.indexOf('%')) : address
  const kind = net.isIP(bare)
  if (kind === 4) return { address: bare, family: 'ipv4' }
  if (kind !== 6) return undefined
  // ::ffff:a.b.c.d is how a dual-stack socket reports an IPv4 peer: the same
  // client must meet the same rule whichever way it arrived.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare)
  if (mapped !== null && net.isIPv4(mapped[1])) return { address: mapped[1], family: 'ipv4' }
  return { address: bare, family: 'ipv6' }
}

/** Throws on an entry that is not an address or CIDR; the message names it. */
export function buildBlockList (entries: readonly string[], property: string): net.BlockList {
  const list = new net.BlockList()
  for (const entry of entries) {
    const [text, bits, extra] = entry.trim().split('/')
    const parsed = normalize(text)
    if (parsed === undefined || extra !== undefined || (bits !== undefined && !/^\d{1,3}$/.test(bits))) {
      throw new Error(`${property}: "${entry}" is not an IP address or CIDR range (e.g. 10.0.0.0/8 or fd00::/8)`)
    }
    if (bits === undefined) { list.addAddress(parsed.address, parsed.family); continue }
    let prefix = Number(bits)
    // ::ffff:10.0.0.0/104 is 10.0.0.0/8 written the IPv6 way.
    if (parsed.family === 'ipv4' && net.isIPv6(text)) {
      if (prefix < 96) throw new Error(`${property}: "${entry}" reaches outside the IPv4-mapped range ::ffff:0:0/96`)
      prefix -= 96
    }
    if (prefix > (parsed.family === 'ipv4' ? 32 : 128)) {
      throw new Error(`${property}: "${entry}" has a prefix longer than the address`)
    }
    list.addSubnet(parsed.address, prefix, parsed.family)
  }
  return list
}

export default definePipe<IpFilterProperties>({
  name: 'ip-filter',
  phase: 'inbound',
  schema: {
    type: 'object',
    description: 'Refuses clients by address with 403 Forbidden. deny wins over allow; with allow set, ' +
      'every address not in it is refused. The address is the socket\'s, or the first untrusted hop of ' +
      'X-Forwarded-For when the peer is in server.trust_proxy. IPv4-mapped IPv6 (::ffff:a.b.c.d) is matched as IPv4.',
    properties: {
      allow: { type: 'array', items: ENTRY, minItems: 1, description: 'only these addresses/ranges may pass' },
      deny: { type: 'array', items: ENTRY, minItems: 1, description: 'these addresses/ranges are refused' },
    },
    additionalProperties: false,
  },
  create (props) {
    if (props.allow === undefined && props.deny === undefined) throw new Error('set allow, deny or both')
    const allow = props.allow === undefined ? undefined : buildBlockList(props.allow, 'allow')
    const deny = props.deny === undefined ? undefined : buildBlockList(props.deny, 'deny')
    return (ctx: PipeContext) => {
      const client = normalize(ctx.request.ip)
      // An address we cannot read cannot be shown to be allowed (nor not denied).
      if (client === undefined) ctx.fail(403, 'Forbidden', 'the client address is not allowed')
      if (deny?.check(client.address, client.family) === true ||
        (allow !== undefined && !allow.check(client.address, client.family))) {
        ctx.fail(403, 'Forbidden', 'the client address is not allowed')
      }
    }
  },
})
