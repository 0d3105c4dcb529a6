/**
 * `sluice start | check | routes | explain` (operations.md). Exit codes:
 * 0 ok, 1 config or usage error, 2 runtime failure — each failure with one
 * clear line on stderr (every config problem gets its own line).
 */
import { parseArgs } from 'node:util'
import cluster from 'node:cluster'
import path from 'node:path'
import { ConfigError } from './config'
import type { LoadedConfig } from './config/types'
import { explainRequest } from './explain'
import { compileGeneration, loadGatewayConfig } from './gateway'
import { createLogger } from './observability/logger'
import { runPrimary, runWorker, workerCount } from './server/cluster'
import { StartError } from './server/common'
import { runSingle } from './server/single'

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
  if (workers !== undefined && !/^([1-9]\d*|auto)$/.test(workers)) throw new UsageError('--workers takes a number from 1, or "auto"')
  // Workers share the primary's stdout.
  const log = createLogger({ pretty: logFormat === 'pretty', sharedStdout: cluster.isWorker })
  const loaded = load(file)
  // Accepted by the schema, built by a later issue: refused rather than quietly ignored.
  if (loaded.config.store.type === 'redis') throw new UsageError('store.type redis is not available yet; use memory (the default)')
  const options = { file, loaded, log, watch }
  try {
    if (cluster.isWorker) {
      try { await runWorker(options) } finally { process.disconnect() }
    } else {
      const count = workerCount(workers ?? loaded.config.server.workers)
      if (count > 1) await runPrimary(options, count)
      else await runSingle(options)
    }
  } catch (e) {
    if (!(e instanceof StartError)) throw e
    err.write(`sluice: ${e.message}\n`)
    return 2
  }
  return 0
}
