/**
 * Active health checks: each target is probed with `GET <path>` every
 * `interval_ms`; `unhealthy_threshold` consecutive failures mark it
 * unhealthy, `healthy_threshold` consecutive successes mark it healthy again.
 *
 * One probe per target at a time: the next probe is scheduled when the
 * previous one ends, `interval_ms` after the previous one started (at once
 * when it took longer), so a slow target is probed less often rather than
 * piling up probes. Timers are unref'd, so checks never keep a process alive.
 *
 * 2xx and 3xx answers (redirects are not followed) are successes; any other
 * status, a connect error, a cut-short response or no full answer within
 * `timeout_ms` (the request is then destroyed) are failures.
 */
import http from 'node:http'
import https from 'node:https'
import type { HealthCheckConfig } from '../config/types'

export type HealthState = 'healthy' | 'unhealthy'

export interface HealthTarget {
  id: string
  /** http(s)://host[:port] */
  url: string
  /** The pool to probe through (the service's, so TLS settings apply); a dedicated keep-alive agent when absent. */
  agent?: http.Agent
}

export interface HealthChecker {
  /** Starts probing (the first probe of each target at once). Calling it again while running does nothing. */
  start (): void
  /** Clears every timer and destroys in-flight probes; nothing fires afterwards. States are kept, and start() resumes. */
  stop (): void
  /** The target's state; 'healthy' for an id the checker does not know. */
  state (id: string): HealthState
}

export type HealthChangeListener = (target: HealthTarget, state: HealthState, reason: string) => void

interface Probe {
  readonly target: HealthTarget
  readonly options: http.RequestOptions
  readonly request: typeof http.request
  state: HealthState
  failures: number
  successes: number
  /** The schedule timer between probes, the deadline timer during one. */
  timer: NodeJS.Timeout | undefined
  /** Identifies the probe under way, so late events of a stopped one are ignored. */
  probe: object | undefined
  /** The probe's current request. */
  inflight: http.ClientRequest | undefined
}

const USER_AGENT = 'sluice-health-check'

export function createHealthChecker (config: HealthCheckConfig, targets: readonly HealthTarget[], onChange: HealthChangeListener): HealthChecker {
  let running = false
  // Dedicated pools for targets without an agent, created on first need.
  let httpAgent: http.Agent | undefined
  let httpsAgent: https.Agent | undefined

  function agentFor (target: HealthTarget, secure: boolean): http.Agent {
    // An agent only serves its own scheme: http.request throws on an
    // https.Agent and the reverse, so a mismatched one is not used.
    const given = target.agent as (http.Agent & { protocol?: string }) | undefined
    if (given !== undefined && given.protocol === (secure ? 'https:' : 'http:')) return given
    if (secure) return (httpsAgent ??= new https.Agent({ keepAlive: true, scheduling: 'lifo' }))
    return (httpAgent ??= new http.Agent({ keepAlive: true, scheduling: 'lifo' }))
  }

  const probes: Probe[] = targets.map((target) => {
    const url = new URL(target.url)
    const secure = url.protocol === 'https:'
    return {
      target,
      options: {
        method: 'GET',
        protocol: url.protocol,
        // WHATWG keeps IPv6 literals bracketed; net.connect wants them bare.
        hostname: url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname,
        port: url.port !== '' ? url.port : (secure ? 443 : 80),
        path: config.path,
        agent: agentFor(target, secure),
        headers: { 'user-agent': USER_AGENT, accept: '*/*' },
      },
      request: secure ? https.request : http.request,
      state: 'healthy',
      failures: 0,
      successes: 0,
      timer: undefined,
      probe: undefined,
      inflight: undefined,
    }
  })
  const byId = new Map<string, Probe>()
  for (const p of probes) byId.set(p.target.id, p)

  function schedule (p: Probe, delay: number): void {
    if (!running || p.timer !== undefined || p.probe !== undefined) return
    p.timer = setTimeout(run, delay, p)
    p.timer.unref()
  }

  function run (p: Probe): void {
    p.timer = undefined
    if (!running) return
    const started = performance.now()
    const token = {}
    p.probe = token
    let retried = false
    const finish = (ok: boolean, reason: string): void => {
      // Stale: stop() (perhaps followed by start()) took this probe away.
      if (p.probe !== token) return
      p.probe = undefined
      p.inflight = undefined
      clearTimeout(p.timer)
      p.timer = undefined
      record(p, ok, reason)
      schedule(p, Math.max(0, config.interval_ms - (performance.now() - started)))
    }
    const send = (): void => {
      let req: http.ClientRequest
      let res: http.IncomingMessage | undefined
      // Only the probe's current request may end it (not one replaced by a retry).
      const end = (ok: boolean, reason: string): void => { if (p.inflight === req) finish(ok, reason) }
      const answered = (response: http.IncomingMessage): void => {
        const status = response.statusCode ?? 0
        end(status >= 200 && status < 400, `HTTP ${status}`)
      }
      try {
        req = p.request(p.options, (response) => {
          res = response
          response.on('error', () => end(false, `response aborted after HTTP ${response.statusCode}`))
          // Read to the end so the keep-alive socket goes back to the pool.
          response.on('end', () => answered(response))
          response.resume()
        })
      } catch (err) {
        // Bad request options throw synchronously; a probe failure all the same.
        finish(false, describe(err))
        return
      }
      p.inflight = req
      req.on('error', (err: NodeJS.ErrnoException) => {
        // A pooled socket the server closed just as it was reused (e.g. Node's
        // 5 s server keep-alive timeout against a 5 s interval) says nothing
        // about the target: try once more on a fresh connection, as Node's
        // docs advise for request.reusedSocket.
        if (req.reusedSocket && !retried && res === undefined && (err.code === 'ECONNRESET' || err.code === 'EPIPE') && p.inflight === req) {
          retried = true
          send()
          return
        }
        end(false, describe(err))
      })
      // A response cut short after its headers emits 'close' without 'end'.
      req.on('close', () => {
        if (res === undefined) end(false, 'connection closed without a response')
        else if (res.complete) answered(res)
        else end(false, `response aborted after HTTP ${res.statusCode}`)
      })
      req.end()
    }
    // One deadline for the whole probe, a retry included.
    p.timer = setTimeout(() => {
      p.timer = undefined
      const req = p.inflight
      finish(false, `no answer within ${config.timeout_ms} ms`)
      req?.destroy()
    }, config.timeout_ms)
    p.timer.unref()
    send()
  }

  function record (p: Probe, ok: boolean, reason: string): void {
    if (ok) {
      p.failures = 0
      if (p.state === 'healthy') return
      if (++p.successes < config.healthy_threshold) return
      p.successes = 0
      change(p, 'healthy', `${reason} (${config.healthy_threshold} consecutive successes)`)
    } else {
      p.successes = 0
      if (p.state === 'unhealthy') return
      if (++p.failures < config.unhealthy_threshold) return
      p.failures = 0
      change(p, 'unhealthy', `${reason} (${config.unhealthy_threshold} consecutive failures)`)
    }
  }

  function change (p: Probe, state: HealthState, reason: string): void {
    p.state = state
    try {
      onChange(p.target, state, reason)
    } catch (err) {
      // A throwing listener (logger, metrics) must not stop the checks or the process.
      process.emitWarning(err instanceof Error ? err : String(err), { code: 'SLUICE_HEALTH_LISTENER' })
    }
  }

  return {
    start () {
      if (running) return
      running = true
      for (const p of probes) schedule(p, 0)
    },
    stop () {
      running = false
      for (const p of probes) {
        clearTimeout(p.timer)
        p.timer = undefined
        const req = p.inflight
        p.probe = undefined
        p.inflight = undefined
        req?.destroy()
      }
      // Only the pools this checker made; a target's own agent is its owner's to close.
      httpAgent?.destroy()
      httpsAgent?.destroy()
    },
    state (id) {
      return byId.get(id)?.state ?? 'healthy'
    },
  }
}

function describe (err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code
    return code !== undefined ? `${code}: ${err.message}` : err.message
  }
  return String(err)
}
