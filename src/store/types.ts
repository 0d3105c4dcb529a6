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

export interface Store {
  /** Adds `by` to the counter at `key` atomically; a new key lives `ttlMs`. */
  incr (key: string, by: number, ttlMs: number): Promise<CounterResult>
  /** The counter's value, or 0 when the key is absent or expired. */
  get (key: string): Promise<number>
  close (): Promise<void>
}
