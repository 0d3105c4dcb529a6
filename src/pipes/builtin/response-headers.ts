/**
 * `response-headers` (pipes.md): headers set on or removed from the
 * upstream's response before the client gets it. `remove` runs first, so a
 * name in both ends up with the `set` value.
 *
 * Connection-specific (hop-by-hop) headers belong to each connection, not to
 * the response (RFC 9110 §7.6.1); the gateway writes them itself. Naming one
 * here is refused at load rather than silently ignored. Content-Length is
 * the gateway's too: a wrong one desynchronises the client's connection.
 */
import http from 'node:http'
import { definePipe } from '../types'

export interface ResponseHeadersProperties {
  set: Record<string, string | number>
  remove: string[]
}

// RFC 9110 §7.6.1 and §7.8, RFC 7230 §6.1, plus the non-standard Proxy-Connection.
export const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate',
  'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade'])

const TOKEN = '^[!#$%&\'*+.^_`|~0-9A-Za-z-]+$'

export const responseHeadersPipe = definePipe<ResponseHeadersProperties>({
  name: 'response-headers',
  phase: 'outbound',
  schema: {
    type: 'object',
    properties: {
      set: {
        type: 'object',
        propertyNames: { pattern: TOKEN },
        additionalProperties: { anyOf: [{ type: 'string' }, { type: 'number' }] },
        default: {},
      },
      remove: {
        type: 'array',
        items: { type: 'string', pattern: TOKEN },
        uniqueItems: true,
        default: [],
      },
    },
    additionalProperties: false,
  },
  create (props) {
    for (const name of [...Object.keys(props.set), ...props.remove]) {
      if (HOP_BY_HOP.has(name.toLowerCase())) {
        throw new Error(`"${name}" is a hop-by-hop header (RFC 9110 §7.6.1): the gateway manages it per connection`)
      }
    }
    const set: Array<[string, string]> = []
    for (const [name, value] of Object.entries(props.set)) {
      if (name.toLowerCase() === 'content-length') throw new Error('Content-Length follows the body: it cannot be set')
      const text = String(value)
      try {
        http.validateHeaderValue(name, text)
      } catch {
        throw new Error(`the value of "${name}" has characters a header cannot carry (control characters or line breaks)`)
      }
      set.push([name.toLowerCase(), text])
    }
    const remove = props.remove.map(name => name.toLowerCase())

    return (ctx) => {
      const response = ctx.response
      if (response === undefined) return
      for (const name of remove) delete response.headers[name]
      for (const [name, value] of set) response.headers[name] = value
    }
  },
})
