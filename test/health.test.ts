/** Active health checks against real servers on port 0 that fail on command. */
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import net, { type AddressInfo, type Socket } from 'node:net'
import { createHealthChecker, type HealthChecker, type HealthState, type HealthTarget } from '../src/upstream/health'
import type { HealthCheckConfig } from '../src/config/types'
import { closedPort, startUpstream, type Upstream } from './support/upstream'

const config = (overrides: Partial<HealthCheckConfig> = {}): HealthCheckConfig => ({
  path: '/healthz', interval_ms: 20, timeout_ms: 500, healthy_threshold: 2, unhealthy_threshold: 3, ...overrides,
})

/** How the server answers its n-th check (1-based). */
type Answer = (n: number, req: IncomingMessage, res: ServerResponse) => void

interface CheckServer {
  upstream: Upstream
  /** Checks received so far. */
  readonly count: number
  answer: Answer
  /** Resolves once the server has received `n` checks in all. */
  reached (n: number): Promise<void>
  /** Server-side sockets ever opened, to see them close. */
  sockets: Set<Socket>
}

const status = (code: number): Answer => (_n, _req, res) => { res.writeHead(code, { 'content-length': '2' }); res.end('ok') }
const hang: Answer = () => {}

async function checkServer (answer: Answer): Promise<CheckServer> {
  let count = 0
  const waiters: Array<{ n: number, resolve: () => void }> = []
  const sockets = new Set<Socket>()
  const self: CheckServer = {
    upstream: await startUpstream((req, res) => {
      count++
      self.answer(count, req, res)
      for (const w of waiters.filter(w => count >= w.n)) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve()
      }
    }),
    get count () { return count },
    answer,
    reached: (n) => new Promise(resolve => { if (count >= n) resolve(); else waiters.push({ n, resolve }) }),
    sockets,
  }
  self.upstream.server.on('connection', (s: Socket) => sockets.add(s))
  return self
}

interface Change { id: string, state: HealthState, reason: string, checks: number }

/** onChange calls, each with the server's check count at that moment, and a way to await the next one. */
function changes (count: () => number = () => 0): { list: Change[], next (): Promise<Change>, listener: (t: HealthTarget, s: HealthState, r: string) => void } {
  const list: Change[] = []
  let waiting: ((c: Change) => void) | undefined
  return {
    list,
    next: () => new Promise(resolve => { waiting = resolve }),
    listener: (target, state, reason) => {
      const change = { id: target.id, state, reason, checks: count() }
      list.push(change)
      const w = waiting
      waiting = undefined
      w?.(change)
    },
  }
}

/** Resolves once every socket has closed; rejects after a second, well before the servers' own 5 s keep-alive timeout would close them. */
function allClosed (sockets: Set<Socket>): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined
  const closed = Promise.all([...sockets].map(s => s.destroyed ? undefined : new Promise(resolve => s.once('close', resolve))))
  const late = new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new Error('sockets still open after 1 s')), 1000) })
  return Promise.race([closed, late]).finally(() => clearTimeout(timer))
}

let checker: HealthChecker | undefined
const opened: CheckServer[] = []

afterEach(async () => {
  checker?.stop()
  checker = undefined
  await Promise.all(opened.splice(0).map(s => s.upstream.close()))
})

async function server (answer: Answer): Promise<CheckServer> {
  const s = await checkServer(answer)
  opened.push(s)
  return s
}

test('targets start healthy and a healthy target causes no onChange', async () => {
  const up = await server(status(200))
  const seen = changes()
  checker = createHealthChecker(config(), [{ id: 'a', url: up.upstream.url }], seen.listener)
  expect(checker.state('a')).toBe('healthy')
  const timers = (): number => process.getActiveResourcesInfo().filter(r => r === 'Timeout').length
  const before = timers()
  checker.start()
  expect(timers()).toBe(before) // its timers are unref'd: checks never keep the process alive
  await up.reached(5)
  expect(checker.state('a')).toBe('healthy')
  expect(seen.list).toEqual([])
  expect(up.upstream.received[0]).toMatchObject({ method: 'GET', url: '/healthz' })
  expect(up.upstream.received[0].headers['user-agent']).toBe('sluice-health-check')
})

test('a target answering 500 turns unhealthy after exactly unhealthy_threshold checks, and healthy after healthy_threshold successes', async () => {
  let failFrom = Infinity
  let recoverFrom = Infinity
  const up = await server((n, req, res) => status(n >= recoverFrom ? 200 : n >= failFrom ? 500 : 200)(n, req, res))
  const seen = changes(() => up.count)
  checker = createHealthChecker(config({ unhealthy_threshold: 3, healthy_threshold: 2 }), [{ id: 'a', url: up.upstream.url }], seen.listener)
  checker.start()
  await up.reached(2)
  failFrom = up.count + 1

  const down = await seen.next()
  expect(down).toMatchObject({ id: 'a', state: 'unhealthy', checks: failFrom - 1 + 3 })
  expect(down.reason).toMatch(/HTTP 500/)
  expect(checker.state('a')).toBe('unhealthy')

  recoverFrom = up.count + 1
  const up2 = await seen.next()
  expect(up2).toMatchObject({ id: 'a', state: 'healthy', checks: recoverFrom - 1 + 2 })
  expect(up2.reason).toMatch(/HTTP 200/)
  expect(checker.state('a')).toBe('healthy')

  // Staying healthy says nothing more.
  await up.reached(up.count + 4)
  expect(seen.list.map(c => c.state)).toEqual(['unhealthy', 'healthy'])
})

test('only consecutive results count: a success resets the failures, a failure resets the successes', async () => {
  // 500 500 200 500 500 200 | 500 500 500 → down at check 9 | 200 500 200 200 → up at check 13
  const script = [500, 500, 200, 500, 500, 200, 500, 500, 500, 200, 500, 200, 200]
  const up = await server((n, req, res) => status(script[n - 1] ?? 200)(n, req, res))
  const seen = changes(() => up.count)
  checker = createHealthChecker(config({ unhealthy_threshold: 3, healthy_threshold: 2 }), [{ id: 'a', url: up.upstream.url }], seen.listener)
  checker.start()
  expect(await seen.next()).toMatchObject({ state: 'unhealthy', checks: 9 })
  expect(await seen.next()).toMatchObject({ state: 'healthy', checks: 13 })
  await up.reached(16)
  expect(seen.list).toHaveLength(2)
})

test('3xx counts as a success, 4xx as a failure', async () => {
  const redirect = await server((_n, _req, res) => { res.writeHead(302, { location: '/elsewhere', 'content-length': '0' }); res.end() })
  const missing = await server(status(404))
  const seen = changes()
  checker = createHealthChecker(config({ unhealthy_threshold: 2 }), [
    { id: 'redirect', url: redirect.upstream.url },
    { id: 'missing', url: missing.upstream.url },
  ], seen.listener)
  checker.start()
  expect(await seen.next()).toMatchObject({ id: 'missing', state: 'unhealthy', reason: expect.stringMatching(/HTTP 404/) })
  await redirect.reached(4)
  expect(checker.state('redirect')).toBe('healthy')
  // The redirect is not followed.
  expect(redirect.upstream.received.every(r => r.url === '/healthz')).toBe(true)
})

test('a hanging health endpoint counts as a failure after timeout_ms, and the hung check is destroyed', async () => {
  const up = await server(hang)
  const seen = changes()
  checker = createHealthChecker(config({ timeout_ms: 80, unhealthy_threshold: 1 }), [{ id: 'a', url: up.upstream.url }], seen.listener)
  checker.start()
  await up.reached(1)
  const arrived = performance.now()
  const firstSockets = [...up.sockets]
  const down = await seen.next()
  expect(performance.now() - arrived).toBeGreaterThanOrEqual(60)
  expect(down).toMatchObject({ state: 'unhealthy', reason: expect.stringMatching(/no answer within 80 ms/) })
  await allClosed(new Set(firstSockets))
})

test('a refused connection counts as a failure', async () => {
  const port = await closedPort()
  const seen = changes()
  checker = createHealthChecker(config({ unhealthy_threshold: 2 }), [{ id: 'a', url: `http://127.0.0.1:${port}` }], seen.listener)
  checker.start()
  expect(await seen.next()).toMatchObject({ id: 'a', state: 'unhealthy', reason: expect.stringMatching(/ECONNREFUSED/) })
})

test('a server that goes away turns unhealthy, and healthy again once it is back on its port', async () => {
  const up = await server(status(200))
  const seen = changes()
  const target = { id: 'a', url: up.upstream.url }
  checker = createHealthChecker(config({ unhealthy_threshold: 2, healthy_threshold: 2 }), [target], seen.listener)
  checker.start()
  await up.reached(2)
  await up.upstream.close()
  const down = await seen.next()
  expect(down).toMatchObject({ state: 'unhealthy' })
  // Refused, or reset when a pooled socket was reused as the server closed.
  expect(down.reason).toMatch(/ECONNREFUSED|ECONNRESET|socket hang up/)

  let hits = 0
  const back = http.createServer((_req, res) => { hits++; res.end('ok') })
  await new Promise<void>(resolve => back.listen(up.upstream.port, '127.0.0.1', resolve))
  try {
    expect(await seen.next()).toMatchObject({ state: 'healthy', reason: expect.stringMatching(/HTTP 200/) })
    expect(hits).toBe(2)
  } finally {
    checker.stop()
    back.closeAllConnections()
    await new Promise(resolve => back.close(resolve))
  }
})

test('a pooled connection the server drops as it is reused is retried once on a fresh one, not counted as a failure', async () => {
  // Answers the first request of each connection and drops the connection at the second, as a
  // server closing an idle keep-alive socket at the moment it is reused would.
  let answered = 0
  let dropped = 0
  const sockets = new Set<Socket>()
  const raw = net.createServer((socket) => {
    sockets.add(socket)
    let requests = 0
    socket.on('data', () => {
      if (++requests === 1) {
        answered++
        socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok')
      } else {
        dropped++
        socket.destroy()
      }
    })
  })
  await new Promise<void>(resolve => raw.listen(0, '127.0.0.1', resolve))
  const seen = changes()
  checker = createHealthChecker(config({ unhealthy_threshold: 1 }), [{ id: 'a', url: `http://127.0.0.1:${(raw.address() as AddressInfo).port}` }], seen.listener)
  try {
    checker.start()
    await new Promise<void>(resolve => raw.on('connection', () => { if (answered >= 4) resolve() }))
    expect(dropped).toBeGreaterThanOrEqual(3)
    expect(seen.list).toEqual([])
    expect(checker.state('a')).toBe('healthy')
  } finally {
    checker.stop()
    for (const socket of sockets) socket.destroy()
    await new Promise(resolve => raw.close(resolve))
  }
})

test('a slow check delays the next one instead of overlapping it', async () => {
  let inflight = 0
  let most = 0
  const starts: number[] = []
  const up = await server((_n, _req, res) => {
    inflight++
    most = Math.max(most, inflight)
    starts.push(performance.now())
    setTimeout(() => { inflight--; res.end('ok') }, 60)
  })
  checker = createHealthChecker(config({ interval_ms: 20, timeout_ms: 1000 }), [{ id: 'a', url: up.upstream.url }], () => {})
  checker.start()
  await up.reached(4)
  expect(most).toBe(1)
  for (let i = 1; i < starts.length; i++) expect(starts[i] - starts[i - 1]).toBeGreaterThanOrEqual(55)
})

test('fast checks keep to interval_ms, each target on its own', async () => {
  const a = await server(status(200))
  const b = await server(hang)
  checker = createHealthChecker(config({ interval_ms: 30, timeout_ms: 5000 }), [
    { id: 'a', url: a.upstream.url },
    { id: 'b', url: b.upstream.url },
  ], () => {})
  const started = performance.now()
  checker.start()
  await a.reached(5)
  // First check at once, then one per interval: four intervals, not less; b's hung check holds nothing up.
  expect(performance.now() - started).toBeGreaterThanOrEqual(4 * 30 - 5)
  expect(b.count).toBe(1)
})

test('stop() destroys the in-flight check, frees the pooled sockets and nothing fires afterwards', async () => {
  const ok = await server(status(200))
  const hung = await server(hang)
  // The hung target's pool is the caller's, so only destroying the check itself can free its socket.
  const callersAgent = new http.Agent({ keepAlive: true })
  const seen = changes()
  const interval = 200
  checker = createHealthChecker(config({ interval_ms: interval, timeout_ms: 5000, unhealthy_threshold: 1 }), [
    { id: 'ok', url: ok.upstream.url },
    { id: 'hung', url: hung.upstream.url, agent: callersAgent },
  ], seen.listener)
  try {
    checker.start()
    await Promise.all([ok.reached(1), hung.reached(1)])
    // Time for ok's answer to reach the checker, so its socket is idle in the pool; well before the next check.
    await new Promise(resolve => setTimeout(resolve, interval / 4))
    expect([...ok.sockets, ...hung.sockets].map(s => s.destroyed)).toEqual([false, false])
    checker.stop()
    const counts = [ok.count, hung.count]
    // Closed by the checker, not by the servers: the hung check's connection and the pooled one.
    await Promise.all([allClosed(ok.sockets), allClosed(hung.sockets)])
    await new Promise(resolve => setTimeout(resolve, interval * 1.5)) // past the next check's time: nothing may happen
    expect([ok.count, hung.count]).toEqual(counts)
    expect(seen.list).toEqual([])
    await Promise.all(opened.splice(0).map(s => s.upstream.close()))
    await new Promise(resolve => setImmediate(resolve))
    // Nothing else in this file holds a socket by now: any left would be the checker's.
    expect(process.getActiveResourcesInfo().filter(r => r === 'TCPSocketWrap')).toEqual([])
  } finally {
    callersAgent.destroy()
  }
})

test('start() again after stop() resumes, keeping the states', async () => {
  const up = await server(status(500))
  const seen = changes()
  checker = createHealthChecker(config({ unhealthy_threshold: 1, healthy_threshold: 1 }), [{ id: 'a', url: up.upstream.url }], seen.listener)
  checker.start()
  checker.start() // no second round of timers
  await seen.next()
  checker.stop()
  expect(checker.state('a')).toBe('unhealthy')
  up.answer = status(200)
  const before = up.count
  checker.start()
  expect(await seen.next()).toMatchObject({ state: 'healthy' })
  expect(up.count).toBe(before + 1)
})

test('a given agent is used for the checks', async () => {
  const up = await server(status(200))
  const agent = new http.Agent({ keepAlive: true })
  const createConnection = jest.spyOn(agent, 'createConnection')
  try {
    checker = createHealthChecker(config(), [{ id: 'a', url: up.upstream.url, agent }], () => {})
    checker.start()
    await up.reached(3)
    expect(createConnection).toHaveBeenCalledTimes(1) // kept alive across checks
    checker.stop()
    // The agent belongs to the caller: stop() leaves its pool alone.
    expect(Object.keys(agent.freeSockets).length + Object.keys(agent.sockets).length).toBeGreaterThan(0)
  } finally {
    agent.destroy()
  }
})

test('a listener that throws neither stops the checks nor crashes the process', async () => {
  let flip = false
  const up = await server((n, req, res) => status(flip ? 200 : 500)(n, req, res))
  const warnings: unknown[] = []
  const emitWarning = jest.spyOn(process, 'emitWarning').mockImplementation((w: unknown) => { warnings.push(w) })
  const calls: HealthState[] = []
  try {
    checker = createHealthChecker(config({ unhealthy_threshold: 1, healthy_threshold: 1 }), [{ id: 'a', url: up.upstream.url }], (_t, state) => {
      calls.push(state)
      flip = true
      throw new Error('listener broke')
    })
    checker.start()
    await up.reached(4)
    expect(calls).toEqual(['unhealthy', 'healthy'])
    expect(checker.state('a')).toBe('healthy')
    expect(warnings.map(w => (w as Error).message)).toEqual(['listener broke', 'listener broke'])
  } finally {
    emitWarning.mockRestore()
  }
})

test('an unknown id reads as healthy', () => {
  checker = createHealthChecker(config(), [], () => {})
  expect(checker.state('nope')).toBe('healthy')
})
