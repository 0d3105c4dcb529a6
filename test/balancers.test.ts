/** Balancers: which instance takes the next request, skipping those the caller rules out. */
import { createBalancer, type Balancer } from '../src/upstream/balancers'
import type { BalancerName } from '../src/config/types'

interface Node { name: string, weight: number, inflight: number }

const node = (name: string, weight = 1, inflight = 0): Node => ({ name, weight, inflight })
const any = (): boolean => true
const picks = (balancer: Balancer<Node>, count: number, eligible: (n: Node) => boolean = any): string[] =>
  Array.from({ length: count }, () => balancer.pick(eligible)?.name ?? '-')
const tally = (names: string[]): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const n of names) out[n] = (out[n] ?? 0) + 1
  return out
}

describe('weighted-round-robin', () => {
  test('weights 3 and 1 give exactly 30 and 10 of 40, three and one in every four consecutive picks', () => {
    const balancer = createBalancer('weighted-round-robin', [node('a', 3), node('b', 1)])
    const order = picks(balancer, 40)
    expect(tally(order)).toEqual({ a: 30, b: 10 })
    for (let i = 0; i + 4 <= order.length; i++) {
      expect(tally(order.slice(i, i + 4))).toEqual({ a: 3, b: 1 })
    }
  })

  test('picks are interleaved smoothly, as nginx orders them', () => {
    expect(picks(createBalancer('weighted-round-robin', [node('a', 3), node('b', 1)]), 4)).toEqual(['a', 'a', 'b', 'a'])
    // nginx's own example for weights 5, 1, 1 (ngx_http_upstream_round_robin.c).
    expect(picks(createBalancer('weighted-round-robin', [node('a', 5), node('b', 1), node('c', 1)]), 7))
      .toEqual(['a', 'a', 'b', 'a', 'c', 'a', 'a'])
  })

  test('an ineligible instance is skipped and the others keep their ratio', () => {
    const balancer = createBalancer('weighted-round-robin', [node('a', 2), node('b', 5), node('c', 1)])
    const order = picks(balancer, 30, n => n.name !== 'b')
    expect(tally(order)).toEqual({ a: 20, c: 10 })
  })
})

describe('round-robin', () => {
  test('rotates through the instances in order', () => {
    expect(picks(createBalancer('round-robin', [node('a'), node('b'), node('c')]), 7))
      .toEqual(['a', 'b', 'c', 'a', 'b', 'c', 'a'])
  })

  test('skips an ineligible instance, each pick starting after the last picked', () => {
    const balancer = createBalancer('round-robin', [node('a'), node('b'), node('c'), node('d')])
    expect(picks(balancer, 1)).toEqual(['a'])
    expect(picks(balancer, 3, n => n.name !== 'b')).toEqual(['c', 'd', 'a'])
    expect(picks(balancer, 1, n => n.name === 'd')).toEqual(['d'])
    // The rotation resumes after d, not where it would have been.
    expect(picks(balancer, 2)).toEqual(['a', 'b'])
  })

  test('weights do not matter', () => {
    expect(tally(picks(createBalancer('round-robin', [node('a', 9), node('b', 1)]), 10))).toEqual({ a: 5, b: 5 })
  })
})

describe('least-connections', () => {
  test('picks the instance with the fewest in-flight requests as the counts change', () => {
    const [a, b, c] = [node('a', 1, 3), node('b', 1, 1), node('c', 1, 2)]
    const balancer = createBalancer('least-connections', [a, b, c])
    expect(balancer.pick(any)).toBe(b)
    b.inflight = 5
    expect(balancer.pick(any)).toBe(c)
    c.inflight = 7
    expect(balancer.pick(any)).toBe(a)
    a.inflight = 0
    expect(balancer.pick(n => n !== a)).toBe(b)
  })

  test('equally loaded instances take turns rather than the first taking every request', () => {
    const balancer = createBalancer('least-connections', [node('a'), node('b'), node('c')])
    expect(picks(balancer, 6)).toEqual(['a', 'b', 'c', 'a', 'b', 'c'])
  })

  test('ties among the least loaded only rotate among those', () => {
    const balancer = createBalancer('least-connections', [node('a', 1, 1), node('b', 1, 0), node('c', 1, 4), node('d', 1, 0)])
    expect(picks(balancer, 5)).toEqual(['b', 'd', 'b', 'd', 'b'])
  })

  test('a request being counted in flight moves the next one elsewhere', () => {
    const instances = [node('a'), node('b')]
    const balancer = createBalancer('least-connections', instances)
    const order: string[] = []
    for (let i = 0; i < 4; i++) {
      const picked = balancer.pick(any)!
      picked.inflight++ // held, as a proxied request would be
      order.push(picked.name)
    }
    expect(order).toEqual(['a', 'b', 'a', 'b'])
    expect(instances.map(n => n.inflight)).toEqual([2, 2])
  })
})

describe('random', () => {
  test('picks in proportion to weight along the injected random sequence', () => {
    // weights 1, 1, 2 split [0, 1) into [0, .25) a, [.25, .5) b, [.5, 1) c
    const sequence = [0, 0.2499, 0.25, 0.4999, 0.5, 0.99, 1]
    let i = 0
    const balancer = createBalancer('random', [node('a', 1), node('b', 1), node('c', 2)], () => sequence[i++])
    expect(picks(balancer, sequence.length)).toEqual(['a', 'a', 'b', 'b', 'c', 'c', 'c'])
  })

  test('only eligible instances share the range', () => {
    const sequence = [0.3, 0.34, 0.9]
    let i = 0
    const balancer = createBalancer('random', [node('a', 1), node('b', 5), node('c', 2)], () => sequence[i++])
    // without b: a = [0, 1/3), c = [1/3, 1)
    expect(picks(balancer, 3, n => n.name !== 'b')).toEqual(['a', 'c', 'c'])
  })

  test('draws one random number per pick', () => {
    const random = jest.fn(() => 0.5)
    const balancer = createBalancer('random', [node('a'), node('b')], random)
    picks(balancer, 3)
    expect(random).toHaveBeenCalledTimes(3)
  })

  test('defaults to Math.random and stays within the eligible set', () => {
    const balancer = createBalancer('random', [node('a'), node('b'), node('c')])
    const order = picks(balancer, 200, n => n.name !== 'a')
    expect(order).not.toContain('a')
    expect(order).toContain('b')
    expect(order).toContain('c')
  })
})

describe('every balancer', () => {
  const names: BalancerName[] = ['round-robin', 'weighted-round-robin', 'random', 'least-connections']

  test.each(names)('%s returns undefined when no instance is eligible, or there is none', (name) => {
    expect(createBalancer(name, [node('a'), node('b')]).pick(() => false)).toBeUndefined()
    expect(createBalancer<Node>(name, []).pick(any)).toBeUndefined()
  })

  test.each(names)('%s asks about each instance at most once per pick', (name) => {
    const instances = [node('a', 2), node('b', 1), node('c', 3)]
    const balancer = createBalancer(name, instances, () => 0.7)
    for (let round = 0; round < 5; round++) {
      const eligible = jest.fn((n: Node) => n.name !== 'b')
      const picked = balancer.pick(eligible)
      expect(picked?.name).not.toBe('b')
      const asked = eligible.mock.calls.map(([n]) => n.name)
      expect(new Set(asked).size).toBe(asked.length)
    }
  })

  test('an unknown name is refused', () => {
    expect(() => createBalancer('fastest' as BalancerName, [node('a')])).toThrow(/unknown balancer "fastest"/)
  })
})
