/**
 * Wraps a JSON response in an envelope clients can rely on:
 * `{"data": <upstream body>, "status": <status>, "request_id": "…"}`.
 * Non-JSON responses (and invalid JSON) pass through untouched.
 */
import { definePipe } from 'sluice'

interface Properties {
  /** Also wrap error responses (status ≥ 400); default true. */
  errors: boolean
}

const JSON_MEDIA = /^application\/(?:[\w.+-]+\+)?json$/

export default definePipe<Properties>({
  name: 'response-envelope',
  phase: 'outbound',
  buffer: true,
  schema: {
    type: 'object',
    properties: { errors: { type: 'boolean', default: true } },
    additionalProperties: false,
  },
  create (props) {
    return async (ctx) => {
      const response = ctx.response
      if (response === undefined) return
      if (!props.errors && response.status >= 400) return
      const type = String(response.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase()
      if (!JSON_MEDIA.test(type)) return
      let data: unknown
      try {
        data = JSON.parse((await response.body()).toString('utf8'))
      } catch {
        return
      }
      response.setBody({ data, status: response.status, request_id: ctx.requestId })
    }
  },
})
