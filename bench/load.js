'use strict'
// Drives a fixed number of requests at one URL and reports what the client
// saw. Two engines with the same result shape: autocannon (always installed,
// runs in this process) and wrk (when installed and asked for).
//
// Result: { completed, durationS, rps, p50, p99 (ms), non2xx, errors,
//           timeouts, statusCodes, firstError, aborted }
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')

/** Nearest-rank percentile of an ascending array. */
function percentile (sorted, q) {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]
}

/**
 * `signal` aborts the run (the proxy died); `watchdogMs` bounds it, because
 * with `amount` autocannon keeps reconnecting to a dead server forever.
 */
function runAutocannon ({ url, headers, requests, connections, watchdogMs, signal }) {
  const autocannon = require('autocannon')
  return new Promise((resolve, reject) => {
    // autocannon's own latency histogram has 1 ms buckets and its duration is
    // rounded up to its next 1 s sample tick; both are too coarse for a
    // 5 ms p50 or a 3 s run, so latency and wall time are recorded here from
    // its per-response event (responseTime is hrtime-based, in ms).
    const latencies = new Float64Array(requests + connections)
    let n = 0
    let lastAt = 0n
    let firstError = null
    let aborted = null
    const startedAt = process.hrtime.bigint()

    const instance = autocannon({
      url,
      headers,
      amount: requests,
      connections,
      timeout: 10,
      // Only makes autocannon notice the end sooner (it checks on this tick).
      sampleInt: 100,
    }, (err, result) => {
      clearTimeout(watchdog)
      if (signal) signal.removeEventListener('abort', onAbort)
      if (err) return reject(err)
      const sorted = latencies.slice(0, n).sort()
      const durationS = Number((lastAt || process.hrtime.bigint()) - startedAt) / 1e9
      resolve({
        completed: n,
        durationS,
        rps: n / durationS,
        p50: percentile(sorted, 0.5),
        p99: percentile(sorted, 0.99),
        non2xx: result.non2xx,
        errors: result.errors, // includes timeouts
        timeouts: result.timeouts,
        statusCodes: Object.fromEntries(Object.entries(result.statusCodeStats).map(([k, v]) => [k, v.count])),
        firstError,
        aborted,
      })
    })
    instance.on('response', (client, statusCode, resBytes, responseTime) => {
      if (n < latencies.length) latencies[n] = responseTime
      n++
      lastAt = process.hrtime.bigint()
    })
    instance.on('reqError', (err) => {
      if (!firstError) firstError = err.code || err.message
    })

    const stop = (why) => {
      if (!aborted) aborted = why
      instance.stop()
    }
    const watchdog = setTimeout(() => stop(`did not finish within ${Math.round(watchdogMs / 1000)} s`), watchdogMs)
    const onAbort = () => stop(String(signal.reason || 'aborted'))
    if (signal) signal.addEventListener('abort', onAbort, { once: true })
  })
}

// wrk runs for a duration, not a request count. This script makes it count:
// the thread stops its event loop after N responses and says so on stdout;
// the runner then sends SIGINT, which wakes wrk's main thread from its
// sleep(duration) to print the summary (see wrk.c main()). Responses still in
// flight at the stop (≤ connections) were served by the proxy but are not
// counted: ≤ 0.25% at 20,000 requests and 50 connections.
const WRK_SCRIPT = `
local target = tonumber(os.getenv("BENCH_WRK_COUNT"))
local seen = 0
function response(status, headers, body)
  seen = seen + 1
  if seen == target then
    io.write("BENCH_WRK_DONE\\n")
    io.flush()
    wrk.thread:stop()
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_WRK_JSON {"requests":%d,"duration_us":%d,"p50_us":%f,"p99_us":%f,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
  io.flush()
end
`

let wrkScriptPath = null
function wrkScript () {
  if (!wrkScriptPath) {
    wrkScriptPath = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-bench-wrk-')), 'count.lua')
    fs.writeFileSync(wrkScriptPath, WRK_SCRIPT)
    process.once('exit', () => fs.rmSync(path.dirname(wrkScriptPath), { recursive: true, force: true }))
  }
  return wrkScriptPath
}

function runWrk ({ url, headers, requests, connections, watchdogMs, signal }) {
  return new Promise((resolve, reject) => {
    const args = [
      // One thread: the load generator shares its core with the upstream.
      '-t1', `-c${connections}`, `-d${Math.ceil(watchdogMs / 1000) + 5}s`, '--timeout', '10s',
      '-s', wrkScript(),
      ...Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]),
      url,
    ]
    const child = spawn('wrk', args, {
      env: { ...process.env, BENCH_WRK_COUNT: String(requests) },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    let summary = null
    let aborted = null
    child.stdout.setEncoding('utf8')
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-8192) })
    child.stdout.on('data', (d) => {
      stdout += d
      if (stdout.includes('BENCH_WRK_DONE') && !child.signalled) {
        child.signalled = true
        child.kill('SIGINT')
      }
      const m = /BENCH_WRK_JSON (\{.*\})/.exec(stdout)
      if (m && !summary) summary = JSON.parse(m[1])
    })
    const stop = (why) => {
      if (!aborted) aborted = why
      child.kill('SIGINT')
    }
    const watchdog = setTimeout(() => stop(`did not finish within ${Math.round(watchdogMs / 1000)} s`), watchdogMs)
    const onAbort = () => stop(String(signal.reason || 'aborted'))
    if (signal) signal.addEventListener('abort', onAbort, { once: true })
    child.on('error', (err) => { clearTimeout(watchdog); reject(err) })
    child.on('close', (code) => {
      clearTimeout(watchdog)
      if (signal) signal.removeEventListener('abort', onAbort)
      if (!summary) return reject(new Error(`wrk exited (${code}) without a summary: ${stderr.trim() || stdout.trim()}`))
      const durationS = summary.duration_us / 1e6
      const socketErrors = summary.connect + summary.read + summary.write + summary.timeout
      resolve({
        completed: summary.requests,
        durationS,
        rps: summary.requests / durationS,
        p50: summary.p50_us / 1000,
        p99: summary.p99_us / 1000,
        non2xx: summary.status, // wrk counts only statuses > 399
        errors: socketErrors,
        timeouts: summary.timeout,
        statusCodes: {},
        firstError: socketErrors ? `connect ${summary.connect}, read ${summary.read}, write ${summary.write}, timeout ${summary.timeout}` : null,
        aborted,
      })
    })
  })
}

function runLoad (tool, opts) {
  return tool === 'wrk' ? runWrk(opts) : runAutocannon(opts)
}

module.exports = { runLoad }
