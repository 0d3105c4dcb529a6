/** The per-service deadline queue behind `timeout_ms`: order, removal, re-arming. */
import { performance } from 'node:perf_hooks'
import { DeadlineQueue, type DeadlineEntry } from '../src/upstream/deadlines'

const entry = (name: string): DeadlineEntry & { name: string } =>
  ({ name, deadline: 0, prevDeadline: undefined, nextDeadline: undefined, queued: false })

test('entries expire in arrival order, each no earlier than its own deadline', async () => {
  const expired: Array<[string, number]> = []
  const start = performance.now()
  const queue = new DeadlineQueue<ReturnType<typeof entry>>(40, (e) => expired.push([e.name, performance.now() - start]))
  queue.add(entry('a'))
  await new Promise(resolve => setTimeout(resolve, 20))
  queue.add(entry('b'))
  await new Promise(resolve => setTimeout(resolve, 80))
  expect(expired.map(([n]) => n)).toEqual(['a', 'b'])
  expect(expired[0][1]).toBeGreaterThanOrEqual(39)
  expect(expired[1][1]).toBeGreaterThanOrEqual(59)
  queue.close()
})

test('a removed entry never expires, from the head, the middle or the tail', async () => {
  const expired: string[] = []
  const queue = new DeadlineQueue<ReturnType<typeof entry>>(20, (e) => expired.push(e.name))
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map(entry)
  for (const e of [a, b, c, d]) queue.add(e)
  queue.remove(a); queue.remove(c); queue.remove(d); queue.remove(d)
  await new Promise(resolve => setTimeout(resolve, 50))
  expect(expired).toEqual(['b'])
  queue.close()
})

test('a queue that emptied and refilled arms its timer again', async () => {
  const expired: string[] = []
  const queue = new DeadlineQueue<ReturnType<typeof entry>>(15, (e) => expired.push(e.name))
  const a = entry('a')
  queue.add(a)
  queue.remove(a)
  await new Promise(resolve => setTimeout(resolve, 30))
  queue.add(entry('b'))
  await new Promise(resolve => setTimeout(resolve, 40))
  expect(expired).toEqual(['b'])
  queue.close()
})
