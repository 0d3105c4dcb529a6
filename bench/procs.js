'use strict'
// Child processes, CPU pinning and CPU accounting for the bench runner.
const fs = require('node:fs')
const net = require('node:net')
const http = require('node:http')
const path = require('node:path')
const { spawn, execFileSync } = require('node:child_process')

/** Whether an executable is on PATH (no shell involved). */
function which (cmd) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue
    const file = path.join(dir, cmd)
    try {
      fs.accessSync(file, fs.constants.X_OK)
      return file
    } catch {}
  }
  return null
}

/** CPUs this process may run on, from the kernel's own list (e.g. "0-3,6"). */
function allowedCpus () {
  try {
    const line = fs.readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith('Cpus_allowed_list:'))
    const cpus = []
    for (const part of line.split(':')[1].trim().split(',')) {
      const [a, b = a] = part.split('-').map(Number)
      for (let c = a; c <= b; c++) cpus.push(c)
    }
    return cpus
  } catch {
    return []
  }
}

/**
 * Pins every thread of this process to `cpu`. `-a` matters: Node already runs
 * V8 and libuv threads, and pinning only the main thread would leave them free
 * to compete with the proxy's core. Threads started later inherit the mask.
 */
function pinSelf (cpu) {
  execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(process.pid)], { stdio: 'ignore' })
}

/** Kernel clock ticks per second, the unit of utime/stime in /proc/<pid>/stat. */
function clockTicks () {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
    if (n > 0) return n
  } catch {}
  return 100
}

function readStat (pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // f[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) }
  } catch {
    return null // the process is gone
  }
}

/**
 * CPU ticks (user + system, including reaped children) of `rootPid` and all
 * its live descendants. Summing the tree keeps the figure right if the gateway
 * serves from a child (a cluster worker) instead of the process we started.
 */
function treeCpuTicks (rootPid) {
  const stats = new Map()
  for (const name of fs.readdirSync('/proc')) {
    if (name.charCodeAt(0) < 48 || name.charCodeAt(0) > 57) continue
    const s = readStat(name)
    if (s) stats.set(Number(name), s)
  }
  let ticks = 0
  let processes = 0
  const queue = [rootPid]
  while (queue.length) {
    const pid = queue.pop()
    const s = stats.get(pid)
    if (!s) continue
    ticks += s.ticks
    processes++
    for (const [child, cs] of stats) if (cs.ppid === pid) queue.push(child)
  }
  return { ticks, processes }
}

/**
 * Tick counters of one CPU line of /proc/stat ('cpu3', or 'cpu' for all):
 * { steal, total }. Steal is time the hypervisor ran someone else while this
 * CPU wanted to run; a round with much of it is a noisy round.
 */
function cpuStatTicks (label) {
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith(label + ' '))
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    const f = line.trim().split(/\s+/).slice(1, 9).map(Number)
    return { steal: f[7] || 0, total: f.reduce((a, b) => a + b, 0) }
  } catch {
    return null
  }
}

/**
 * `count` distinct free ports on 127.0.0.1. All listeners are open at once so
 * the kernel cannot hand out the same port twice; they are closed before the
 * ports are used, so another process could still take one (rare; it then
 * shows up as a failed start).
 */
async function freePorts (count) {
  const servers = await Promise.all(Array.from({ length: count }, () => new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => resolve(s))
  })))
  const ports = servers.map((s) => s.address().port)
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))))
  return ports
}

/**
 * The one-line reason a child failed, from its stderr. A clean failure (the
 * gateway's own "one clear line") is the first non-empty line; an uncaught
 * exception starts with source context instead, so its "Error: …" line is
 * the meaningful one.
 */
function firstMeaningfulLine (text) {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean)
  const crashed = lines.some((l) => /^Node\.js v\d+/.test(l))
  const line = (crashed && lines.find((l) => /^\w*Error\b/.test(l))) || lines[0] || ''
  return line.length > 200 ? line.slice(0, 197) + '...' : line
}

/**
 * Every child the bench starts, so all of them die with it: on success, on
 * an error and on SIGINT/SIGTERM.
 */
class Children {
  constructor () {
    this.all = new Set()
  }

  /**
   * Starts `command args` (under `taskset -c cpu` when `cpu` is given; taskset
   * execs the command, so the pid we get is the program's own). stderr is
   * always drained into a bounded tail, so a chatty child never blocks on a
   * full pipe. `stdout` is 'pipe' (lines are emitted as 'line') or a file
   * descriptor.
   */
  start (name, command, args, { cpu = null, stdout = 'pipe', cwd, env } = {}) {
    const [file, argv] = cpu === null ? [command, args] : ['taskset', ['-c', String(cpu), command, ...args]]
    const child = spawn(file, argv, { cwd, env, stdio: ['ignore', stdout, 'pipe'] })
    const handle = {
      name,
      child,
      pid: child.pid,
      stderr: '',
      exit: null, // { code, signal } once exited
      lines: [],
      onLine: new Set(),
    }
    handle.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        handle.exit = { code, signal }
        this.all.delete(handle)
        resolve(handle.exit)
      })
      child.once('error', (err) => {
        handle.stderr += `${err.message}\n`
        handle.exit = { code: null, signal: null, error: err }
        this.all.delete(handle)
        resolve(handle.exit)
      })
    })
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (d) => {
      handle.stderr = (handle.stderr + d).slice(-64 * 1024)
    })
    if (child.stdout) {
      let partial = ''
      child.stdout.setEncoding('utf8')
      child.stdout.on('data', (d) => {
        const parts = (partial + d).split('\n')
        partial = parts.pop()
        for (const line of parts) for (const fn of handle.onLine) fn(line)
      })
    }
    this.all.add(handle)
    return handle
  }

  /** Resolves with the first stdout line matching `re`; rejects if the child exits or time runs out. */
  waitForLine (handle, re, timeoutMs) {
    return new Promise((resolve, reject) => {
      const done = (fn, arg) => {
        clearTimeout(timer)
        handle.onLine.delete(onLine)
        fn(arg)
      }
      const onLine = (line) => {
        const m = re.exec(line)
        if (m) done(resolve, m)
      }
      const timer = setTimeout(() => done(reject, new Error(`no "${re.source}" from ${handle.name} within ${timeoutMs / 1000} s`)), timeoutMs)
      handle.onLine.add(onLine)
      handle.exited.then((e) => done(reject, new Error(`${handle.name} exited (${describeExit(e)})`)))
    })
  }

  /** SIGTERM everything, SIGKILL what is still there after `graceMs`. */
  async stopAll (graceMs = 3000) {
    const handles = [...this.all]
    for (const h of handles) h.child.kill('SIGTERM')
    await Promise.race([
      Promise.all(handles.map((h) => h.exited)),
      new Promise((resolve) => setTimeout(resolve, graceMs).unref()),
    ])
    this.killAllSync()
  }

  /** For process 'exit', where nothing asynchronous runs any more. */
  killAllSync () {
    for (const h of this.all) {
      try { h.child.kill('SIGKILL') } catch {}
    }
  }
}

function describeExit (e) {
  if (!e) return 'running'
  if (e.error) return e.error.message
  return e.signal ? `signal ${e.signal}` : `exit code ${e.code}`
}

/** One GET with a short timeout; resolves { status, body } or rejects. */
function httpGet (url, headers, timeoutMs) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false, timeout: timeoutMs }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => { if (body.length < 4096) body += d })
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
  })
}

/**
 * Polls `url` until it answers over HTTP (the gateway's readiness is "its
 * traffic port answers"), failing early if the child exits. Statuses in
 * `retryOn` count as "not ready yet"; if time runs out on one, that answer is
 * returned for the caller to judge.
 */
async function waitForHttp (handle, url, headers, timeoutMs, { retryOn = [] } = {}) {
  const deadline = Date.now() + timeoutMs
  let lastError = null
  let lastAnswer = null
  while (Date.now() < deadline) {
    if (handle.exit) throw new Error(`exited (${describeExit(handle.exit)}) before answering`)
    try {
      lastAnswer = await httpGet(url, headers, 500)
      if (!retryOn.includes(lastAnswer.status)) return lastAnswer
    } catch (err) {
      lastError = err
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  if (lastAnswer) return lastAnswer
  throw new Error(`no answer on ${url} within ${timeoutMs / 1000} s (last: ${lastError ? lastError.code || lastError.message : 'none'})`)
}

module.exports = {
  which,
  allowedCpus,
  pinSelf,
  clockTicks,
  treeCpuTicks,
  cpuStatTicks,
  freePorts,
  firstMeaningfulLine,
  describeExit,
  Children,
  httpGet,
  waitForHttp,
}
