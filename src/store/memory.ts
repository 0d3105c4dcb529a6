/**
 * The embedded store: counters in a Map with expiry times. Expired keys are
 * treated as absent when read and swept periodically, so memory follows
 * the live key count.
 */
import type { CounterResult, Store } from './types'

interface Entry { value: number, expiresAt: number }

export function createMemoryStore (options: { sweepMs?: number, now?: () => number } = {}): Store {
  const entries = new Map<string, Entry>()
  const now = options.now ?? Date.now
  const sweep = setInterval(() => {
    const t = now()
    for (const [key, entry] of entries) if (entry.expiresAt <= t) entries.delete(key)
  }, options.sweepMs ?? 10_000)
  sweep.unref()

  return {
    async incr (key, by, ttlMs): Promise<CounterResult> {
      const t = now()
      let entry = entries.get(key)
      if (entry === undefined || entry.expiresAt <= t) {
        entry = { value: 0, expiresAt: t + ttlMs }
        entries.set(key, entry)
      }
      entry.value += by
      return { value: entry.value, ttlMs: entry.expiresAt - t }
    },
    async get (key) {
      const entry = entries.get(key)
      return entry === undefined || entry.expiresAt <= now() ? 0 : entry.value
    },
    async close () {
      clearInterval(sweep)
      entries.clear()
    },
  }
}
