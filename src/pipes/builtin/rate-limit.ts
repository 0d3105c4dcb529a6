/**
 * `rate-limit` (pipes.md): at most `limit` requests per `window_s` per key,
 * counted in the shared store so several gateway processes share one count.
 *
 * `sliding-window` (default) is the two-fixed-windows approximation that
 * Cloudflare and Kong call "sliding": the previous window's count, weighted by
 * how much of it still overlaps the sliding window, plus the current one's.
 * It needs one counter per window and no per-request log, and it smooths the
 * double burst a fixed window allows across its boundary. `fixed-window` is
 * the plain counter.
 *
 * Choices the spec leaves open:
 * - A refused request is not counted (its increment is taken back), so the
 *   limit is on requests served and Retry-After stays true for a client that
 *   retries early. Kong counts attempts instead; with a fixed window the two
 *   behave alike, with a sliding one ours lets a hammering client back in
 *   as soon as its served rate allows.
 * - A request whose key cannot be derived (no such header, no such claim)
 *   is counted under one shared `anonymous` key per placement: anonymous
 *   clients share one budget rather than slipping past the limit.
 * - A store that fails (a rejected call, e.g. Redis unreachable) lets the
 *   request through without RateLimit-* headers and logs a warning
 *   (fail-open, the store.on_error default).
 *
 * Headers follow draft-ietf-httpapi-ratelimit-headers (the -03..-06 form):
 * RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset (delta seconds)
 * on every response, plus Retry-After (RFC 9110 §10.2.3) on a 429.
 */
import { createHash } from 'node:crypto'
import type { Store } from '../../store/types'
import { definePipe, type PipeContext } from '../types'

export type RateLimitAlgorithm = 'sliding-window' | 'fixed-window'

export interface RateLimitProperties {
  limit: number
  window_s: number
  /** `ip`, `header:<name>`, `claim:<name>` or `route`. */
  key: string
  algorithm: RateLimitAlgorithm
}

export interface RateLimitVerdict {
  allowed: boolean
  limit: number
  remaining: number
  /** Seconds until the quota is fully available again (≥ 1). */
  resetS: number
  /** Seconds a refused client should wait before the next request can pass (≥ 1). */
  retryAfterS: number
}

export interface RateLimiter {
  /** Counts one request under `key` (already namespaced) and says whether it may pass. */
  /** Synchronous with an in-process store (memory), a promise otherwise. */
  hit (key: string): RateLimitVerdict | Promise<RateLimitVerdict>
}

/** The counting, apart from HTTP: a clock can be injected to test the window arithmetic. */
export function createRateLimiter (options: {
  store: Store
  limit: number
  windowMs: number
  algorithm: RateLimitAlgorithm
  now?: () => number
}): RateLimiter {
  const { store, limit, windowMs, algorithm } = options
  const now = options.now ?? Date.now
  const sliding = algorithm === 'sliding-window'
  // A counter is read while its window is current and, for the sliding
  // algorithm, during the next one as the previous window.
  const ttlMs = sliding ? 2 * windowMs : windowMs

  /** The verdict for this window's count and the previous window's; refused counts are taken back by the caller. */
  function decide (t: number, current: number, previous: number): RateLimitVerdict {
    const index = Math.floor(t / windowMs)
    const untilEnd = (index + 1) * windowMs - t
    // The share of the previous window still inside the sliding window.
    const weight = untilEnd / windowMs
    const estimate = previous * weight + current
    // The whole quota is back once this window's count weighs nothing:
    // when it ends (fixed), or when the next one ends (sliding).
    const fullAt = sliding ? untilEnd + windowMs : untilEnd
    if (estimate <= limit) {
      return { allowed: true, limit, remaining: Math.max(0, Math.floor(limit - estimate)), resetS: seconds(fullAt), retryAfterS: 0 }
    }
    const served = current - 1
    const wait = sliding ? slidingWait(limit, windowMs, untilEnd, previous, served) : untilEnd
    return { allowed: false, limit, remaining: 0, resetS: seconds(fullAt), retryAfterS: seconds(wait) }
  }

  const local = store.local
  return {
    hit (key) {
      const t = now()
      const index = Math.floor(t / windowMs)
      const counterKey = `${key}:${index}`
      if (local !== undefined) {
        const verdict = decide(t, local.incr(counterKey, 1, ttlMs).value, sliding ? local.get(`${key}:${index - 1}`) : 0)
        // Take the refused request back out (see the header comment).
        if (!verdict.allowed) local.incr(counterKey, -1, ttlMs)
        return verdict
      }
      return Promise.all([
        store.incr(counterKey, 1, ttlMs),
        sliding ? store.get(`${key}:${index - 1}`) : Promise.resolve(0),
      ]).then(async ([current, previous]) => {
        const verdict = decide(t, current.value, previous)
        // If taking it back fails the count is one high until the window ends, nothing worse.
        if (!verdict.allowed) await store.incr(counterKey, -1, ttlMs).catch(() => undefined)
        return verdict
      })
    },
  }
}

/**
 * Milliseconds until one more request fits: the previous window's weight
 * falls linearly as time passes, then the current window becomes the
 * previous one.
 */
function slidingWait (limit: number, windowMs: number, untilEnd: number, previous: number, served: number): number {
  const room = limit - 1 - served // what the previous window's weighted count may be
  if (room >= 0) {
    // previous · w ≤ room, with w = (time left in this window) / windowMs
    const w = previous === 0 ? 1 : Math.min(1, room / previous)
    return Math.max(0, untilEnd - w * windowMs)
  }
  // This window alone is full: wait for it to end, then for its weight in the next to fall.
  const w = Math.min(1, (limit - 1) / served)
  return untilEnd + (1 - w) * windowMs
}

/** Whole seconds, rounded up, never 0: "retry in 0 s" invites a busy loop. */
function seconds (ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000))
}

const STORE_WARN_INTERVAL_MS = 10_000

type KeyOf = (ctx: PipeContext) => string | undefined

/** `key` compiled into a function of the request; undefined = cannot be derived. */
export function compileKey (spec: string): KeyOf {
  if (spec === 'ip') return ctx => ctx.request.ip || undefined
  if (spec === 'route') return ctx => ctx.route.name
  if (spec.startsWith('header:')) {
    const name = spec.slice('header:'.length).trim().toLowerCase()
    return ctx => {
      const value = ctx.request.headers[name]
      const text = Array.isArray(value) ? value.join(', ') : value
      return text === undefined || text === '' ? undefined : text
    }
  }
  if (spec.startsWith('claim:')) {
    const name = spec.slice('claim:'.length)
    return ctx => {
      const claims = ctx.state.get('jwt.claims')
      if (claims === null || typeof claims !== 'object') return undefined
      const value = Object.hasOwn(claims, name) ? (claims as Record<string, unknown>)[name] : undefined
      return (typeof value === 'string' && value !== '') || typeof value === 'number' ? String(value) : undefined
    }
  }
  throw new Error(`key "${spec}" is not one of ip, route, header:<name>, claim:<name>`)
}

/** Long client-chosen values (a header) are hashed so keys stay short. */
function keyPart (value: string | undefined): string {
  if (value === undefined) return 'anonymous'
  return value.length <= 64 ? `=${value}` : `#${createHash('sha256').update(value).digest('base64url')}`
}

export const rateLimitPipe = definePipe<RateLimitProperties>({
  name: 'rate-limit',
  phase: 'inbound',
  schema: {
    type: 'object',
    properties: {
      limit: { type: 'integer', minimum: 1 },
      window_s: { type: 'number', minimum: 1 },
      key: { type: 'string', pattern: '^(ip|route|header:[!#$%&\'*+.^_`|~0-9A-Za-z-]+|claim:.+)$', default: 'ip' },
      algorithm: { enum: ['sliding-window', 'fixed-window'], default: 'sliding-window' },
    },
    required: ['limit', 'window_s'],
    additionalProperties: false,
  },
  create (props, { route, store }) {
    const keyOf = compileKey(props.key)
    const limiter = createRateLimiter({ store, limit: props.limit, windowMs: props.window_s * 1000, algorithm: props.algorithm })
    // Two limits must not share counters, and processes sharing a Redis store
    // must agree on the names: the prefix is derived from the config alone.
    const prefix = `rl:${route?.name ?? 'global'}:${props.key}:${props.algorithm}:${props.limit}/${props.window_s}`

    // While the store is down every request would log the same failure:
    // one line per interval, with how many requests went through unlimited.
    let warnedAt = -Infinity
    let unlimited = 0

    function apply (ctx: PipeContext, verdict: RateLimitVerdict): void {
      const headers: Record<string, string> = {
        'RateLimit-Limit': String(verdict.limit),
        'RateLimit-Remaining': String(verdict.remaining),
        'RateLimit-Reset': String(verdict.resetS),
      }
      if (!verdict.allowed) {
        ctx.fail(429, 'RateLimited', `rate limit of ${verdict.limit} requests per ${props.window_s} s exceeded`, {
          ...headers,
          'Retry-After': String(verdict.retryAfterS),
        })
      }
      for (const name in headers) ctx.setResponseHeader(name, headers[name])
    }

    function storeFailed (ctx: PipeContext, err: unknown): void {
      unlimited++
      if (Date.now() - warnedAt >= STORE_WARN_INTERVAL_MS) {
        ctx.log.warn({ err, pipe: 'rate-limit', unlimited }, 'rate-limit store failed: requests let through (fail-open)')
        warnedAt = Date.now()
        unlimited = 0
      }
    }

    return (ctx) => {
      let verdict: RateLimitVerdict | Promise<RateLimitVerdict>
      try {
        verdict = limiter.hit(`${prefix}:${keyPart(keyOf(ctx))}`)
      } catch (err) {
        storeFailed(ctx, err)
        return
      }
      if (verdict instanceof Promise) return verdict.then((v) => apply(ctx, v), (err: unknown) => storeFailed(ctx, err))
      apply(ctx, verdict)
    }
  },
})
