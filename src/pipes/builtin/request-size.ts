/**
 * `request-size`: a per-route body limit tighter than the server's. A declared
 * Content-Length over the limit is refused before a byte of the body is read.
 */
import { definePipe, type PipeContext } from '../types'

interface RequestSizeProperties {
  max_bytes: number
}

export default definePipe<RequestSizeProperties>({
  name: 'request-size',
  phase: 'inbound',
  schema: {
    type: 'object',
    description: 'Refuses a request body over max_bytes with 413 PayloadTooLarge; the upstream never sees it. ' +
      'A Content-Length over the limit is refused without reading the body. A chunked body (no Content-Length) is ' +
      'buffered to be measured — within the server\'s own body limit — and the same bytes then go upstream.',
    properties: {
      max_bytes: { type: 'integer', minimum: 0, description: 'largest body accepted, in bytes' },
    },
    required: ['max_bytes'],
    additionalProperties: false,
  },
  create ({ max_bytes: max }) {
    const tooLarge = `the request body is larger than ${max} bytes`
    return async (ctx: PipeContext) => {
      // The framing headers are the client's: request-headers refuses to
      // touch them, and the parser holds the body to them.
      const { headers } = ctx.request
      const declared = headers['content-length']
      if (declared !== undefined) {
        // Node's strict parser has already refused a malformed or
        // conflicting Content-Length, and holds the body to it.
        if (Number(declared) > max) ctx.fail(413, 'PayloadTooLarge', tooLarge)
        return
      }
      if (headers['transfer-encoding'] === undefined) return // no body at all (RFC 9112 §6.3)
      const body = await ctx.request.body()
      if (body.length > max) ctx.fail(413, 'PayloadTooLarge', tooLarge)
    }
  },
})
