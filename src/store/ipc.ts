/**
 * One store for a whole node:cluster: the primary holds the memory store and
 * answers its workers over the IPC channel it already has to each of them, so
 * a rate limit counts every worker's requests, not each worker's share.
 *
 *   primary:  const store = createMemoryStore()
 *             cluster.on('fork', (worker) => { serveStore(store, worker) })
 *   worker:   createGateway({ config, store: createIpcStore() })
 *
 * The primary's memory store runs each request to completion as it arrives,
 * so `incr` stays atomic across workers without any locking. The channel is shared with other users
 * (prom-client's cluster aggregation, the gateway's control messages): every
 * message of ours carries a `sluiceStore` tag, and anything without it is left
 * alone by both sides.
 */
import type { CounterResult, LocalCounters, Store } from './types'

/** A store operation, worker → primary. */
export interface StoreRequest {
  sluiceStore: 'req'
  id: number
  op: 'incr' | 'get'
  key: string
  by?: number
  ttlMs?: number
}

/** Its answer, primary → worker: `value` (and `ttlMs` for `incr`), or `error`. */
export type StoreResponse =
  | { sluiceStore: 'res', id: number, value: number, ttlMs?: number }
  | { sluiceStore: 'res', id: number, error: string }

/**
 * What serveStore and createIpcStore need from a channel: the shape shared by
 * a cluster.Worker, a ChildProcess and (in the child) `process`.
 */
export interface IpcChannel {
  send (message: StoreRequest | StoreResponse, callback?: (error: Error | null) => void): boolean
  on (event: 'message', listener: (message: unknown) => void): unknown
  on (event: 'disconnect', listener: () => void): unknown
  off (event: 'message', listener: (message: unknown) => void): unknown
  off (event: 'disconnect', listener: () => void): unknown
  /** ChildProcess and process have it; a cluster.Worker has isConnected() instead. */
  readonly connected?: boolean
}

// ---------------------------------------------------------------- primary side

/**
 * Answers the store requests that arrive on `channel` (one worker) from
 * `store`. Call it once per worker; the returned function stops answering.
 */
export function serveStore (store: Store, channel: IpcChannel): () => void {
  const local = store.local
  const onMessage = (message: unknown): void => {
    if (!isRequest(message)) return
    if (local !== undefined) {
      // The memory store answers at once: no promise per request.
      reply(channel, answerLocally(local, message))
      return
    }
    answer(store, message).then((response) => { reply(channel, response) })
  }
  channel.on('message', onMessage)
  return () => { channel.off('message', onMessage) }
}

function isRequest (message: unknown): message is StoreRequest {
  return typeof message === 'object' && message !== null &&
    (message as { sluiceStore?: unknown }).sluiceStore === 'req' &&
    typeof (message as { id?: unknown }).id === 'number'
}

/** Why a request tagged as ours cannot be run; undefined when it can. */
function malformed (request: StoreRequest): string | undefined {
  if (typeof request.key !== 'string') return 'malformed store request: key must be a string'
  if (request.op === 'get') return undefined
  if (request.op !== 'incr') return `malformed store request: unknown op ${String(request.op)}`
  if (!Number.isFinite(request.by) || !Number.isFinite(request.ttlMs)) {
    return 'malformed store request: incr needs finite by and ttlMs'
  }
  return undefined
}

function answerLocally (local: LocalCounters, request: StoreRequest): StoreResponse {
  const problem = malformed(request)
  if (problem !== undefined) return { sluiceStore: 'res', id: request.id, error: problem }
  try {
    return request.op === 'get'
      ? { sluiceStore: 'res', id: request.id, value: local.get(request.key) }
      : counted(request.id, local.incr(request.key, request.by as number, request.ttlMs as number))
  } catch (error) {
    return failed(request.id, error)
  }
}

async function answer (store: Store, request: StoreRequest): Promise<StoreResponse> {
  const problem = malformed(request)
  if (problem !== undefined) return { sluiceStore: 'res', id: request.id, error: problem }
  try {
    return request.op === 'get'
      ? { sluiceStore: 'res', id: request.id, value: await store.get(request.key) }
      : counted(request.id, await store.incr(request.key, request.by as number, request.ttlMs as number))
  } catch (error) {
    return failed(request.id, error)
  }
}

function counted (id: number, result: CounterResult): StoreResponse {
  return { sluiceStore: 'res', id, value: result.value, ttlMs: result.ttlMs }
}

function failed (id: number, error: unknown): StoreResponse {
  return { sluiceStore: 'res', id, error: error instanceof Error ? error.message : String(error) }
}

function reply (channel: IpcChannel, response: StoreResponse): void {
  if (channel.connected === false) return
  // With a callback, send() on a closed channel reports to it instead of
  // emitting 'error' (which would throw with no listener): a worker that is
  // gone has nobody left to read the answer.
  channel.send(response, ignoreSendError)
}

function ignoreSendError (): void {}

// ----------------------------------------------------------------- worker side

export interface IpcStoreOptions {
  /** How long a request waits for the primary before it rejects (default 1000). */
  timeoutMs?: number
  /** The channel to the primary; by default this process's own (`process.send`). */
  channel?: IpcChannel
}

interface Pending {
  op: 'incr' | 'get'
  /** On performance.now()'s clock, which wall-clock adjustments do not move. */
  deadline: number
  resolve: (value: CounterResult | number) => void
  reject: (error: Error) => void
}

// Ids are unique per process, not per store, so two IPC stores sharing one
// channel never take each other's answers.
let lastId = 0

/**
 * A Store whose counters live in the primary (see serveStore). It has no
 * `local` face: every operation is a round trip. A request the primary does
 * not answer within `timeoutMs` rejects, like an unreachable Redis would, and
 * the rate-limit pipe's store-failure handling decides what the request gets.
 */
export function createIpcStore (options: IpcStoreOptions = {}): Store {
  const channel = options.channel ?? parentChannel()
  const timeoutMs = options.timeoutMs ?? 1000
  // Insertion order is deadline order (one timeout for all), so the sweep
  // stops at the first entry still in time.
  const pending = new Map<number, Pending>()
  let timer: NodeJS.Timeout | undefined
  let closedBecause: string | undefined

  // One timer for all requests, armed for the oldest deadline. It is not
  // cleared when an answer arrives: firing with nothing due just re-arms it.
  function arm (): void {
    if (timer !== undefined) return
    const oldest = pending.values().next()
    if (oldest.done === true) return
    timer = setTimeout(sweep, Math.max(0, oldest.value.deadline - performance.now()))
    // A worker that has nothing else to do should not stay up for a deadline.
    timer.unref()
  }

  function sweep (): void {
    timer = undefined
    const now = performance.now()
    for (const [id, entry] of pending) {
      if (entry.deadline > now) break
      pending.delete(id)
      entry.reject(new Error(`the primary's store did not answer within ${timeoutMs} ms (${entry.op})`))
    }
    arm()
  }

  function rejectAll (reason: string): void {
    for (const entry of pending.values()) entry.reject(new Error(reason))
    pending.clear()
  }

  const onMessage = (message: unknown): void => {
    if (!isResponse(message)) return
    const entry = pending.get(message.id)
    // Not ours after all (another store's id), or already timed out.
    if (entry === undefined) return
    pending.delete(message.id)
    if ('error' in message) {
      entry.reject(new Error(`the primary's store failed: ${message.error}`))
    } else {
      entry.resolve(entry.op === 'get' ? message.value : { value: message.value, ttlMs: message.ttlMs ?? 0 })
    }
  }

  const onDisconnect = (): void => {
    closedBecause = 'the IPC channel to the primary is disconnected'
    rejectAll(closedBecause)
  }

  // send() only fails once the channel is closed (our messages always
  // serialise), and then every pending request is lost with it: one shared
  // callback instead of a closure per request.
  const onSent = (error: Error | null): void => {
    if (error !== null) rejectAll(`the IPC channel to the primary failed: ${error.message}`)
  }

  function request (op: 'incr' | 'get', key: string, by?: number, ttlMs?: number): Promise<CounterResult | number> {
    if (closedBecause !== undefined) return Promise.reject(new Error(closedBecause))
    const id = ++lastId
    return new Promise((resolve, reject) => {
      pending.set(id, { op, deadline: performance.now() + timeoutMs, resolve, reject })
      arm()
      channel.send({ sluiceStore: 'req', id, op, key, by, ttlMs }, onSent)
    })
  }

  channel.on('message', onMessage)
  channel.on('disconnect', onDisconnect)

  return {
    // onMessage resolves an incr with a CounterResult and a get with a number.
    incr (key, by, ttlMs) { return request('incr', key, by, ttlMs) as Promise<CounterResult> },
    get (key) { return request('get', key) as Promise<number> },
    async close () {
      if (closedBecause === undefined) closedBecause = 'the IPC store is closed'
      // Without our listeners the channel no longer holds the process open
      // (Node refs it while 'message'/'disconnect' listeners exist).
      channel.off('message', onMessage)
      channel.off('disconnect', onDisconnect)
      if (timer !== undefined) clearTimeout(timer)
      timer = undefined
      rejectAll(closedBecause)
    },
  }
}

function isResponse (message: unknown): message is StoreResponse {
  return typeof message === 'object' && message !== null &&
    (message as { sluiceStore?: unknown }).sluiceStore === 'res' &&
    typeof (message as { id?: unknown }).id === 'number'
}

/** This process's channel to its parent: present in a cluster worker or a forked child. */
function parentChannel (): IpcChannel {
  if (typeof process.send !== 'function' || !process.connected) {
    throw new Error('createIpcStore: this process has no IPC channel to a parent; ' +
      'start it with cluster.fork() or child_process.fork(), or pass options.channel')
  }
  return process as IpcChannel
}
