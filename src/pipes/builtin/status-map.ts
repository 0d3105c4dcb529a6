/**
 * `status-map` (pipes.md; the original design's example): the upstream's
 * status replaced by another, e.g. `map: {"404": 204}`.
 *
 * Targets are final statuses (200..599): a 1xx is informational and never
 * ends a response (RFC 9110 §15.2). A response mapped to 204 or 304 has no
 * content (RFC 9110 §15.3.5, §15.4.5): the framing headers the upstream sent
 * for its body are dropped here, and the body itself is not sent.
 */
import { definePipe } from '../types'

export interface StatusMapProperties {
  map: Record<string, number>
}

const NO_CONTENT = new Set([204, 304])

export const statusMapPipe = definePipe<StatusMapProperties>({
  name: 'status-map',
  phase: 'outbound',
  schema: {
    type: 'object',
    properties: {
      map: {
        type: 'object',
        minProperties: 1,
        propertyNames: { pattern: '^[1-5][0-9][0-9]$' },
        additionalProperties: { type: 'integer', minimum: 200, maximum: 599 },
      },
    },
    required: ['map'],
    additionalProperties: false,
  },
  create (props) {
    const table = new Map<number, number>()
    for (const [from, to] of Object.entries(props.map)) table.set(Number(from), to)

    return (ctx) => {
      const response = ctx.response
      if (response === undefined) return
      const to = table.get(response.status)
      if (to === undefined) return
      response.status = to
      if (NO_CONTENT.has(to)) {
        delete response.headers['content-length']
        delete response.headers['transfer-encoding']
        if (to === 204) delete response.headers['content-type']
      }
    }
  },
})
