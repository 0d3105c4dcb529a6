/**
 * Prometheus metrics (operations.md "Metrics"): one prom-client Registry per gateway instance.
 *
 * The per-request path (RouteMetrics.done, upstreamSeconds, inflight) allocates nothing: a
 * prom-client child's inc()/observe() still builds a label hash string and a result object on
 * every call (prom-client 15 lib/counter.js, lib/histogram.js), so requests only bump numbers in
 * typed arrays, and the numbers reach prom-client when a scrape asks for them (a metric's
 * `collect` hook for counters and gauges; the two request histograms are small collectors of
 * our own that render in prom-client's format and take part in its cluster aggregation).
 */
import perfHooks = require('node:perf_hooks')
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'
import type { Metric } from 'prom-client'

export interface RouteMetrics {
  readonly route: string
  readonly service: string
  /** One finished request: method as sent (GET…; anything else counts as "OTHER"), HTTP status, who produced it, seconds since it arrived. */
  done (method: string, status: number, source: 'upstream' | 'gateway', seconds: number): void
  /** A request of this route refused by a rate limit. */
  rateLimited (): void
}

export type UpstreamState = 'healthy' | 'unhealthy' | 'drained'
export type CircuitState = 'closed' | 'open' | 'half_open'

export interface GatewayMetrics {
  readonly registry: Registry
  /** Pre-bound counters and histogram for one route (call at load, once per route; calling again with the same pair returns the same object, so reloads keep counting). */
  route (route: string, service: string): RouteMetrics
  /** For 404s: route="unmatched", service="" (empty: cannot collide with a configured service name; PromQL treats it as "no service"). */
  readonly unmatched: RouteMetrics
  /** Time to upstream response headers; pre-bound per service, call at load. */
  upstreamSeconds (service: string): (seconds: number) => void
  inflight: { inc (): void, dec (): void }
  /** Gauge 1 on the current state, 0 on the others. */
  upstreamHealth (service: string, instance: string, state: UpstreamState): void
  /** Drops an instance's three health series (a deregistered instance id would otherwise stay forever). */
  forgetUpstream (service: string, instance: string): void
  /** Gauge 1 on the current state, 0 on the others. */
  circuitState (service: string, state: CircuitState): void
  circuitEvent (service: string, event: string): void
  rateLimited (route: string): void
  /** Drops a service's circuit-state series (its breaker was removed by a reload). */
  forgetCircuit (service: string): void
  configReload (result: 'success' | 'failure'): void
  setGeneration (n: number): void
  registryInstances (service: string, count: number): void
  /** Prometheus text. */
  expose (): Promise<{ contentType: string, body: string }>
  /** Stops the default metrics' event-loop-delay sampler and GC observer. Idempotent; expose() still works. */
  close (): void
}

export interface MetricsOptions {
  /** prom-client's default process and Node metrics; default true. */
  defaultMetrics?: boolean
  /** Buckets (seconds) of both duration histograms; default prom-client's. */
  buckets?: number[]
}

export const DEFAULT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'OTHER'] as const
const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const
const SOURCES = ['upstream', 'gateway'] as const
const SLOTS = METHODS.length * STATUS_CLASSES.length * SOURCES.length

/** Methods are case-sensitive (RFC 9110 §9.1): "get" is not GET, it counts as OTHER. */
function methodIndex (method: string): number {
  switch (method) {
    case 'GET': return 0
    case 'HEAD': return 1
    case 'POST': return 2
    case 'PUT': return 3
    case 'PATCH': return 4
    case 'DELETE': return 5
    case 'OPTIONS': return 6
    default: return 7
  }
}

/** 1xx..5xx; anything below 200 counts as 1xx and anything from 500 up as 5xx, so the label set stays closed. */
function classIndex (status: number): number {
  const c = (status / 100) | 0
  return c <= 1 ? 0 : c >= 5 ? 4 : c - 1
}

function slot (method: string, status: number, source: 'upstream' | 'gateway'): number {
  return (methodIndex(method) * STATUS_CLASSES.length + classIndex(status)) * SOURCES.length + (source === 'gateway' ? 1 : 0)
}

/** One exported sample, as prom-client's Registry reads them (its .d.ts types `type` as an enum, the runtime uses strings). */
interface Sample { metricName: string, labels: Record<string, string | number>, value: number }
interface Exported { name: string, help: string, type: 'histogram', aggregator: 'sum', values: Sample[] }

/** One bound series of a SeriesHistogram: raw (non-cumulative) bucket counts, last slot is +Inf. */
interface Series {
  readonly labels: Readonly<Record<string, string>>
  readonly counts: Float64Array
  sum: number
  count: number
}

/**
 * A histogram whose series are bound once and observed without allocation. It is registered in the
 * Registry next to prom-client's own metrics and answers get()/getForPromString() in their format
 * (aggregator "sum", so AggregatorRegistry merges workers like a prom-client Histogram).
 */
class SeriesHistogram {
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  private readonly series = new Map<string, Series>()

  constructor (readonly name: string, readonly help: string, private readonly bounds: readonly number[]) {}

  bind (labels: Record<string, string>): (seconds: number) => void {
    const key = JSON.stringify(labels)
    let s = this.series.get(key)
    if (s === undefined) {
      s = { labels: Object.freeze({ ...labels }), counts: new Float64Array(this.bounds.length + 1), sum: 0, count: 0 }
      this.series.set(key, s)
    }
    const series = s
    const bounds = this.bounds
    const n = bounds.length
    return (seconds: number): void => {
      if (!Number.isFinite(seconds)) return // never throw on the request path
      let i = 0
      while (i < n && seconds > bounds[i]) i++
      series.counts[i]++
      series.sum += seconds
      series.count++
    }
  }

  async get (): Promise<Exported> {
    const values: Sample[] = []
    const bucket = this.name + '_bucket'
    for (const s of this.series.values()) {
      let acc = 0
      for (let i = 0; i < this.bounds.length; i++) {
        acc += s.counts[i]
        values.push({ metricName: bucket, labels: { ...s.labels, le: this.bounds[i] }, value: acc })
      }
      values.push({ metricName: bucket, labels: { ...s.labels, le: '+Inf' }, value: s.count })
      values.push({ metricName: this.name + '_sum', labels: { ...s.labels }, value: s.sum })
      values.push({ metricName: this.name + '_count', labels: { ...s.labels }, value: s.count })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  async getForPromString (): Promise<Exported> {
    return await this.get()
  }

  reset (): void {
    for (const s of this.series.values()) { s.counts.fill(0); s.sum = 0; s.count = 0 }
  }
}

/** The per-route request counter: 80 pending counts, flushed into prom-client children at scrape. */
class RouteCounter implements RouteMetrics {
  readonly pending = new Float64Array(SLOTS)
  private readonly children: Array<Counter.Internal | undefined> = new Array(SLOTS).fill(undefined)

  constructor (
    readonly route: string,
    readonly service: string,
    private readonly observe: (seconds: number) => void,
    readonly rateLimited: () => void,
  ) {}

  done (method: string, status: number, source: 'upstream' | 'gateway', seconds: number): void {
    this.pending[slot(method, status, source)]++
    this.observe(seconds)
  }

  flush (counter: Counter<string>): void {
    const pending = this.pending
    for (let i = 0; i < SLOTS; i++) {
      const n = pending[i]
      if (n === 0) continue
      pending[i] = 0
      let child = this.children[i]
      if (child === undefined) {
        const sourceIndex = i % SOURCES.length
        const classIdx = ((i - sourceIndex) / SOURCES.length) % STATUS_CLASSES.length
        const method = Math.floor(i / (SOURCES.length * STATUS_CLASSES.length))
        child = counter.labels(this.route, this.service, METHODS[method], STATUS_CLASSES[classIdx], SOURCES[sourceIndex])
        this.children[i] = child
      }
      child.inc(n)
    }
  }
}

/**
 * collectDefaultMetrics starts two things it never hands back: a perf_hooks.monitorEventLoopDelay
 * sampler (a libuv timer at 10 ms resolution) and a PerformanceObserver on 'gc' entries
 * (prom-client 15 lib/metrics/eventLoopLag.js, lib/metrics/gc.js). Both are looked up on the
 * perf_hooks module at call time, so wrapping them for the duration of the synchronous call lets
 * us keep what was created and stop it on close(). Everything else it registers only works when
 * scraped.
 */
function collectDefaultsStoppable (register: Registry): () => void {
  const hooks = perfHooks as unknown as {
    monitorEventLoopDelay: typeof perfHooks.monitorEventLoopDelay
    PerformanceObserver: typeof perfHooks.PerformanceObserver
  }
  const { monitorEventLoopDelay, PerformanceObserver } = hooks
  const samplers: perfHooks.IntervalHistogram[] = []
  const observers: perfHooks.PerformanceObserver[] = []
  hooks.monitorEventLoopDelay = (options) => {
    const h = monitorEventLoopDelay(options)
    samplers.push(h)
    return h
  }
  hooks.PerformanceObserver = class extends PerformanceObserver {
    constructor (callback: perfHooks.PerformanceObserverCallback) {
      super(callback)
      observers.push(this)
    }
  }
  try {
    collectDefaultMetrics({ register })
  } finally {
    hooks.monitorEventLoopDelay = monitorEventLoopDelay
    hooks.PerformanceObserver = PerformanceObserver
  }
  return () => {
    for (const h of samplers) h.disable()
    for (const o of observers) o.disconnect()
    samplers.length = 0
    observers.length = 0
  }
}

/** A counter's child for some label values, bound on first use and kept. */
function boundChildren (counter: Counter<string>): (...values: string[]) => Counter.Internal {
  const children = new Map<string, Counter.Internal>()
  return (...values) => {
    const key = values.join('\u0000')
    let child = children.get(key)
    if (child === undefined) {
      child = counter.labels(...values)
      children.set(key, child)
    }
    return child
  }
}

const UPSTREAM_STATES: readonly UpstreamState[] = ['healthy', 'unhealthy', 'drained']
const CIRCUIT_STATES: readonly CircuitState[] = ['closed', 'open', 'half_open']

/*
 * In a cluster, /metrics merges the workers' registries (prom-client's AggregatorRegistry): counts,
 * histograms and the in-flight gauge add up; state gauges, the generation and the reload count take
 * the largest value (each worker holds the same config, health checks and breakers of its own), so a
 * state shows 1 when at least one worker is in it.
 */
export function createMetrics (options: MetricsOptions = {}): GatewayMetrics {
  const registry = new Registry()
  const registers = [registry]
  const buckets = [...(options.buckets ?? DEFAULT_BUCKETS)].sort((a, b) => a - b)

  const routes = new Map<string, RouteCounter>()
  let inflightNow = 0

  const requests = new Counter({
    name: 'sluice_http_requests_total',
    help: 'Requests answered, by route, service, method, status class and who produced the status (upstream or gateway).',
    labelNames: ['route', 'service', 'method', 'status_class', 'source'],
    registers,
    collect () { for (const r of routes.values()) r.flush(this) },
  })
  const requestSeconds = new SeriesHistogram('sluice_http_request_duration_seconds',
    'Time from request arrival to the end of the response, by route and service.', buckets)
  const upstreamHistogram = new SeriesHistogram('sluice_upstream_duration_seconds',
    'Time from sending to an upstream until its response headers arrived, by service.', buckets)
  // Custom collectors: the Registry only calls name/get/getForPromString/reset on what it holds.
  registry.registerMetric(requestSeconds as unknown as Metric)
  registry.registerMetric(upstreamHistogram as unknown as Metric)
  new Gauge({
    name: 'sluice_inflight_requests',
    help: 'Requests being handled right now.',
    registers,
    collect () { this.set(inflightNow) },
  })
  const upstreamHealthGauge = new Gauge({
    name: 'sluice_upstream_health',
    help: 'Upstream instance health: 1 on the current state (healthy, unhealthy, drained), 0 on the others.',
    labelNames: ['service', 'instance', 'state'],
    registers,
    aggregator: 'max',
  })
  const circuitStateGauge = new Gauge({
    name: 'sluice_circuit_state',
    help: 'Circuit breaker state per service: 1 on the current state (closed, open, half_open), 0 on the others.',
    labelNames: ['service', 'state'],
    registers,
    aggregator: 'max',
  })
  const circuitEvents = new Counter({
    name: 'sluice_circuit_events_total',
    help: 'Circuit breaker events per service.',
    labelNames: ['service', 'event'],
    registers,
  })
  const rateLimitedCounter = new Counter({
    name: 'sluice_rate_limited_total',
    help: 'Requests refused by a rate limit, by route.',
    labelNames: ['route'],
    registers,
  })
  const reloads = new Counter({
    name: 'sluice_config_reloads_total',
    help: 'Configuration reloads by result (success, failure).',
    labelNames: ['result'],
    registers,
    aggregator: 'max',
  })
  const generation = new Gauge({
    name: 'sluice_config_generation',
    help: 'Generation number of the configuration being served.',
    registers,
    aggregator: 'max',
  })
  const registryInstancesGauge = new Gauge({
    name: 'sluice_registry_instances',
    help: 'Instances currently registered through the service registry, by service.',
    labelNames: ['service'],
    registers,
    aggregator: 'max',
  })

  const stopDefaults = options.defaultMetrics === false ? () => {} : collectDefaultsStoppable(registry)

  function route (name: string, service: string): RouteMetrics {
    const key = name + '\u0000' + service
    let r = routes.get(key)
    if (r === undefined) {
      let limited: Counter.Internal | undefined
      r = new RouteCounter(name, service, requestSeconds.bind({ route: name, service }), () => { (limited ??= rateLimitedChild(name)).inc() })
      routes.set(key, r)
    }
    return r
  }

  const upstreamObservers = new Map<string, (seconds: number) => void>()
  // Rate-limit refusals and breaker rejections can come once per request under a flood or an
  // outage: each series' child is bound once (prom-client's inc with a label object hashes it per call).
  const rateLimitedChild = boundChildren(rateLimitedCounter)
  const circuitEventChild = boundChildren(circuitEvents)
  function rateLimited (routeName: string): void {
    rateLimitedChild(routeName).inc()
  }

  return {
    registry,
    route,
    unmatched: route('unmatched', ''),
    upstreamSeconds (service) {
      let observe = upstreamObservers.get(service)
      if (observe === undefined) {
        observe = upstreamHistogram.bind({ service })
        upstreamObservers.set(service, observe)
      }
      return observe
    },
    inflight: {
      inc () { inflightNow++ },
      dec () { if (inflightNow > 0) inflightNow-- },
    },
    upstreamHealth (service, instance, state) {
      for (const s of UPSTREAM_STATES) upstreamHealthGauge.set({ service, instance, state: s }, s === state ? 1 : 0)
    },
    forgetUpstream (service, instance) {
      for (const s of UPSTREAM_STATES) upstreamHealthGauge.remove({ service, instance, state: s })
    },
    circuitState (service, state) {
      for (const s of CIRCUIT_STATES) circuitStateGauge.set({ service, state: s }, s === state ? 1 : 0)
    },
    circuitEvent (service, event) {
      circuitEventChild(service, event).inc()
    },
    rateLimited,
    forgetCircuit (service) {
      for (const s of CIRCUIT_STATES) circuitStateGauge.remove({ service, state: s })
    },
    configReload (result) {
      reloads.inc({ result })
    },
    setGeneration (n) {
      generation.set(n)
    },
    registryInstances (service, count) {
      registryInstancesGauge.set({ service }, count)
    },
    async expose () {
      return { contentType: registry.contentType, body: await registry.metrics() }
    },
    close () {
      stopDefaults()
    },
  }
}
