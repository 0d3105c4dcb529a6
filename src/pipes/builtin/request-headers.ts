/**
 * `request-headers`: shape the headers sent upstream — an allow-list (Jupyter
 * Enterprise Gateway's env whitelist, for headers), then removals, then
 * static values. Names are lower-cased at load, as Node presents them.
 */
import { definePipe, type PipeContext } from '../types'

interface RequestHeadersProperties {
  set: Record<string, string>
  remove: string[]
  allow?: string[]
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
// What Node lets into a header value: no CR, LF or other control characters.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/

// The gateway's own and the body's framing: an allow-list never drops them.
// Connection/Upgrade are only present on a WebSocket upgrade, with the two
// Sec-WebSocket-* headers no handshake can do without.
const ALWAYS_KEPT = new Set(['host', 'content-length', 'transfer-encoding', 'x-forwarded-for', 'x-forwarded-proto',
  'x-forwarded-host', 'x-request-id', 'connection', 'upgrade', 'sec-websocket-key', 'sec-websocket-version'])

// Owned by the gateway: framing (a wrong Content-Length is request
// smuggling), hop-by-hop headers (removed anyway, RFC 9110 §7.6.1) and Host
// (the upstream's). Setting or removing them here would be a silent no-op or
// worse, so it is a config error.
const UNTOUCHABLE = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive',
  'proxy-connection', 'te', 'trailer', 'upgrade'])

function headerName (name: string, property: string): string {
  if (!TOKEN.test(name)) throw new Error(`${property}: "${name}" is not a header name`)
  return name.toLowerCase()
}

function changeableName (name: string, property: string): string {
  const lower = headerName(name, property)
  if (UNTOUCHABLE.has(lower)) throw new Error(`${property}: "${name}" is managed by the gateway and cannot be changed by a pipe`)
  return lower
}

export default definePipe<RequestHeadersProperties>({
  name: 'request-headers',
  phase: 'inbound',
  schema: {
    type: 'object',
    description: 'Changes the headers sent upstream, in this order: `allow` (drop every header not listed), ' +
      '`remove`, then `set`. Host, Content-Length, Transfer-Encoding, X-Forwarded-*, X-Request-Id (and a WebSocket ' +
      'handshake\'s Connection, Upgrade, Sec-WebSocket-Key/-Version) are always kept; framing and hop-by-hop headers ' +
      'cannot be set or removed. Names are case-insensitive; values are static strings.',
    properties: {
      set: {
        type: 'object',
        additionalProperties: { type: 'string' },
        default: {},
        description: 'header name → value, replacing what the client sent',
      },
      remove: {
        type: 'array',
        items: { type: 'string' },
        default: [],
        description: 'header names to drop',
      },
      allow: {
        type: 'array',
        items: { type: 'string' },
        description: 'if set, only these headers (plus the always-kept ones) go upstream',
      },
    },
    additionalProperties: false,
  },
  create (props) {
    const allow = props.allow === undefined ? undefined : new Set([...ALWAYS_KEPT, ...props.allow.map(n => headerName(n, 'allow'))])
    const remove = props.remove.map(n => changeableName(n, 'remove'))
    const set = Object.entries(props.set).map(([name, value]): [string, string] => {
      // A CR LF in a value would end the header early and inject another.
      if (!FIELD_VALUE.test(value)) throw new Error(`set: the value of "${name}" contains a line break or control character`)
      return [changeableName(name, 'set'), value]
    })
    if (allow === undefined && remove.length === 0 && set.length === 0) throw new Error('set at least one of set, remove or allow')

    return (ctx: PipeContext) => {
      const { headers } = ctx.request
      if (allow !== undefined) {
        for (const name of Object.keys(headers)) if (!allow.has(name)) delete headers[name]
      }
      for (const name of remove) delete headers[name]
      for (const [name, value] of set) headers[name] = value
    }
  },
})
