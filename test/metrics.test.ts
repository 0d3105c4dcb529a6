import perfHooks = require('node:perf_hooks')
import { AggregatorRegistry } from 'prom-client'
import { createMetrics, type GatewayMetrics } from '../src/observability/metrics'
import { find, parse, value, type Exposition } from './support/prometheus'

async function scrape (metrics: GatewayMetrics): Promise<Exposition> {
  const { contentType, body } = await metrics.expose()
  expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/)
  return parse(body)
}

const opened: GatewayMetrics[] = []
function open (options?: Parameters<typeof createMetrics>[0]): GatewayMetrics {
  const m = createMetrics({ defaultMetrics: false, ...options })
  opened.push(m)
  return m
}
afterEach(() => { for (const m of opened.splice(0)) m.close() })

test('every metric of operations.md is exposed with its type and exactly its label names', async () => {
  const m = open()
  m.route('users', 'accounts').done('GET', 200, 'upstream', 0.02)
  m.unmatched.done('GET', 404, 'gateway', 0.001)
  m.upstreamSeconds('accounts')(0.015)
  m.inflight.inc()
  m.upstreamHealth('accounts', '10.0.0.1:8080', 'healthy')
  m.circuitState('accounts', 'closed')
  m.circuitEvent('accounts', 'open')
  m.rateLimited('users')
  m.configReload('success')
  m.setGeneration(3)
  m.registryInstances('accounts', 2)
  const exp = await scrape(m)

  const promised: Array<[string, string, string[]]> = [
    ['sluice_http_requests_total', 'counter', ['route', 'service', 'method', 'status_class', 'source']],
    ['sluice_http_request_duration_seconds', 'histogram', ['route', 'service']],
    ['sluice_upstream_duration_seconds', 'histogram', ['service']],
    ['sluice_inflight_requests', 'gauge', []],
    ['sluice_upstream_health', 'gauge', ['service', 'instance', 'state']],
    ['sluice_circuit_state', 'gauge', ['service', 'state']],
    ['sluice_circuit_events_total', 'counter', ['service', 'event']],
    ['sluice_rate_limited_total', 'counter', ['route']],
    ['sluice_config_reloads_total', 'counter', ['result']],
    ['sluice_config_generation', 'gauge', []],
    ['sluice_registry_instances', 'gauge', ['service']],
  ]
  for (const [name, type, labelNames] of promised) {
    expect([name, exp.types.get(name)]).toEqual([name, type])
    const samples = type === 'histogram' ? find(exp, name + '_count') : find(exp, name)
    expect(samples.length).toBeGreaterThan(0)
    for (const s of samples) expect([name, Object.keys(s.labels).sort()]).toEqual([name, [...labelNames].sort()])
  }
  // Nothing beyond the promise (default metrics are off here).
  expect([...exp.types.keys()].sort()).toEqual(promised.map(p => p[0]).sort())

  expect(value(exp, 'sluice_http_requests_total', { route: 'users', service: 'accounts', method: 'GET', status_class: '2xx', source: 'upstream' })).toBe(1)
  expect(value(exp, 'sluice_http_requests_total', { route: 'unmatched', service: '', method: 'GET', status_class: '4xx', source: 'gateway' })).toBe(1)
  expect(value(exp, 'sluice_http_request_duration_seconds_count', { route: 'users', service: 'accounts' })).toBe(1)
  expect(value(exp, 'sluice_http_request_duration_seconds_sum', { route: 'users', service: 'accounts' })).toBeCloseTo(0.02)
  expect(value(exp, 'sluice_upstream_duration_seconds_count', { service: 'accounts' })).toBe(1)
  expect(value(exp, 'sluice_inflight_requests')).toBe(1)
  expect(value(exp, 'sluice_upstream_health', { service: 'accounts', instance: '10.0.0.1:8080', state: 'healthy' })).toBe(1)
  expect(value(exp, 'sluice_circuit_state', { service: 'accounts', state: 'closed' })).toBe(1)
  expect(value(exp, 'sluice_circuit_events_total', { service: 'accounts', event: 'open' })).toBe(1)
  expect(value(exp, 'sluice_rate_limited_total', { route: 'users' })).toBe(1)
  expect(value(exp, 'sluice_config_reloads_total', { result: 'success' })).toBe(1)
  expect(value(exp, 'sluice_config_generation')).toBe(3)
  expect(value(exp, 'sluice_registry_instances', { service: 'accounts' })).toBe(2)
})

test('counters increment across calls and across scrapes', async () => {
  const m = open()
  const r = m.route('users', 'accounts')
  r.done('POST', 201, 'upstream', 0.01)
  r.done('POST', 201, 'upstream', 0.01)
  m.rateLimited('users')
  m.configReload('failure')
  m.circuitEvent('accounts', 'timeout')
  const labels = { route: 'users', service: 'accounts', method: 'POST', status_class: '2xx', source: 'upstream' }
  let exp = await scrape(m)
  expect(value(exp, 'sluice_http_requests_total', labels)).toBe(2)

  r.done('POST', 201, 'upstream', 0.01)
  m.rateLimited('users')
  m.rateLimited('users')
  m.configReload('failure')
  m.configReload('success')
  m.circuitEvent('accounts', 'timeout')
  exp = await scrape(m)
  expect(value(exp, 'sluice_http_requests_total', labels)).toBe(3)
  expect(value(exp, 'sluice_http_request_duration_seconds_count', { route: 'users' })).toBe(3)
  expect(value(exp, 'sluice_rate_limited_total', { route: 'users' })).toBe(3)
  expect(value(exp, 'sluice_config_reloads_total', { result: 'failure' })).toBe(2)
  expect(value(exp, 'sluice_config_reloads_total', { result: 'success' })).toBe(1)
  expect(value(exp, 'sluice_circuit_events_total', { service: 'accounts', event: 'timeout' })).toBe(2)

  // A scrape does not count twice what it already flushed.
  exp = await scrape(m)
  expect(value(exp, 'sluice_http_requests_total', labels)).toBe(3)
})

test('status_class is the hundreds digit, clamped to 1xx..5xx', async () => {
  const m = open()
  const r = m.route('r', 's')
  for (const status of [100, 199, 200, 204, 299, 301, 304, 404, 429, 500, 503, 599]) r.done('GET', status, 'upstream', 0)
  const exp = await scrape(m)
  const count = (c: string): number | undefined => value(exp, 'sluice_http_requests_total', { route: 'r', status_class: c })
  expect(count('1xx')).toBe(2)
  expect(count('2xx')).toBe(3)
  expect(count('3xx')).toBe(2)
  expect(count('4xx')).toBe(2)
  expect(count('5xx')).toBe(3)
})

test('each listed method keeps its name; any other method, lower-case ones included, counts as OTHER', async () => {
  const m = open()
  const r = m.route('r', 's')
  for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) r.done(method, 200, 'upstream', 0)
  r.done('PROPFIND', 200, 'upstream', 0)
  r.done('BREW', 418, 'gateway', 0)
  r.done('get', 200, 'upstream', 0)
  const exp = await scrape(m)
  for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
    expect([method, value(exp, 'sluice_http_requests_total', { method })]).toEqual([method, 1])
  }
  expect(value(exp, 'sluice_http_requests_total', { method: 'OTHER', status_class: '2xx' })).toBe(2)
  expect(value(exp, 'sluice_http_requests_total', { method: 'OTHER', status_class: '4xx', source: 'gateway' })).toBe(1)
  expect(find(exp, 'sluice_http_requests_total').map(s => s.labels.method)).not.toContain('PROPFIND')
})

test('source upstream and gateway are separate series', async () => {
  const m = open()
  const r = m.route('r', 's')
  r.done('GET', 502, 'gateway', 0)
  r.done('GET', 503, 'upstream', 0)
  r.done('GET', 503, 'upstream', 0)
  const exp = await scrape(m)
  expect(value(exp, 'sluice_http_requests_total', { status_class: '5xx', source: 'gateway' })).toBe(1)
  expect(value(exp, 'sluice_http_requests_total', { status_class: '5xx', source: 'upstream' })).toBe(2)
})

test('histograms are cumulative over the configured buckets, with +Inf, sum and count', async () => {
  const m = open({ buckets: [0.5, 0.1, 1] }) // order given does not matter
  const r = m.route('r', 's')
  for (const s of [0.05, 0.1, 0.3, 0.7, 2]) r.done('GET', 200, 'upstream', s)
  r.done('GET', 200, 'upstream', Number.NaN) // ignored: the request path never throws
  const up = m.upstreamSeconds('s')
  up(0.2)
  up(5)
  const exp = await scrape(m)
  const bucket = (le: string): number | undefined => value(exp, 'sluice_http_request_duration_seconds_bucket', { route: 'r', service: 's', le })
  expect([bucket('0.1'), bucket('0.5'), bucket('1'), bucket('+Inf')]).toEqual([2, 3, 4, 5])
  expect(value(exp, 'sluice_http_request_duration_seconds_count', { route: 'r' })).toBe(5)
  expect(value(exp, 'sluice_http_request_duration_seconds_sum', { route: 'r' })).toBeCloseTo(3.15)
  expect(value(exp, 'sluice_http_requests_total', { route: 'r' })).toBe(6) // the NaN request is still counted
  const upBucket = (le: string): number | undefined => value(exp, 'sluice_upstream_duration_seconds_bucket', { service: 's', le })
  expect([upBucket('0.1'), upBucket('0.5'), upBucket('1'), upBucket('+Inf')]).toEqual([0, 1, 1, 2])
  expect(value(exp, 'sluice_upstream_duration_seconds_sum', { service: 's' })).toBeCloseTo(5.2)
})

test('route() and upstreamSeconds() bound twice for the same names share one series (reloads keep counting)', async () => {
  const m = open()
  expect(m.route('r', 's')).toBe(m.route('r', 's'))
  expect(m.upstreamSeconds('s')).toBe(m.upstreamSeconds('s'))
  m.route('r', 's').done('GET', 200, 'upstream', 0.1)
  m.route('r', 's').done('GET', 200, 'upstream', 0.1)
  m.route('r', 'other').done('GET', 200, 'upstream', 0.1)
  const exp = await scrape(m)
  expect(value(exp, 'sluice_http_requests_total', { route: 'r', service: 's' })).toBe(2)
  expect(value(exp, 'sluice_http_requests_total', { route: 'r', service: 'other' })).toBe(1)
  expect(value(exp, 'sluice_http_request_duration_seconds_count', { route: 'r', service: 's' })).toBe(2)
})

test('state gauges put 1 on the current state and 0 on the others', async () => {
  const m = open()
  m.upstreamHealth('svc', 'a', 'healthy')
  m.upstreamHealth('svc', 'a', 'drained')
  m.upstreamHealth('svc', 'b', 'unhealthy')
  m.circuitState('svc', 'open')
  m.circuitState('svc', 'half_open')
  let exp = await scrape(m)
  const health = (instance: string, state: string): number | undefined => value(exp, 'sluice_upstream_health', { service: 'svc', instance, state })
  expect([health('a', 'healthy'), health('a', 'unhealthy'), health('a', 'drained')]).toEqual([0, 0, 1])
  expect([health('b', 'healthy'), health('b', 'unhealthy'), health('b', 'drained')]).toEqual([0, 1, 0])
  const circuit = (state: string): number | undefined => value(exp, 'sluice_circuit_state', { service: 'svc', state })
  expect([circuit('closed'), circuit('open'), circuit('half_open')]).toEqual([0, 0, 1])

  m.forgetUpstream('svc', 'a')
  exp = await scrape(m)
  expect(find(exp, 'sluice_upstream_health', { instance: 'a' })).toEqual([])
  expect(find(exp, 'sluice_upstream_health', { instance: 'b' })).toHaveLength(3)
})

test('the in-flight gauge follows inc and dec and never goes below zero', async () => {
  const m = open()
  m.inflight.inc()
  m.inflight.inc()
  m.inflight.dec()
  expect(value(await scrape(m), 'sluice_inflight_requests')).toBe(1)
  m.inflight.dec()
  m.inflight.dec()
  expect(value(await scrape(m), 'sluice_inflight_requests')).toBe(0)
})

test('two instances share no state and no registry', async () => {
  const a = open()
  const b = open()
  expect(a.registry).not.toBe(b.registry)
  a.route('r', 's').done('GET', 200, 'upstream', 0.1)
  a.upstreamSeconds('s')(0.1)
  a.setGeneration(7)
  a.inflight.inc()
  b.route('r', 's').done('GET', 500, 'gateway', 0.1)
  const expA = await scrape(a)
  const expB = await scrape(b)
  expect(value(expA, 'sluice_http_requests_total', { route: 'r' })).toBe(1)
  expect(value(expA, 'sluice_http_requests_total', { route: 'r', status_class: '2xx' })).toBe(1)
  expect(value(expB, 'sluice_http_requests_total', { route: 'r' })).toBe(1)
  expect(value(expB, 'sluice_http_requests_total', { route: 'r', status_class: '5xx' })).toBe(1)
  expect(find(expB, 'sluice_upstream_duration_seconds_count')).toEqual([])
  expect(value(expB, 'sluice_config_generation')).toBe(0)
  expect(value(expB, 'sluice_inflight_requests')).toBe(0)
})

test('default process and Node metrics are in the same registry unless turned off', async () => {
  const withDefaults = open({ defaultMetrics: true })
  const exp = await scrape(withDefaults)
  for (const name of ['process_cpu_user_seconds_total', 'process_start_time_seconds', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_version_info', 'nodejs_gc_duration_seconds']) {
    expect([name, exp.types.has(name)]).toEqual([name, true])
  }
  expect(exp.types.has('sluice_http_requests_total')).toBe(true)
  // A second instance registers its own copies without "already registered" errors.
  const other = open({ defaultMetrics: true })
  expect((await scrape(other)).types.has('process_cpu_user_seconds_total')).toBe(true)

  const without = await scrape(open({ defaultMetrics: false }))
  expect(without.types.has('process_cpu_user_seconds_total')).toBe(false)
})

test('close() stops the event-loop-delay sampler and the GC observer the default metrics started', () => {
  const sampler = jest.spyOn(perfHooks, 'monitorEventLoopDelay')
  const disconnect = jest.spyOn(perfHooks.PerformanceObserver.prototype, 'disconnect')
  try {
    const m = createMetrics()
    expect(sampler).toHaveBeenCalledTimes(1)
    const histogram = sampler.mock.results[0].value as perfHooks.IntervalHistogram
    expect(disconnect).not.toHaveBeenCalled()
    m.close()
    expect(disconnect).toHaveBeenCalledTimes(1)
    expect(histogram.disable()).toBe(false) // false: it was already stopped
    m.close() // idempotent
    expect(disconnect).toHaveBeenCalledTimes(1)
    // The module is left as it was found.
    expect(perfHooks.monitorEventLoopDelay).toBe(sampler)
  } finally {
    sampler.mockRestore()
    disconnect.mockRestore()
  }
})

test('getMetricsAsJSON feeds AggregatorRegistry (cluster /metrics) for counters and histograms', async () => {
  const a = open({ buckets: [0.1, 1] })
  const b = open({ buckets: [0.1, 1] })
  a.route('r', 's').done('GET', 200, 'upstream', 0.05)
  b.route('r', 's').done('GET', 200, 'upstream', 0.5)
  b.route('r', 's').done('GET', 200, 'upstream', 0.5)
  const merged = AggregatorRegistry.aggregate([await a.registry.getMetricsAsJSON(), await b.registry.getMetricsAsJSON()])
  const exp = parse(await merged.metrics())
  expect(value(exp, 'sluice_http_requests_total', { route: 'r' })).toBe(3)
  expect(value(exp, 'sluice_http_request_duration_seconds_bucket', { route: 'r', le: '0.1' })).toBe(1)
  expect(value(exp, 'sluice_http_request_duration_seconds_bucket', { route: 'r', le: '1' })).toBe(3)
  expect(value(exp, 'sluice_http_request_duration_seconds_count', { route: 'r' })).toBe(3)
})
