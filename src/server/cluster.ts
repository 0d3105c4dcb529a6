/**
 * `sluice start --workers N` (operations.md "Scale"): N worker processes on
 * one machine behave as one gateway.
 *
 *  - node:cluster shares the traffic port between the workers;
 *  - the primary holds the memory store and answers every worker over IPC
 *    (store/ipc.ts), so a rate limit counts all workers' requests;
 *  - the admin listener lives in the primary: /metrics merges the workers'
 *    registries (prom-client's AggregatorRegistry), /admin/services asks
 *    every worker, reloads and drains reach every worker;
 *  - a worker that dies is replaced (with a growing delay when it keeps dying
 *    right after starting); SIGTERM/SIGINT drain every worker, then exit 0.
 *
 * Primary and workers talk over the IPC channel cluster gives each worker,
 * which prom-client and the store also use: our messages carry `sluiceControl`.
 */
import cluster, { type Worker } from 'node:cluster'
import os from 'node:os'
import { AggregatorRegistry } from 'prom-client'
import { drain, redact, routesOf, servicesOf } from '../admin/target'
import type { AdminService, AdminTarget, DrainResult, ReloadResult } from '../admin/types'
import type { LoadedConfig } from '../config/types'
import { compileGeneration, createGateway, loadGatewayConfig, type Generation } from '../gateway'
import type { Logger } from '../observability/logger'
import { createMetrics } from '../observability/metrics'
import { createIpcStore, serveStore } from '../store/ipc'
import { createMemoryStore } from '../store/memory'
import { listenOrExplain, reloadTriggers, startAdmin, StartError, stopSignal, type AdminListener } from './common'
import type { StartOptions } from './single'

type Op =
  | { op: 'reload' }
  | { op: 'services' }
  | { op: 'drain', service: string, instance: string, drained: boolean }

type Control =
  | { sluiceControl: 'ready', host: string, port: number }
  | ({ sluiceControl: 'call', id: number } & Op)
  | { sluiceControl: 'reply', id: number, result: unknown }

function isControl (message: unknown): message is Control {
  return typeof message === 'object' && message !== null && typeof (message as { sluiceControl?: unknown }).sluiceControl === 'string'
}

/** `auto`: one worker per core the process may use. */
export function workerCount (value: string | number): number {
  return value === 'auto' ? os.availableParallelism() : Number(value)
}

/** How long the primary waits for a worker's answer to a control call. */
const CALL_TIMEOUT_MS = 15_000
/** A worker that dies within this long of starting is crash-looping: its replacement waits. */
const QUICK_DEATH_MS = 5_000
const MAX_RESPAWN_DELAY_MS = 30_000

export async function runPrimary ({ file, loaded, log, watch }: StartOptions, count: number): Promise<void> {
  const store = createMemoryStore()
  const aggregator = new AggregatorRegistry()
  let config = loaded
  let view = inspect(config)
  let generation = 1
  let stopping = false
  /**
   * Drains an operator asked for, replayed to workers that start later. Kept
   * by instance URL, as a reload keeps them: an instance's id is its place
   * in the file, which a reload may change.
   */
  const drains = new Map<string, { service: string, url: string, drained: boolean }>()
  const started = new Map<Worker, number>()
  const ready = new Set<Worker>()
  let nextId = 0
  const calls = new Map<number, (result: unknown) => void>()
  let respawnDelay = 0

  /** Settles once every first worker serves, or one of them died first. */
  let hasStarted = false
  let firstAddress: { host: string, port: number } | undefined
  let allReady: () => void = () => {}
  let failedStart: (err: Error) => void = () => {}
  const starting = new Promise<void>((resolve, reject) => { allReady = resolve; failedStart = reject })

  function fork (): void {
    const worker = cluster.fork({ SLUICE_GENERATION: String(generation) })
    started.set(worker, Date.now())
    const stopServing = serveStore(store, worker)
    worker.on('message', (message: unknown) => {
      if (!isControl(message)) return
      if (message.sluiceControl === 'ready') {
        ready.add(worker)
        for (const d of drains.values()) {
          const instance = view.services.get(d.service)?.instances.find(i => i.url === d.url)
          if (instance !== undefined) void call(worker, { op: 'drain', service: d.service, instance: instance.id, drained: d.drained })
        }
        if (ready.size === count) allReady()
        log.info({ event: 'worker', pid: worker.process.pid, state: 'ready', port: message.port }, 'worker serving')
        firstAddress ??= { host: message.host, port: message.port }
      } else if (message.sluiceControl === 'reply') {
        calls.get(message.id)?.(message.result)
      }
    })
    worker.once('exit', (code, signal) => {
      stopServing()
      ready.delete(worker)
      const lived = Date.now() - (started.get(worker) ?? 0)
      started.delete(worker)
      if (stopping) return
      if (!hasStarted) {
        failedStart(new StartError(`worker ${worker.process.pid ?? '?'} exited (code ${String(code)}${signal !== null ? `, ${signal}` : ''}) before it was serving`))
        return
      }
      respawnDelay = lived < QUICK_DEATH_MS ? Math.min(Math.max(respawnDelay * 2, 500), MAX_RESPAWN_DELAY_MS) : 0
      log.error({ event: 'worker', pid: worker.process.pid, state: 'exited', code, signal, respawn_in_ms: respawnDelay }, 'worker died; starting a replacement')
      setTimeout(() => { if (!stopping) fork() }, respawnDelay).unref()
    })
  }

  /** Asks one worker; undefined when it does not answer in time or is gone. */
  function call (worker: Worker, op: Op): Promise<unknown> {
    if (!worker.isConnected()) return Promise.resolve(undefined)
    const id = nextId++
    return new Promise((resolve) => {
      const timer = setTimeout(() => { calls.delete(id); resolve(undefined) }, CALL_TIMEOUT_MS)
      calls.set(id, (result) => { clearTimeout(timer); calls.delete(id); resolve(result) })
      worker.send({ sluiceControl: 'call', id, ...op } satisfies Control, (err: Error | null) => {
        if (err !== null) { clearTimeout(timer); calls.delete(id); resolve(undefined) }
      })
    })
  }

  const everyWorker = async (op: Op): Promise<unknown[]> =>
    (await Promise.all([...ready].map(w => call(w, op)))).filter(r => r !== undefined)

  /** Start-up failed: the workers are told to stop (they also stop when the primary's channel closes). */
  const abandon = async (err: unknown): Promise<never> => {
    stopping = true
    for (const worker of started.keys()) worker.process.kill('SIGTERM')
    await store.close()
    throw err
  }

  for (let i = 0; i < count; i++) fork()
  await starting.catch(abandon)
  hasStarted = true
  log.info({ event: 'listening', host: firstAddress?.host, port: firstAddress?.port, workers: count, routes: view.routes.length, config: loaded.file }, 'sluice is serving')

  async function reload (): Promise<ReloadResult> {
    const results = await everyWorker({ op: 'reload' }) as ReloadResult[]
    const failed = results.find((r): r is { ok: false, errors: string[] } => !r.ok)
    if (failed !== undefined || results.length === 0) {
      return failed ?? { ok: false, errors: ['no worker answered the reload'] }
    }
    generation = Math.max(...results.map(r => (r as { generation: number }).generation))
    try {
      config = loadGatewayConfig(file)
      view = inspect(config)
      await admin?.follow(config.config.admin)
    } catch (e) {
      // The workers took the file; it changed again since.
      log.warn({ event: 'reload', err: e }, 'the config changed again while the workers reloaded')
    }
    return { ok: true, generation }
  }

  const target: AdminTarget = {
    routes: () => routesOf(view),
    services: async () => mergeServices(await everyWorker({ op: 'services' }) as AdminService[][]),
    config: () => redact(config.config),
    reload,
    async setDrained (service, instance, drained) {
      const results = await everyWorker({ op: 'drain', service, instance, drained }) as DrainResult[]
      const url = view.services.get(service)?.instances.find(i => i.id === instance)?.url
      if (results[0] === 'ok' && url !== undefined) drains.set(`${service}\u0000${url}`, { service, url, drained })
      return results[0] ?? 'no-service'
    },
    ready: () => !stopping && ready.size > 0,
    metrics: async () => ({ contentType: aggregator.contentType, body: await aggregator.clusterMetrics() }),
  }
  let admin: AdminListener | undefined
  try {
    admin = await startAdmin(loaded.config.admin, target, log)
  } catch (e) {
    await abandon(e)
  }
  const triggers = reloadTriggers(file, watch, () => { void reload() })

  const signal = await stopSignal()
  stopping = true
  log.info({ event: 'shutdown', signal, workers: started.size }, 'shutting down: draining every worker')
  triggers.close()
  const exits = [...started.keys()].map(w => new Promise<void>((resolve) => {
    if (w.isDead()) { resolve(); return }
    w.once('exit', () => resolve())
    w.process.kill('SIGTERM')
  }))
  // Workers drain within shutdown_timeout_ms themselves; one that hangs past that is killed.
  const grace = setTimeout(() => { for (const w of started.keys()) w.process.kill('SIGKILL') }, config.config.server.shutdown_timeout_ms + 5000)
  await Promise.all(exits)
  clearTimeout(grace)
  await admin?.close()
  await store.close()
}

/** The config compiled only to be described (routes); its pools and timers are closed at once. */
function inspect (loaded: LoadedConfig): Generation {
  const gen = compileGeneration(loaded)
  for (const service of gen.services.values()) service.close()
  return gen
}

const BREAKER_ORDER = ['closed', 'half_open', 'open'] as const

/**
 * One view of every worker's services: in-flight counts add up; an instance
 * is as unhealthy, and a breaker as open, as the worst worker sees it.
 */
export function mergeServices (perWorker: AdminService[][]): AdminService[] {
  const [first, ...rest] = perWorker
  if (first === undefined) return []
  return first.map((service) => {
    const others = rest.map(w => w.find(s => s.name === service.name)).filter((s): s is AdminService => s !== undefined)
    const breakers = [service.breaker, ...others.map(s => s.breaker)]
    const breaker = breakers.includes(null) ? null : BREAKER_ORDER[Math.max(...breakers.map(b => BREAKER_ORDER.indexOf(b as typeof BREAKER_ORDER[number])))]
    return {
      ...service,
      breaker,
      instances: service.instances.map((instance) => {
        const same = others.map(s => s.instances.find(i => i.id === instance.id)).filter(i => i !== undefined)
        const all = [instance, ...same]
        const health = all.some(i => i.health === 'drained') ? 'drained' : all.some(i => i.health === 'unhealthy') ? 'unhealthy' : 'healthy'
        return { ...instance, health, drained: all.some(i => i.drained), inflight: all.reduce((n, i) => n + i.inflight, 0) }
      }),
    }
  })
}

/** One worker: a gateway on the shared port, the primary's store, control calls answered. */
export async function runWorker ({ file, loaded, log }: StartOptions): Promise<void> {
  const metrics = createMetrics()
  // prom-client answers the primary's scrape requests once an AggregatorRegistry exists in the worker.
  AggregatorRegistry.setRegistries([metrics.registry])
  void new AggregatorRegistry()
  const store = createIpcStore()
  const gateway = createGateway({
    config: loaded,
    logger: log,
    loadConfig: () => loadGatewayConfig(file),
    metrics,
    store,
    generation: Number(process.env.SLUICE_GENERATION ?? '1'),
  })
  const closeAll = async (): Promise<void> => {
    await gateway.close()
    await store.close()
    metrics.close()
  }
  const address = await listenOrExplain(gateway, loaded, closeAll)
  // Reloads come from the primary; a terminal's hang-up must not end a worker.
  const ignore = (): void => {}
  process.on('SIGHUP', ignore)
  const onMessage = (message: unknown): void => {
    if (!isControl(message) || message.sluiceControl !== 'call') return
    const reply = (result: unknown): void => { if (process.connected) process.send?.({ sluiceControl: 'reply', id: message.id, result } satisfies Control) }
    switch (message.op) {
      case 'reload': void gateway.reload().then(reply); break
      case 'services': reply(servicesOf(gateway.generation)); break
      case 'drain': reply(drain(gateway.generation, message.service, message.instance, message.drained)); break
    }
  }
  process.on('message', onMessage)
  process.send?.({ sluiceControl: 'ready', host: address.address, port: address.port } satisfies Control)
  // The primary going away ends the worker as a signal would.
  const orphaned = new Promise<string>((resolve) => process.once('disconnect', () => resolve('primary gone')))
  const why = await Promise.race([stopSignal(), orphaned])
  log.info({ event: 'shutdown', signal: why, pid: process.pid }, 'worker draining')
  process.off('message', onMessage)
  process.off('SIGHUP', ignore)
  await closeAll()
}
