#!/usr/bin/env node
'use strict'
// `npm run bench`: CPU per request of Sluice as a ratio to the floor, measured
// the way ../shared/PERFORMANCE.md says — the proxy alone on one core, load
// generator and upstream on another, a fixed request count per run, targets
// alternated within one run (floor, plain, plain-1000, full, floor, …), median
// over rounds. It reports; it never fails because of a budget. Exit 1 means
// the harness itself could not run.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { parseArgs } = require('node:util')

const { SCENARIOS, buildScenario, generateRoutes } = require('./scenarios.js')
const { BODY: UPSTREAM_BODY } = require('./upstream.js')
const { runLoad } = require('./load.js')
const {
  which, allowedCpus, pinSelf, clockTicks, treeCpuTicks, cpuStatTicks, freePorts,
  firstMeaningfulLine, describeExit, Children, waitForHttp,
} = require('./procs.js')

const ROOT = path.resolve(__dirname, '..')
// Overridable to bench another build or checkout against the same floor.
const SLUICE_BIN = path.resolve(process.env.BENCH_SLUICE_BIN || path.join(ROOT, 'bin', 'sluice.js'))
const TARGETS = ['floor', ...SCENARIOS]
const START_TIMEOUT_MS = 15000
const RESULTS_FILE = path.join(os.tmpdir(), 'sluice-bench-last.json')

// [numerator, denominator, budget] on CPU µs/request.
const BUDGETS = [
  ['plain', 'floor', 1.10],
  ['plain-1000', 'plain', 1.05],
  ['full', 'floor', 1.35],
]

const HELP = `usage: node bench/run.js [options]      (npm run bench -- [options])

  --only LIST        targets to run, comma-separated (default: ${TARGETS.join(',')})
  --requests N       measured requests per target per round (env BENCH_REQUESTS, default 20000)
  --connections N    concurrent connections (env BENCH_CONNECTIONS, default 50)
  --rounds N         rounds; each runs every target once, alternating (env BENCH_ROUNDS, default 2)
  --warmup N         requests per target before the first round (env BENCH_WARMUP, default 10000)
  --tool NAME        autocannon | wrk (env BENCH_TOOL, default autocannon)
  -h, --help

  env BENCH_SLUICE_BIN   the CLI started as \`<bin> start -c FILE --no-watch\` (default bin/sluice.js)

Prints a table and the budget lines; writes JSON to ${RESULTS_FILE}.`

class UsageError extends Error {}

function parseOptions (argv) {
  let values
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        only: { type: 'string' },
        requests: { type: 'string' },
        connections: { type: 'string' },
        rounds: { type: 'string' },
        warmup: { type: 'string' },
        tool: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }))
  } catch (err) {
    throw new UsageError(err.message) // unknown or malformed flag
  }
  if (values.help) return null
  const int = (name, env, dflt, min) => {
    const raw = values[name] ?? process.env[env] ?? String(dflt)
    const n = Number(raw)
    if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} (${env}) must be an integer ≥ ${min}, got "${raw}"`)
    return n
  }
  const opts = {
    only: values.only ? values.only.split(',').map((s) => s.trim()).filter(Boolean) : TARGETS,
    requests: int('requests', 'BENCH_REQUESTS', 20000, 1),
    connections: int('connections', 'BENCH_CONNECTIONS', 50, 1),
    rounds: int('rounds', 'BENCH_ROUNDS', 2, 1),
    // Measured on the floor: the first ~10,000 requests of a fresh process
    // cost 1.5–2.5× the steady state (JIT tiers, heap growth); after that
    // rounds differ by machine noise only.
    warmup: int('warmup', 'BENCH_WARMUP', 10000, 0),
    tool: values.tool ?? process.env.BENCH_TOOL ?? 'autocannon',
  }
  const unknown = opts.only.filter((t) => !TARGETS.includes(t))
  if (unknown.length) throw new UsageError(`unknown target(s) ${unknown.join(', ')}; known: ${TARGETS.join(', ')}`)
  // Keep the file's order whatever the flag's order: alternation is floor first.
  opts.only = TARGETS.filter((t) => opts.only.includes(t))
  if (!['autocannon', 'wrk'].includes(opts.tool)) throw new UsageError(`--tool must be autocannon or wrk, got "${opts.tool}"`)
  if (opts.tool === 'wrk' && !which('wrk')) throw new UsageError('BENCH_TOOL=wrk but wrk is not on PATH (autocannon is always available)')
  // autocannon spreads `amount` over the connections and refuses fewer requests than connections.
  for (const [name, n] of [['requests', opts.requests], ['warmup', opts.warmup]]) {
    if (n > 0 && n < opts.connections) throw new UsageError(`--${name} (${n}) must be at least --connections (${opts.connections})`)
  }
  return opts
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const fmt = (x, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a')
const fmtInt = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a')

/**
 * The answer a target gave to one request before any load: the bench only
 * measures a target that proxies to the upstream. A 404 or a gateway-made
 * 200 would be measured happily — and would mean nothing.
 */
function checkAnswer (res) {
  if (res.status < 200 || res.status > 299) {
    return `answered ${res.status} instead of 2xx: ${res.body.slice(0, 200).replace(/\s+/g, ' ')}`
  }
  if (res.body !== UPSTREAM_BODY.toString()) return `answered ${res.status} but not with the upstream's body`
  return null
}

async function main (argv, ctx) {
  const opts = parseOptions(argv)
  if (!opts) {
    console.log(HELP)
    return 0
  }
  const { children } = ctx
  const log = (...a) => console.log(...a)
  const warn = (...a) => console.error(...a)

  // Pinning: proxy on the first allowed CPU, this process (autocannon), the
  // upstream and wrk on the second. Without it the numbers still come out, but
  // the proxy shares its core, so say so.
  const cpus = allowedCpus()
  let pin = null
  if (!which('taskset')) {
    warn('note: taskset not found; nothing is pinned, CPU/request is still valid but noisier')
  } else if (cpus.length < 2) {
    warn(`note: only ${cpus.length} CPU available; nothing is pinned, proxy and load share a core`)
  } else {
    try {
      pinSelf(cpus[1])
      pin = { proxy: cpus[0], load: cpus[1] }
    } catch (err) {
      warn(`note: could not pin the runner (${err.message}); nothing is pinned`)
    }
  }
  const CLK_TCK = clockTicks()
  const proxyCpuLabel = pin ? `cpu${pin.proxy}` : 'cpu'

  const plainPath = generateRoutes(10).path // the floor gets the same request bytes as `plain`
  log(`Sluice bench — ${fmtInt(opts.requests)} requests × ${opts.rounds} round(s) per target, ` +
    `${opts.connections} connections, warm-up ${fmtInt(opts.warmup)}, ${opts.tool}`)
  log(pin
    ? `pinned: proxy → CPU ${pin.proxy}; runner, load generator, upstream → CPU ${pin.load}`
    : 'not pinned')
  log(`node ${process.version}, ${os.cpus()[0]?.model ?? 'unknown CPU'} ×${os.cpus().length}, CLK_TCK ${CLK_TCK}\n`)

  // Upstream: a child on the load core, so its CPU never lands on the proxy's.
  const up = children.start('upstream', process.execPath, [path.join(__dirname, 'upstream.js'), '0'], { cpu: pin && pin.load })
  let upstreamPort
  try {
    upstreamPort = Number((await children.waitForLine(up, /^listening (\d+)$/, 10000))[1])
  } catch (err) {
    throw new Error(`the bench upstream did not start: ${err.message}\n${up.stderr}`)
  }
  log(`${'upstream'.padEnd(11)} 127.0.0.1:${upstreamPort} (pid ${up.pid})`)

  // Start every target before measuring any, so rounds can alternate them.
  const live = []
  const skipped = {}
  const printedStderr = new Map() // stderr text → target that printed it
  for (const name of opts.only) {
    const target = name === 'floor'
      ? await startFloor(ctx, { pin, upstreamPort, path: plainPath })
      : await startSluice(ctx, name, { pin, upstreamPort })
    if (target.skipped) {
      skipped[name] = target.skipped
      // The one-line reason as the brief's contract (`full: skipped (…)`), then
      // the child's stderr for whoever has to fix it.
      warn(`${name}: skipped (${target.skipped})`)
      const stderr = (target.stderr || '').trim()
      if (stderr === target.skipped) {
        // The one line above was all it said.
      } else if (printedStderr.has(stderr)) {
        warn(`    (same stderr as ${printedStderr.get(stderr)})`)
      } else if (stderr) {
        printedStderr.set(stderr, name)
        warn(stderr.split('\n').slice(-20).map((l) => `    ${l.slice(0, 300)}`).join('\n'))
      }
      if (target.dir) warn(`    config kept in ${target.dir}`)
      continue
    }
    log(`${name.padEnd(11)} ${target.url} (pid ${target.pid}${target.routeCount ? `, ${target.routeCount} routes` : ''})`)
    target.rounds = []
    live.push(target)
  }
  if (skipped.floor) throw new Error('the floor did not start, so nothing can be compared')
  if (live.length === 0) throw new Error('no target started')

  // One run against one target: CPU of the proxy's process tree around it.
  const measure = async (target, requests) => {
    if (target.dead) return null
    const ac = new AbortController()
    target.handle.exited.then((e) => ac.abort(`${target.name} exited (${describeExit(e)})`))
    const before = treeCpuTicks(target.pid)
    const coreBefore = cpuStatTicks(proxyCpuLabel)
    const r = await runLoad(opts.tool, {
      url: target.url,
      headers: target.headers,
      requests,
      connections: opts.connections,
      // Generous: ~500 req/s would already be 10× slower than Express Gateway.
      watchdogMs: 30000 + requests * 2,
      signal: ac.signal,
    })
    // Let the proxy finish closing the load generator's connections: that
    // work is part of serving the run.
    await sleep(200)
    const after = treeCpuTicks(target.pid)
    const coreAfter = cpuStatTicks(proxyCpuLabel)
    const cpuUs = (after.ticks - before.ticks) * 1e6 / CLK_TCK
    if (target.handle.exit) target.dead = `exited (${describeExit(target.handle.exit)})`
    return {
      ...r,
      cpuTicks: after.ticks - before.ticks,
      processes: after.processes,
      cpuUsPerReq: r.completed ? cpuUs / r.completed : NaN,
      // Share of the proxy's core it used: well below 100% means the load
      // generator, not the proxy, set the pace (req/s and latency then say
      // little; CPU/request still holds).
      busy: r.durationS > 0 ? cpuUs / (r.durationS * 1e6) : NaN,
      steal: coreBefore && coreAfter && coreAfter.total > coreBefore.total
        ? (coreAfter.steal - coreBefore.steal) / (coreAfter.total - coreBefore.total)
        : NaN,
    }
  }
  const problems = (r) => {
    const p = []
    if (r.aborted) p.push(`aborted: ${r.aborted}`)
    if (r.errors) p.push(`${r.errors} errors${r.firstError ? ` (first: ${r.firstError})` : ''}`)
    if (r.non2xx) p.push(`${r.non2xx} non-2xx ${JSON.stringify(r.statusCodes)}`)
    return p
  }

  if (opts.warmup > 0) {
    log(`\nwarm-up: ${fmtInt(opts.warmup)} requests per target`)
    for (const target of live) {
      const r = await measure(target, opts.warmup)
      const p = r ? problems(r) : [target.dead]
      if (p.length) warn(`!! ${target.name} warm-up: ${p.join('; ')}`)
    }
  }

  log('')
  for (let round = 1; round <= opts.rounds; round++) {
    for (const target of live) {
      if (target.dead) {
        warn(`!! ${target.name}: ${target.dead}; not measured in round ${round}`)
        continue
      }
      const r = await measure(target, opts.requests)
      target.rounds.push(r)
      log(`round ${round}/${opts.rounds}  ${target.name.padEnd(11)} ${fmt(r.cpuUsPerReq, 1).padStart(7)} µs/req  ` +
        `${fmtInt(r.rps).padStart(7)} req/s  p50 ${fmt(r.p50)} ms  p99 ${fmt(r.p99)} ms  busy ${fmt(r.busy * 100, 0)}%  steal ${fmt(r.steal * 100, 0)}%`)
      const p = problems(r)
      if (p.length) warn(`!! ${target.name} round ${round}: ${p.join('; ')}`)
      if (!r.aborted && r.cpuTicks < 100) warn(`   (${r.cpuTicks} CPU ticks only: ±${fmt(100 / Math.max(1, r.cpuTicks), 1)}% resolution; use more requests)`)
    }
  }

  return report({ opts, pin, CLK_TCK, live, skipped, upstreamPort })
}

async function startFloor ({ children }, { pin, upstreamPort, path: urlPath }) {
  const handle = children.start('floor', process.execPath,
    [path.join(__dirname, 'floor.js'), '0', `http://127.0.0.1:${upstreamPort}`], { cpu: pin && pin.proxy })
  try {
    const port = Number((await children.waitForLine(handle, /^listening (\d+)$/, START_TIMEOUT_MS))[1])
    const url = `http://127.0.0.1:${port}${urlPath}`
    const bad = checkAnswer(await waitForHttp(handle, url, {}, START_TIMEOUT_MS))
    if (bad) throw new Error(bad)
    return { name: 'floor', handle, pid: handle.pid, url, headers: {} }
  } catch (err) {
    handle.child.kill('SIGKILL')
    return { skipped: startFailure(handle, err), stderr: handle.stderr }
  }
}

/**
 * One Sluice process per scenario, from a generated routes.yaml in its own
 * temp dir. Ready when the traffic port answers the URL under load; a start
 * that fails, hangs or answers wrongly makes the scenario "skipped", never
 * the run failed.
 */
async function startSluice ({ children, tmpRoot }, name, { pin, upstreamPort }) {
  const [serverPort, adminPort] = await freePorts(2)
  const scenario = buildScenario(name, { server: serverPort, admin: adminPort, upstream: upstreamPort })
  const dir = path.join(tmpRoot, name)
  fs.mkdirSync(dir, { recursive: true })
  const configFile = path.join(dir, 'routes.yaml')
  fs.writeFileSync(configFile, scenario.yaml)
  // stdout (access logs, once they exist) goes to a file, as in production:
  // writing it is part of the gateway's cost, and a pipe nobody reads would
  // block it.
  const stdoutFd = fs.openSync(path.join(dir, 'stdout.log'), 'w')
  const handle = children.start(name, process.execPath, [SLUICE_BIN, 'start', '-c', configFile, '--no-watch'],
    { cpu: pin && pin.proxy, stdout: stdoutFd, cwd: ROOT })
  fs.closeSync(stdoutFd) // the child has its own copy

  const url = `http://127.0.0.1:${serverPort}${scenario.path}`
  let failure = null
  try {
    // 503 is how a gateway says "listening, config not loaded yet": ask again.
    const res = await waitForHttp(handle, url, scenario.headers, START_TIMEOUT_MS, { retryOn: [503] })
    failure = checkAnswer(res)
  } catch (err) {
    failure = startFailure(handle, err)
  }
  if (failure) {
    handle.child.kill('SIGKILL')
    await handle.exited
    return { skipped: failure, stderr: handle.stderr, dir }
  }
  return {
    name,
    handle,
    pid: handle.pid,
    url,
    headers: scenario.headers,
    routeCount: scenario.routeCount,
    dir,
  }
}

/**
 * Why a child did not become ready, in one line. A child that exited says why
 * on stderr (operations.md: "one clear line"); one still running timed out,
 * and its stderr (printed in full by the caller) may be mere warnings.
 */
function startFailure (handle, err) {
  return (handle.exit && firstMeaningfulLine(handle.stderr)) || err.message
}

function report ({ opts, pin, CLK_TCK, live, skipped, upstreamPort }) {
  const summary = {}
  for (const t of live) {
    const rs = t.rounds
    const sum = (k) => rs.reduce((a, r) => a + (r[k] || 0), 0)
    // An aborted run's CPU covers an unknown share of its requests: left out
    // of the medians (and reported below as invalid).
    const valid = rs.filter((r) => !r.aborted && r.completed > 0)
    summary[t.name] = {
      url: t.url,
      pid: t.pid,
      routes: t.routeCount ?? null,
      rounds: rs.map(({ statusCodes, ...r }) => ({ ...r, statusCodes })),
      median: valid.length
        ? Object.fromEntries(['cpuUsPerReq', 'rps', 'p50', 'p99', 'busy', 'steal'].map((k) => [k, median(valid.map((r) => r[k]))]))
        : null,
      errors: sum('errors'),
      non2xx: sum('non2xx'),
      aborted: rs.filter((r) => r.aborted).map((r) => r.aborted),
      dead: t.dead || null,
    }
  }
  const cpuOf = (name) => summary[name]?.median?.cpuUsPerReq
  const floor = summary.floor?.median
  for (const s of Object.values(summary)) {
    s.ratioToFloor = floor && s.median
      ? { cpu: s.median.cpuUsPerReq / floor.cpuUsPerReq, p50: s.median.p50 / floor.p50, p99: s.median.p99 / floor.p99 }
      : null
  }

  // The table.
  const rows = [['target', 'req/s', 'CPU µs/req', 'p50 ms', 'p99 ms', 'errors', 'CPU ratio to floor', 'p50/p99 vs floor', 'proxy busy']]
  for (const name of TARGETS) {
    const s = summary[name]
    if (!s) {
      if (skipped[name]) rows.push([name, 'skipped', '', '', '', '', '', '', ''])
      continue
    }
    const m = s.median || {}
    const bad = s.errors || s.non2xx || s.aborted.length || s.dead
    rows.push([
      name,
      fmtInt(m.rps),
      fmt(m.cpuUsPerReq, 1),
      fmt(m.p50),
      fmt(m.p99),
      bad ? `!! ${s.errors} err, ${s.non2xx} non-2xx${s.aborted.length ? ', aborted' : ''}` : '0',
      s.ratioToFloor ? fmt(s.ratioToFloor.cpu) : 'n/a',
      s.ratioToFloor ? `${fmt(s.ratioToFloor.p50)}/${fmt(s.ratioToFloor.p99)}` : 'n/a',
      Number.isFinite(m.busy) ? `${fmt(m.busy * 100, 0)}%` : 'n/a',
    ])
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
  const line = (r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ')
  console.log(`\nmedian of ${opts.rounds} round(s), ${fmtInt(opts.requests)} requests each:`)
  console.log(line(rows[0]))
  console.log(widths.map((w) => '-'.repeat(w)).join('-|-'))
  for (const r of rows.slice(1)) console.log(line(r))

  // The budget lines (CPU per request; reported, never enforced here).
  console.log('')
  const budgets = BUDGETS.map(([a, b, budget]) => {
    const value = cpuOf(a) / cpuOf(b)
    const missing = [a, b].filter((n) => !Number.isFinite(cpuOf(n)))
    // Judged on the printed value, so "1.05 (budget ≤ 1.05)" never reads as
    // over; run-to-run noise is far above the third decimal anyway.
    const over = Number.isFinite(value) && Number(value.toFixed(2)) > budget
    const note = missing.length
      ? ` — ${missing.map((n) => `${n} ${skipped[n] ? 'skipped' : summary[n] ? 'has no valid run' : 'not measured'}`).join(', ')}`
      : over ? ' — OVER BUDGET' : ''
    console.log(`${a} / ${b} = ${fmt(value)} (budget ≤ ${budget.toFixed(2)})${note}`)
    return { name: `${a} / ${b}`, value: Number.isFinite(value) ? value : null, budget, over }
  })

  // Loud, last, where a reader of the output looks: numbers from runs with
  // errors describe a different workload (fast failures, retries) than the one
  // being compared.
  const invalid = Object.entries(summary).filter(([, s]) => s.errors || s.non2xx || s.aborted.length || s.dead)
  if (invalid.length) {
    console.error('\n!!!!!!!! THIS BENCH HAD ERRORS — the numbers of these targets are not valid:')
    for (const [name, s] of invalid) {
      console.error(`!!!!!!!!   ${name}: ${s.errors} errors, ${s.non2xx} non-2xx` +
        `${s.aborted.length ? `, aborted (${s.aborted[0]})` : ''}${s.dead ? `, ${s.dead}` : ''}`)
    }
  }
  if (Object.keys(skipped).length) {
    console.error(`\nskipped: ${Object.entries(skipped).map(([n, why]) => `${n} (${why})`).join('; ')}`)
  }

  const json = {
    date: new Date().toISOString(),
    node: process.version,
    cpu: os.cpus()[0]?.model ?? null,
    cpus: os.cpus().length,
    tool: opts.tool,
    requests: opts.requests,
    connections: opts.connections,
    rounds: opts.rounds,
    warmup: opts.warmup,
    pinned: pin,
    clkTck: CLK_TCK,
    upstreamPort,
    targets: summary,
    skipped,
    budgets,
    valid: invalid.length === 0,
  }
  fs.writeFileSync(RESULTS_FILE, JSON.stringify(json, null, 2) + '\n')
  console.log(`\nresults: ${RESULTS_FILE}`)
  return { code: 0, keepTmp: Object.keys(skipped).length > 0 }
}

// Process lifetime: every child dies with the runner, however it ends.
if (require.main === module) {
  const children = new Children()
  const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-bench-'))
  let keepTmp = false
  let finishing = false
  const finish = async (code) => {
    if (finishing) return
    finishing = true
    await children.stopAll()
    // Generated configs are kept when a scenario was skipped: its error points into them.
    if (!keepTmp) fs.rmSync(tmpRoot, { recursive: true, force: true })
    process.exit(code)
  }
  process.on('exit', () => children.killAllSync())
  process.on('SIGINT', () => { console.error('\ninterrupted; stopping children'); finish(130) })
  process.on('SIGTERM', () => finish(143))

  main(process.argv.slice(2), { children, tmpRoot }).then(
    (res) => {
      if (typeof res === 'object') keepTmp = res.keepTmp
      finish(typeof res === 'object' ? res.code : res)
    },
    (err) => {
      if (err instanceof UsageError) console.error(`bench: ${err.message}\n\n${HELP}`)
      else console.error(`bench: harness failed: ${err && err.stack ? err.stack : err}`)
      finish(1)
    },
  )
}

module.exports = { parseOptions, median }
