// The custom pipe of pipes.md "Writing a custom pipe": the tenant from the
// route's <account> placeholder goes upstream as a header.
import { definePipe } from 'sluice'

export default definePipe<{ header: string }>({
  name: 'add-tenant-header',
  phase: 'inbound',
  schema: {                       // JSON Schema of `properties`, checked at load
    type: 'object',
    properties: { header: { type: 'string', default: 'X-Tenant' } },
    additionalProperties: false,
  },
  create (props) {                // once per route, at load time
    return (ctx) => {             // per request; may be async
      const tenant = ctx.params.account
      if (!tenant) ctx.fail(403, 'Forbidden', 'no tenant')
      ctx.request.headers[props.header.toLowerCase()] = tenant
    }
  },
})
