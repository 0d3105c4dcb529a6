/**
 * Balancers: which instance of a service takes the next request.
 *
 * `pick` runs once per proxied request, so it allocates nothing: every
 * balancer walks the fixed instance list by index and keeps its state in
 * plain numbers or arrays sized once, at creation. The caller says which
 * instances may take the request (healthy, not drained, breaker closed,
 * holding the request's label) through `eligible`, which each pick calls at
 * most once per instance.
 *
 * The instance list is fixed for a balancer's life; when the set changes
 * (registry, reload) the caller creates a new balancer, which is cheap.
 */
import type { BalancerName } from '../config/types'

export interface Balanced {
  weight: number
  inflight: number
}

export interface Balancer<I extends Balanced> {
  /** The next instance among those `eligible` accepts, or undefined when none does. */
  pick (eligible: (instance: I) => boolean): I | undefined
}

export function createBalancer<I extends Balanced> (name: BalancerName, instances: readonly I[], random: () => number = Math.random): Balancer<I> {
  switch (name) {
    case 'round-robin': return roundRobin(instances)
    case 'weighted-round-robin': return smoothWeighted(instances)
    case 'random': return weightedRandom(instances, random)
    case 'least-connections': return leastConnections(instances)
    default: throw new Error(`unknown balancer "${name as string}"`)
  }
}

/** Each pick starts just after the last picked instance and takes the first eligible one. */
function roundRobin<I extends Balanced> (instances: readonly I[]): Balancer<I> {
  const n = instances.length
  let next = 0
  return {
    pick (eligible) {
      for (let k = 0, i = next; k < n; k++, i = i + 1 === n ? 0 : i + 1) {
        const instance = instances[i]
        if (eligible(instance)) {
          next = i + 1 === n ? 0 : i + 1
          return instance
        }
      }
      return undefined
    },
  }
}

/**
 * nginx's smooth weighted round-robin (ngx_http_upstream_get_peer): every
 * eligible instance's current weight grows by its weight, the largest is
 * picked and loses the total of the eligible weights. Over any run of
 * `sum(weights)` picks with a stable eligible set, each instance is picked
 * exactly `weight` times, spread out (3:1 gives a, a, b, a — not a, a, a, b).
 * Ineligible instances neither gain nor lose, as in nginx.
 */
function smoothWeighted<I extends Balanced> (instances: readonly I[]): Balancer<I> {
  const n = instances.length
  const current = new Float64Array(n)
  return {
    pick (eligible) {
      let best = -1
      let total = 0
      for (let i = 0; i < n; i++) {
        const instance = instances[i]
        if (!eligible(instance)) continue
        current[i] += instance.weight
        total += instance.weight
        if (best === -1 || current[i] > current[best]) best = i
      }
      if (best === -1) return undefined
      current[best] -= total
      return instances[best]
    },
  }
}

/**
 * Weight-proportional random: an eligible instance of weight w is picked with
 * probability w / (sum of eligible weights) — with the default weight of 1,
 * uniform. Scratch arrays sized once hold the eligible indexes and the
 * running sum of their weights, so `eligible` runs once per instance and
 * `random` once per pick.
 */
function weightedRandom<I extends Balanced> (instances: readonly I[], random: () => number): Balancer<I> {
  const n = instances.length
  const indexes = new Uint32Array(n)
  const cumulative = new Float64Array(n)
  return {
    pick (eligible) {
      let count = 0
      let total = 0
      for (let i = 0; i < n; i++) {
        const instance = instances[i]
        if (!eligible(instance)) continue
        total += instance.weight > 0 ? instance.weight : 0
        indexes[count] = i
        cumulative[count] = total
        count++
      }
      if (count === 0) return undefined
      // All eligible weights zero (the schema forbids it, the registry may not): uniform.
      if (total === 0) return instances[indexes[Math.min(count - 1, Math.floor(random() * count))]]
      const r = random() * total
      for (let k = 0; k < count; k++) {
        if (r < cumulative[k]) return instances[indexes[k]]
      }
      // random() returned 1 or float rounding pushed r to the total.
      return instances[indexes[count - 1]]
    },
  }
}

/**
 * Fewest in-flight requests among the eligible (weights are ignored). The
 * scan starts just after the last pick and only a strictly smaller count
 * displaces the candidate, so equally loaded instances take turns instead of
 * the first one taking every request while counts are level.
 */
function leastConnections<I extends Balanced> (instances: readonly I[]): Balancer<I> {
  const n = instances.length
  let next = 0
  return {
    pick (eligible) {
      let best = -1
      let fewest = Infinity
      for (let k = 0, i = next; k < n; k++, i = i + 1 === n ? 0 : i + 1) {
        const instance = instances[i]
        if (instance.inflight < fewest && eligible(instance)) {
          best = i
          fewest = instance.inflight
        }
      }
      if (best === -1) return undefined
      next = best + 1 === n ? 0 : best + 1
      return instances[best]
    },
  }
}
