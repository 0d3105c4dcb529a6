/**
 * `sluice start | check | routes | explain` (operations.md). Exit codes:
 * 0 ok, 1 config or usage error, 2 runtime failure — each failure with one
 * clear line on stderr (every config problem gets its own line).
 */
import { parseArgs } from 'node:util'
import fs from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { ConfigError } from './config'
import type { LoadedConfig } from './config/types'
import { explainRequest } from './explain'
import { compileGeneration, createGateway, loadGatewayConfig } from './gateway'
import { createLogger } from './observability/logger'
import { createAdminApp } from './admin/app'
import { adminTarget } from './admin/target'
import { createMetrics } from './observability/metrics'

const USAGE = `usage:
  sluice start   [-c routes.yaml] [--workers N|auto] [--no-watch] [--log-format json|pretty]
  sluice check   [-c routes.yaml]
  sluice routes  [-c routes.yaml]
  sluice explain [-c routes.yaml] METHOD PATH_OR_URL [-H 'Name: value']...
The config path is also read from SLUICE_CONFIG; the default is ./routes.yaml.`

class UsageError extends Error {}

function configPath (flag: string | undefined): string {
  return flag ?? process.env.SLUICE_CONFIG ?? 'routes.yaml'
}

function load (file: string): LoadedConfig {
  return loadGatewayConfig(file)
}

export async function main (argv: string[], out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        workers: { type: 'string' },
        'no-watch': { type: 'boolean' },
        'log-format': { type: 'string' },
        header: { type: 'string', short: 'H', multiple: true },
        help: { type: 'boolean', short: 'h' },
      },
    })
  } catch (e) {
    err.write(`sluice: ${(e as Error).message}\n${USAGE}\n`)
    return 1
  }
  const { values, positionals } = parsed
  const [command, ...rest] = positionals
  if (values.help === true || command === undefined) { (values.help === true ? out : err).write(USAGE + '\n'); return values.help === true ? 0 : 1 }
  const file = configPath(values.config)
  try {
    switch (command) {
      case 'check': return check(file, out)
      case 'routes': return routes(file, out)
      case 'explain': return explain(file, rest, values.header ?? [], out)
      case 'start': return await start(file, values['log-format'], values.workers, values['no-watch'] !== true, err)
      default: throw new UsageError(`unknown command "${command}"`)
    }
  } catch (e) {
    if (e instanceof ConfigError) { err.write(e.message + '\n'); return 1 }
    if (e instanceof UsageError) { err.write(`sluice: ${e.message}\n${USAGE}\n`); return 1 }
    throw e
  }
}

function check (file: string, out: NodeJS.WritableStream): number {
  const loaded = load(file)
  const gen = compileGeneration(loaded)
  const { config } = loaded
  const pipes = new Set([...config.global.inbound, ...config.global.outbound, ...config.routes.flatMap(r => [...r.pipelines.inbound, ...r.pipelines.outbound])].map(p => p.name))
  out.write(`${path.relative(process.cwd(), loaded.file) || loaded.file}: OK — ${gen.routes.length} routes, ${gen.services.size} services, ${pipes.size} pipes; gateway on ${config.server.host}:${config.server.port}, admin on ${config.admin.host}:${config.admin.port}\n`)
  for (const service of gen.services.values()) service.close()
  return 0
}

function routes (file: string, out: NodeJS.WritableStream): number {
  const gen = compileGeneration(load(file))
  const rows = gen.routes.map(r => [
    r.name,
    r.methods.join(','),
    r.config.path,
    r.config.upstream_path,
    r.service.name,
    [...r.config.pipelines.inbound.map(p => p.name), ...r.config.pipelines.outbound.map(p => `${p.name}(out)`)].join(',') || '-',
  ])
  const header = ['NAME', 'METHODS', 'PATH', 'UPSTREAM', 'SERVICE', 'PIPES']
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map(r => r[i].length)))
  for (const row of [header, ...rows]) out.write(row.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd() + '\n')
  for (const service of gen.services.values()) service.close()
  return 0
}

function explain (file: string, args: string[], headerFlags: string[], out: NodeJS.WritableStream): number {
  if (args.length !== 2) throw new UsageError('explain takes METHOD and PATH_OR_URL')
  const headers: Record<string, string> = {}
  for (const h of headerFlags) {
    const colon = h.indexOf(':')
    if (colon <= 0) throw new UsageError(`-H "${h}" is not "Name: value"`)
    headers[h.slice(0, colon).trim()] = h.slice(colon + 1).trim()
  }
  const gen = compileGeneration(load(file))
  const result = explainRequest(gen, args[0].toUpperCase(), args[1], headers)
  for (const service of gen.services.values()) service.close()
  const lines: string[] = []
  if (result.route !== undefined) {
    lines.push(`route:    ${result.route} (service ${result.service})`)
    lines.push(`params:   ${Object.entries(result.params ?? {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ') || '-'}`)
    lines.push(`inbound:  ${result.pipes?.inbound.join(' → ') || '-'}`)
    lines.push(`outbound: ${result.pipes?.outbound.join(' → ') || '-'}`)
  }
  if (result.upstream !== undefined) {
    lines.push(`upstream: ${result.upstream[0] ?? '(no instance: 503 NoHealthyInstance)'}`)
    for (const u of result.upstream.slice(1)) lines.push(`          ${u}`)
  }
  if (result.status === 308) lines.push(`answer:   308 → ${result.headers?.location}`)
  if (result.error !== undefined) lines.push(`answer:   ${result.status} ${result.error.code}: ${result.error.message}`)
  out.write(lines.join('\n') + '\n')
  return 0
}

async function start (file: string, logFormat: string | undefined, workers: string | undefined, watch: boolean, err: NodeJS.WritableStream): Promise<number> {
  if (logFormat !== undefined && logFormat !== 'json' && logFormat !== 'pretty') throw new UsageError('--log-format is json or pretty')
  if (workers !== undefined && !/^(\d+|auto)$/.test(workers)) throw new UsageError('--workers takes a number or "auto"')
  const log = createLogger({ pretty: logFormat === 'pretty' })
  const loaded = load(file)
  // Accepted by the schema, built by a later issue: refused rather than quietly ignored.
  const workerCount = workers ?? String(loaded.config.server.workers)
  if (workerCount !== '1') throw new UsageError(`workers ${workerCount}: several worker processes are not available yet; run with 1`)
  if (loaded.config.store.type === 'redis') throw new UsageError('store.type redis is not available yet; use memory (the default)')
  const metrics = createMetrics()
  const gateway = createGateway({ config: loaded, logger: log, loadConfig: () => load(file), metrics })
  let address
  try {
    address = await gateway.listen()
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    const { host, port } = loaded.config.server
    err.write(`sluice: cannot listen on ${host}:${port}: ${code === 'EADDRINUSE' ? 'the port is in use' : (e as Error).message}\n`)
    await gateway.close()
    return 2
  }
  log.info({ event: 'listening', host: address.address, port: address.port, routes: gateway.generation.routes.length, config: loaded.file }, 'sluice is serving')
  let ready = true
  const adminConfig = loaded.config.admin
  const admin = createAdminApp({
    target: adminTarget(gateway, { ready: () => ready, metrics: () => metrics.expose() }),
    token: adminConfig.token,
    registryToken: adminConfig.registry_token,
    log,
  })
  const adminServer = http.createServer(admin)
  try {
    await new Promise<void>((resolve, reject) => {
      adminServer.once('error', reject)
      adminServer.listen(adminConfig.port, adminConfig.host, () => { adminServer.off('error', reject); resolve() })
    })
  } catch (e) {
    err.write(`sluice: cannot listen on ${adminConfig.host}:${adminConfig.port} (admin): ${(e as NodeJS.ErrnoException).code === 'EADDRINUSE' ? 'the port is in use' : (e as Error).message}\n`)
    await gateway.close()
    return 2
  }
  const adminAddress = adminServer.address() as AddressInfo
  log.info({ event: 'admin', host: adminAddress.address, port: adminAddress.port }, 'admin listener up')
  // SIGHUP and changes to the file reload it (operations.md "Hot reload").
  const reload = (): void => { void gateway.reload() }
  const onHup = (): void => reload()
  process.on('SIGHUP', onHup)
  const watcher = watch ? watchFile(file, reload) : undefined
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      // operations.md "Shutdown": not ready first, then drain, then exit 0.
      ready = false
      log.info({ event: 'shutdown', signal }, 'shutting down: draining in-flight requests')
      process.off('SIGHUP', onHup)
      watcher?.close()
      gateway.close()
        .then(() => new Promise<void>((r) => { adminServer.close(() => r()); adminServer.closeAllConnections() }))
        .then(() => metrics.close())
        .then(resolve, resolve)
    }
    process.once('SIGTERM', () => stop('SIGTERM'))
    process.once('SIGINT', () => stop('SIGINT'))
  })
  return 0
}

/**
 * Calls `changed` once a burst of changes to `file` settles. The folder is
 * watched, not the file: editors often save by writing a new file and
 * renaming it over the old one.
 */
function watchFile (file: string, changed: () => void): { close (): void } {
  const absolute = path.resolve(file)
  const name = path.basename(absolute)
  let timer: NodeJS.Timeout | undefined
  const watcher = fs.watch(path.dirname(absolute), (_event, changedName) => {
    if (changedName !== null && String(changedName) !== name) return
    if (timer !== undefined) clearTimeout(timer)
    timer = setTimeout(changed, 100)
  })
  watcher.unref()
  return { close () { if (timer !== undefined) clearTimeout(timer); watcher.close() } }
}
