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

  const local = {
    incr (key: string, by: number, ttlMs: number): CounterResult {
      const t = now()
      let entry = entries.get(key)
      if (entry === undefined || entry.expiresAt <= t) {
        entry = { value: 0, expiresAt: t + ttlMs }
        entries.set(key, entry)
      }
      entry.value += by
      return { value: entry.value, ttlMs: entry.expiresAt - t }
    },
    get (key: string): number {
      const entry = entries.get(key)
      return entry === undefined || entry.expiresAt <= now() ? 0 : entry.value
    },
  }

  return {
    local,
    async incr (key, by, ttlMs) { return local.incr(key, by, ttlMs) },
    async get (key) { return local.get(key) },
    async close () {
      clearInterval(sweep)
      entries.clear()
    },
  }
}
