/**
 * Webhook-style request signing: the sender puts `X-Signature: sha256=<hex>`,
 * the HMAC-SHA256 of the raw body under a shared secret (GitHub's
 * X-Hub-Signature-256 scheme). A request without a valid signature is a 401
 * and never reaches the upstream; a valid one goes on with its body bytes
 * unchanged.
 *
 * The secret is `secret`, or read at load from the environment variable named
 * by `secret_env` (so it stays out of routes.yaml).
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import { definePipe } from 'sluice'

interface Properties {
  secret?: string
  secret_env?: string
  header: string
}

const SIGNATURE = /^sha256=([0-9a-f]{64})$/i

export default definePipe<Properties>({
  name: 'hmac-signature',
  phase: 'inbound',
  schema: {
    type: 'object',
    properties: {
      secret: { type: 'string', minLength: 16 },
      secret_env: { type: 'string', pattern: '^[A-Za-z_][A-Za-z0-9_]*$' },
      header: { type: 'string', default: 'X-Signature' },
    },
    additionalProperties: false,
  },
  create (props) {
    if ((props.secret === undefined) === (props.secret_env === undefined)) throw new Error('give either secret or secret_env (the name of an environment variable holding it)')
    const secret = props.secret ?? process.env[props.secret_env ?? '']
    if (secret === undefined || secret === '') throw new Error(`environment variable ${props.secret_env} is not set: it holds the HMAC secret`)
    const header = props.header.toLowerCase()
    const challenge = { 'WWW-Authenticate': `Signature header="${props.header}", algorithm="hmac-sha256"` }

    return async (ctx) => {
      const given = SIGNATURE.exec(String(ctx.request.headers[header] ?? ''))
      if (given === null) return ctx.fail(401, 'Unauthorized', `${props.header} must be sha256=<hex HMAC of the body>`, challenge)
      const body = await ctx.request.body()
      const expected = createHmac('sha256', secret).update(body).digest()
      // Constant time, so the signature cannot be guessed byte by byte from
      // response timings; both sides are 32 bytes by the pattern above.
      if (!timingSafeEqual(expected, Buffer.from(given[1], 'hex'))) {
        ctx.fail(401, 'Unauthorized', 'the signature does not match the body', challenge)
      }
    }
  },
})
