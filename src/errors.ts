/**
 * The one table of error codes the gateway itself produces (http.md "Errors").
 * Every refusal goes through GatewayError so status, code and body stay in step.
 */
export const ERROR_CODES = {
  BadRequest: { status: 400, message: 'the request could not be parsed' },
  MissingParameter: { status: 400, message: 'an upstream placeholder has no value' },
  InvalidParameter: { status: 400, message: 'a placeholder value was refused' },
  ValidationFailed: { status: 400, message: 'the request did not pass validation' },
  Unauthorized: { status: 401, message: 'missing or invalid credentials' },
  Forbidden: { status: 403, message: 'access denied' },
  RouteNotFound: { status: 404, message: 'no route matches this path' },
  NotFound: { status: 404, message: 'no such admin resource' },
  MethodNotAllowed: { status: 405, message: 'method not allowed on this route' },
  PayloadTooLarge: { status: 413, message: 'request body is too large' },
  RateLimited: { status: 429, message: 'rate limit exceeded' },
  InternalServerError: { status: 500, message: 'internal error' },
  UpstreamUnreachable: { status: 502, message: 'the upstream service could not be reached' },
  CircuitOpen: { status: 503, message: 'the service is unavailable (circuit open)' },
  NoHealthyInstance: { status: 503, message: 'no healthy instance of the service is available' },
  UpstreamTimeout: { status: 504, message: 'the upstream service did not answer in time' },
} as const

export type ErrorCode = keyof typeof ERROR_CODES

export class GatewayError extends Error {
  readonly code: ErrorCode | string
  readonly status: number
  /** Extra response headers (Allow, Retry-After, WWW-Authenticate …). */
  readonly headers: Record<string, string> | undefined
  /** Extra fields merged into the JSON body (e.g. `errors` for ValidationFailed). */
  readonly extra: Record<string, unknown> | undefined

  constructor (code: ErrorCode | string, message?: string, options: {
    status?: number
    headers?: Record<string, string>
    extra?: Record<string, unknown>
    cause?: unknown
  } = {}) {
    const known = (ERROR_CODES as Record<string, { status: number, message: string }>)[code]
    super(message ?? known?.message ?? code, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'GatewayError'
    this.code = code
    this.status = options.status ?? known?.status ?? 500
    this.headers = options.headers
    this.extra = options.extra
  }
}

export function isGatewayError (err: unknown): err is GatewayError {
  return err instanceof GatewayError
}

/** The JSON body every gateway-produced error carries. */
export function errorBody (err: GatewayError, requestId: string | undefined): string {
  return JSON.stringify({
    error_code: err.code,
    error_message: err.message,
    request_id: requestId,
    ...err.extra,
  })
}
