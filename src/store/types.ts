/**
 * The shared store (pipes.md "The shared store"): small atomic operations
 * with a TTL on every key, so a memory and a Redis implementation are
 * interchangeable and several gateway processes can share one count.
 */
export interface CounterResult {
  /** The counter after the increment. */
  value: number
  /** Milliseconds until the key expires. */
  ttlMs: number
}

/** An in-process store answers at once: callers on the hot path may skip the promise. */
export interface LocalCounters {
  incr (key: string, by: number, ttlMs: number): CounterResult
  get (key: string): number
}

export interface Store {
  /** Present on in-process stores (memory): the same operations, synchronous. */
  readonly local?: LocalCounters
  /** Adds `by` to the counter at `key` atomically; a new key lives `ttlMs`. */
  incr (key: string, by: number, ttlMs: number): Promise<CounterResult>
  /** The counter's value, or 0 when the key is absent or expired. */
  get (key: string): Promise<number>
  close (): Promise<void>
}
