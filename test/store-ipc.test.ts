/**
 * The cluster-wide store: real child processes (test/fixtures/store-ipc/worker.ts,
 * run through tsx) play the workers and this process plays the primary that
 * holds the memory store. Nothing stands in for the IPC channel.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process'
import type { Worker as ClusterWorker } from 'node:cluster'
import { once } from 'node:events'
import { join } from 'node:path'
import { serveStore, type IpcChannel } from '../src/store/ipc'
import { createMemoryStore } from '../src/store/memory'
import type { Store } from '../src/store/types'
import type { Report, Script } from './fixtures/store-ipc/worker'

const root = join(__dirname, '..')
const fixture = join(__dirname, 'fixtures/store-ipc/worker.ts')
// tsx's CommonJS hook: about 100 ms per child, where `--import tsx` (the ESM
// loader, started on its own thread) takes about 250 ms.
const execArgv = ['-r', 'tsx/cjs']

// Checked by tsc (the alias is never used): the primary serves cluster
// workers as well as forked children, so both must fit IpcChannel.
type Fits<T extends IpcChannel> = T
type ServedChannel = Fits<ClusterWorker> | Fits<ChildProcess>

// A hung child must fail its test quickly, not after jest's 20 s.
jest.setTimeout(8000)

interface Worker {
  child: ChildProcess
  /** The child's report: the one line it prints when its steps are done. */
  reported: Promise<Report>
  /** Resolves when the child has exited and its report is read. */
  done: Promise<{ code: number | null, signal: NodeJS.Signals | null, report: Report }>
}

const opened: ChildProcess[] = []
const stores: Store[] = []

afterEach(async () => {
  for (const child of opened.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill()
  await Promise.all(stores.splice(0).map((store) => store.close()))
})

function startWorker (script: Script): Worker {
  const child = fork(fixture, [JSON.stringify(script)], {
    cwd: root,
    execArgv,
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  })
  return watch(child)
}

/**
 * Waits on 'exit' plus the end of stdout rather than on 'close': after the
 * parent's disconnect() Node never emits 'close' (nodejs/node#19433).
 */
function watch (child: ChildProcess): Worker {
  opened.push(child)
  let output = ''
  const stdout = child.stdout!.setEncoding('utf8')
  const reported = new Promise<Report>((resolve) => {
    stdout.on('data', (chunk: string) => {
      output += chunk
      if (output.endsWith('\n')) resolve(JSON.parse(output) as Report)
    })
  })
  const done = (async () => {
    const [[code, signal]] = await Promise.all([
      once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>,
      once(stdout, 'end'),
    ])
    return { code, signal, report: output === '' ? {} : await reported }
  })()
  return { child, reported, done }
}

function memoryStore (): Store {
  const store = createMemoryStore()
  stores.push(store)
  return store
}

/** Calls `fn` with each store request the child sends (after serveStore's listener if that came first). */
function onRequest (child: ChildProcess, fn: (request: { id: number, op: string }) => void): void {
  child.on('message', (message: { sluiceStore?: string, id: number, op: string } | null) => {
    if (message?.sluiceStore === 'req') fn(message)
  })
}

test('four workers incrementing one key concurrently get every value from 1 to 100 exactly once', async () => {
  const store = memoryStore()
  const workers = Array.from({ length: 4 }, () => startWorker({ steps: [{ burst: 'hits', times: 25 }] }))
  for (const { child } of workers) serveStore(store, child)

  const runs = await Promise.all(workers.map((worker) => worker.done))
  const values = runs.flatMap(({ code, report }) => {
    expect(code).toBe(0)
    const [burst] = report.results!
    if (!('values' in burst)) throw new Error(`burst failed: ${JSON.stringify(burst)}`)
    expect(burst.values).toHaveLength(25)
    return burst.values
  })
  expect(values.sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1))
  expect(store.local!.get('hits')).toBe(100)
})

test('a key expires after its ttl in the primary, as seen from the worker', async () => {
  const store = memoryStore()
  const worker = startWorker({
    steps: [{ incr: 'session', ttlMs: 200 }, { get: 'session' }, { sleepMs: 300 }, { get: 'session' }],
  })
  serveStore(store, worker.child)

  const { code, report } = await worker.done
  expect(code).toBe(0)
  const [created, before, , after] = report.results!
  expect(created).toMatchObject({ value: 1 })
  expect((created as { ttlMs: number }).ttlMs).toBeGreaterThan(0)
  expect((created as { ttlMs: number }).ttlMs).toBeLessThanOrEqual(200)
  expect(before).toMatchObject({ value: 1 })
  expect(after).toMatchObject({ value: 0 })
  expect(store.local!.get('session')).toBe(0)
})

test('a store without a local face is awaited, and its failure reaches the worker as a rejection', async () => {
  const memory = memoryStore()
  // Like a Redis store: asynchronous only, and failing for one key.
  const remote: Store = {
    incr: async (key, by, ttlMs) => {
      if (key === 'broken') throw new Error('connection refused')
      return await memory.incr(key, by, ttlMs)
    },
    get: async (key) => await memory.get(key),
    close: async () => {},
  }
  const worker = startWorker({ steps: [{ incr: 'ok', by: 3 }, { incr: 'broken' }, { get: 'ok' }] })
  serveStore(remote, worker.child)

  const { code, report } = await worker.done
  expect(code).toBe(0)
  expect(report.results).toEqual([
    expect.objectContaining({ value: 3 }),
    expect.objectContaining({ error: "the primary's store failed: connection refused" }),
    expect.objectContaining({ value: 3 }),
  ])
})

test('a worker whose primary stops answering gets a rejection after timeoutMs, not a hang', async () => {
  const store = memoryStore()
  const worker = startWorker({ timeoutMs: 300, steps: [{ incr: 'a' }, { incr: 'a' }] })
  const stop = serveStore(store, worker.child)
  // Registered after serveStore's listener: the first request is answered, then serving stops.
  onRequest(worker.child, stop)

  const { code, report } = await worker.done
  expect(code).toBe(0)
  const [answered, unanswered] = report.results!
  expect(answered).toMatchObject({ value: 1 })
  expect(unanswered).toMatchObject({ error: "the primary's store did not answer within 300 ms (incr)" })
  expect(unanswered.elapsedMs).toBeGreaterThanOrEqual(290)
  expect(unanswered.elapsedMs).toBeLessThan(1000)
  expect(store.local!.get('a')).toBe(1)
})

test('pending requests reject as soon as the channel disconnects', async () => {
  const worker = startWorker({ timeoutMs: 5000, steps: [{ incr: 'a' }] })
  onRequest(worker.child, () => { worker.child.disconnect() })

  const { code, report } = await worker.done
  expect(code).toBe(0)
  const [lost] = report.results!
  expect(lost).toMatchObject({ error: 'the IPC channel to the primary is disconnected' })
  expect(lost.elapsedMs).toBeLessThan(1000)
})

test('close() lets the worker exit on its own; an open store keeps it running', async () => {
  const store = memoryStore()
  const closing = startWorker({ steps: [{ incr: 'a' }] })
  const holding = startWorker({ steps: [{ incr: 'a' }], keepOpen: true })
  serveStore(store, closing.child)
  serveStore(store, holding.child)

  const closed = await closing.done
  expect(closed).toMatchObject({ code: 0, signal: null })

  // The contrast has no event to wait for: the open store's listener holds the
  // channel (and so the process) open, which a short wait after its work shows.
  await holding.reported
  await new Promise((resolve) => setTimeout(resolve, 300))
  expect(holding.child.exitCode).toBeNull()
  holding.child.kill()
  expect(await holding.done).toMatchObject({ signal: 'SIGTERM' })
})

test('both sides ignore foreign messages on the shared channel', async () => {
  const store = memoryStore()
  const worker = startWorker({ foreign: true, steps: [{ incr: 'shared' }] })
  // Registered before serveStore's listener, so these reach the worker while
  // its request is pending, ahead of the real answer.
  onRequest(worker.child, ({ id }) => {
    worker.child.send({ type: 'prom-client:getMetricsReq', requestId: id })
    // Untagged, with the pending request's id: taken as ours it would resolve 999.
    worker.child.send({ id, value: 999, ttlMs: 1 })
    // A request sent the wrong way: a worker answers nothing.
    worker.child.send({ sluiceStore: 'req', id, op: 'get', key: 'shared' })
    worker.child.send('res')
    worker.child.send(42)
  })
  serveStore(store, worker.child)

  const { code, report } = await worker.done
  expect(code).toBe(0)
  // The worker's lookalike incr (by 5) was not served, and the primary answered
  // nothing but the one real request.
  expect(report.results).toEqual([expect.objectContaining({ value: 1 })])
  expect(report.answersSeen).toBe(1)
  expect(store.local!.get('shared')).toBe(1)
})

test('createIpcStore outside a forked process says it has no parent channel', async () => {
  const { done } = watch(spawn(process.execPath, [...execArgv, fixture, JSON.stringify({ steps: [] })], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
  }))

  const { code, report } = await done
  expect(code).toBe(0)
  expect(report.createError).toMatch(/no IPC channel to a parent/)
})
