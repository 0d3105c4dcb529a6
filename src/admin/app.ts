/**
 * The admin listener's Express app (operations.md "Admin listener"): public
 * health/readiness/metrics, and the token-guarded /admin/ and /registry/ trees.
 * It only talks to the running gateway through AdminTarget.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto'
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express'
import { GatewayError, isGatewayError } from '../errors'
import type { Logger } from '../observability/logger'
import { silentLogger } from '../observability/logger'
import { sendError } from '../respond'
import type { AdminTarget } from './types'

export interface AdminAppOptions {
  target: AdminTarget
  /** `admin.token`: when set, /admin/ and /registry/ need `Authorization: Bearer <token>`. */
  token?: string
  /** `admin.registry_token`: accepted under /registry/ only (registry.md). */
  registryToken?: string
  log?: Logger
  /**
   * The registry endpoints (registry.md), mounted at /registry after the auth
   * check and before the 404 handler. Mounting them afterwards with app.use()
   * would not work: the catch-all 404 is already registered by then.
   */
  registry?: RequestHandler
}

const REALM = 'Bearer realm="sluice-admin"'

/**
 * Admin 404s use their own code: `RouteNotFound` in the gateway's table means
 * "no route in routes.yaml matches", which would mislead on the admin port.
 */
const NOT_FOUND = 'NotFound'

function sha256 (value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest()
}

/**
 * Constant-time token comparison. Hashing both sides first makes the buffers
 * equal-length, so neither the content nor the length of the secret leaks
 * through timing (timingSafeEqual alone throws on, and so reveals, a length mismatch).
 */
export function tokensEqual (given: string, expected: string): boolean {
  return timingSafeEqual(sha256(given), sha256(expected))
}

/** The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive (RFC 7235 §2.1). */
function bearerToken (header: string | undefined): string | undefined {
  if (header === undefined) return undefined
  const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header)
  return match?.[1]
}

function sendJson (res: Response, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.status(status)
  res.setHeader('content-type', 'application/json; charset=utf-8')
  res.setHeader('content-length', Buffer.byteLength(text))
  res.end(res.req.method === 'HEAD' ? undefined : text)
}

function fail (res: Response, err: GatewayError): void {
  const requestId = randomUUID()
  res.setHeader('x-request-id', requestId)
  sendError(res, err, requestId, res.req.method === 'HEAD')
}

/** Guards one tree; `scope` says whether the registry token may pass here. */
function requireAuth (scope: 'admin' | 'registry', token: string | undefined, registryToken: string | undefined): RequestHandler {
  return (req, res, next) => {
    // No token: open (the gateway refuses that unless the admin host is loopback).
    if (token === undefined || token === '') { next(); return }
    const given = bearerToken(req.headers.authorization)
    if (given !== undefined) {
      // Both compared every time, so which one matched does not show in timing.
      const isAdmin = tokensEqual(given, token)
      const isRegistry = registryToken !== undefined && registryToken !== '' && tokensEqual(given, registryToken)
      if (isAdmin) { next(); return }
      if (isRegistry) {
        if (scope === 'registry') { next(); return }
        fail(res, new GatewayError('Forbidden', 'the registry token may only use /registry/'))
        return
      }
    }
    fail(res, new GatewayError('Unauthorized', undefined, { headers: { 'www-authenticate': REALM } }))
  }
}

type Handler = (req: Request, res: Response) => void | Promise<void>

/** Declares one path with its methods; any other method gets 405 with Allow. */
function endpoint (router: express.Router, path: string, handlers: { get?: Handler, post?: Handler }): void {
  const route = router.route(path)
  const allow: string[] = []
  // Express answers HEAD with the GET handler (the body is dropped by sendJson/Node).
  if (handlers.get !== undefined) { route.get(handlers.get); allow.push('GET', 'HEAD') }
  if (handlers.post !== undefined) { route.post(handlers.post); allow.push('POST') }
  const allowed = allow.join(', ')
  route.all((_req: Request, res: Response) => {
    fail(res, new GatewayError('MethodNotAllowed', 'method not allowed on this admin endpoint', { headers: { allow: allowed } }))
  })
}

function drainHandler (target: AdminTarget, drained: boolean): Handler {
  return async (req, res) => {
    const service = String(req.params.svc)
    const instance = String(req.params.id)
    const result = await target.setDrained(service, instance, drained)
    if (result === 'no-service') { fail(res, new GatewayError(NOT_FOUND, `unknown service "${service}"`, { status: 404 })); return }
    if (result === 'no-instance') { fail(res, new GatewayError(NOT_FOUND, `service "${service}" has no instance "${instance}"`, { status: 404 })); return }
    sendJson(res, 200, { service, instance, drained })
  }
}

export function createAdminApp (options: AdminAppOptions): express.Express {
  const { target, token, registryToken } = options
  const log = options.log ?? silentLogger()
  const app = express()
  app.disable('x-powered-by')
  app.disable('etag')
  // `/ADMIN/routes` must not reach a handler: keep matching exact.
  app.enable('case sensitive routing')

  app.use((_req, res, next) => {
    // Admin answers describe live state; nothing in between may cache them.
    res.setHeader('cache-control', 'no-store')
    next()
  })

  const open = express.Router({ caseSensitive: true })
  endpoint(open, '/healthz', { get: (_req, res) => { sendJson(res, 200, { status: 'ok' }) } })
  endpoint(open, '/readyz', {
    get: (_req, res) => {
      if (target.ready()) sendJson(res, 200, { status: 'ready' })
      else sendJson(res, 503, { status: 'not_ready' })
    },
  })
  endpoint(open, '/metrics', {
    get: async (req, res) => {
      const { contentType, body } = await target.metrics()
      res.status(200)
      res.setHeader('content-type', contentType)
      res.setHeader('content-length', Buffer.byteLength(body))
      res.end(req.method === 'HEAD' ? undefined : body)
    },
  })
  app.use(open)

  const admin = express.Router({ caseSensitive: true })
  endpoint(admin, '/routes', { get: (_req, res) => { sendJson(res, 200, target.routes()) } })
  endpoint(admin, '/services', { get: async (_req, res) => { sendJson(res, 200, await target.services()) } })
  endpoint(admin, '/config', { get: (_req, res) => { sendJson(res, 200, target.config()) } })
  endpoint(admin, '/reload', {
    post: async (_req, res) => {
      const result = await target.reload()
      if (result.ok) sendJson(res, 200, { generation: result.generation })
      else sendJson(res, 422, { errors: result.errors })
    },
  })
  endpoint(admin, '/services/:svc/instances/:id/drain', { post: drainHandler(target, true) })
  endpoint(admin, '/services/:svc/instances/:id/undrain', { post: drainHandler(target, false) })
  app.use('/admin', requireAuth('admin', token, registryToken), admin)

  const registryStack: RequestHandler[] = [requireAuth('registry', token, registryToken)]
  if (options.registry !== undefined) registryStack.push(options.registry)
  app.use('/registry', ...registryStack)

  app.use((_req: Request, res: Response) => {
    fail(res, new GatewayError(NOT_FOUND, 'no admin endpoint at this path', { status: 404 }))
  })

  // Express 5 forwards rejected promises here; no default HTML page, no internals.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    if (isGatewayError(err)) { fail(res, err); return }
    // Router-made client errors (e.g. a malformed %-escape in :svc) carry a 4xx status.
    const status = typeof err === 'object' && err !== null ? (err as { status?: unknown }).status : undefined
    if (typeof status === 'number' && status >= 400 && status < 500) {
      fail(res, new GatewayError(status === 413 ? 'PayloadTooLarge' : 'BadRequest'))
      return
    }
    const requestId = randomUUID()
    log.error({ err, request_id: requestId, method: req.method, url: req.originalUrl }, 'admin endpoint failed')
    res.setHeader('x-request-id', requestId)
    sendError(res, new GatewayError('InternalServerError'), requestId, req.method === 'HEAD')
  })

  return app
}
