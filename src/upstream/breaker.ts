/**
 * One circuit breaker per service (opossum). An attempt is a promise that
 * settles on the upstream's response headers, so a long stream is never a
 * timeout; failures are connect errors, timeouts and `failure_statuses`,
 * and a client that went away is not one (errorFilter).
 */
import CircuitBreaker from 'opossum'
import type { CircuitBreakerConfig } from '../config/types'
import type { Logger } from 'pino'

export type BreakerState = 'closed' | 'open' | 'half_open'

export interface Breaker {
  /** Runs `attempt` under the breaker; rejects with code EOPENBREAKER without running it while open. */
  run (attempt: () => Promise<void>): Promise<void>
  state (): BreakerState
  /** Seconds until a trial request will be let through (for Retry-After). */
  retryAfterSeconds (): number
  readonly config: CircuitBreakerConfig
  shutdown (): void
}

/** Marks an attempt whose client left: not the upstream's fault. */
export class ClientGone extends Error {
  readonly clientGone = true
}

/** Where a breaker reports its transitions and refusals (sluice_circuit_state, sluice_circuit_events_total). */
export interface BreakerObserver {
  state (state: BreakerState): void
  /** open, half_open, close (transitions), failure (an attempt counted against the upstream), reject (refused while open). */
  event (event: 'open' | 'half_open' | 'close' | 'failure' | 'reject'): void
}

export function createBreaker (service: string, config: CircuitBreakerConfig, log?: Logger, observer?: BreakerObserver): Breaker {
  const breaker = new CircuitBreaker((attempt: () => Promise<void>) => attempt(), {
    timeout: false,
    errorThresholdPercentage: config.error_threshold_percentage,
    // opossum's own default (0) would open on the first failure.
    volumeThreshold: config.volume_threshold,
    rollingCountTimeout: config.rolling_window_ms,
    resetTimeout: config.reset_timeout_ms,
    errorFilter: (err: unknown) => err instanceof ClientGone,
  })
  let openedAt = 0
  const report = (state: BreakerState): void => {
    log?.warn({ event: 'breaker', service, state }, `circuit ${state}`)
    observer?.state(state)
    observer?.event(state === 'closed' ? 'close' : state)
  }
  breaker.on('open', () => { openedAt = Date.now(); report('open') })
  breaker.on('halfOpen', () => report('half_open'))
  breaker.on('close', () => report('closed'))
  // Only failures and refusals: opossum's per-request 'success' is left unheard.
  if (observer !== undefined) {
    breaker.on('failure', () => observer.event('failure'))
    breaker.on('reject', () => observer.event('reject'))
  }
  return {
    config,
    run: (attempt) => breaker.fire(attempt),
    state: () => breaker.opened ? 'open' : breaker.halfOpen ? 'half_open' : 'closed',
    retryAfterSeconds: () => Math.max(1, Math.ceil((openedAt + config.reset_timeout_ms - Date.now()) / 1000)),
    shutdown: () => breaker.shutdown(),
  }
}
