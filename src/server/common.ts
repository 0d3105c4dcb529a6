/**
 * What `sluice start` needs in one process and in a cluster alike: the admin
 * listener (rebound when the file moves it), the file watcher, and the stop
 * signals.
 */
import fs from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { createAdminApp } from '../admin/app'
import type { AdminTarget } from '../admin/types'
import { ConfigError } from '../config'
import type { AdminConfig, LoadedConfig } from '../config/types'
import type { Gateway } from '../gateway'
import { bindFailure } from '../listener'
import type { Logger } from '../observability/logger'

/** A runtime failure with its one clear line for stderr (exit code 2). */
export class StartError extends Error {}

export interface AdminListener {
  readonly address: AddressInfo
  /** Moves the listener when `admin.host`/`admin.port` changed; keeps the old one on failure. */
  follow (config: AdminConfig): Promise<void>
  close (): Promise<void>
}

function listenOn (server: http.Server, host: string, port: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => { server.off('error', reject); resolve() })
  })
}

/**
 * Starts the gateway's own listener. On failure `cleanup` runs first; then an
 * unreadable or mismatched `server.tls` file stays a ConfigError at its line
 * (exit 1), and anything else becomes the one-line StartError (exit 2).
 */
export async function listenOrExplain (gateway: Gateway, loaded: LoadedConfig, cleanup: () => Promise<void>): Promise<AddressInfo> {
  try {
    return await gateway.listen()
  } catch (e) {
    await cleanup()
    if (e instanceof ConfigError) throw e
    const { host, port } = loaded.config.server
    throw new StartError(`cannot listen on ${host}:${port}: ${bindFailure(e)}`)
  }
}

export async function startAdmin (config: AdminConfig, target: AdminTarget, log: Logger): Promise<AdminListener> {
  let current = config
  const open = async (c: AdminConfig): Promise<http.Server> => {
    const server = http.createServer(createAdminApp({ target, token: c.token, registryToken: c.registry_token, log }))
    try {
      await listenOn(server, c.host, c.port)
    } catch (e) {
      throw new StartError(`cannot listen on ${c.host}:${c.port} (admin): ${bindFailure(e)}`)
    }
    const a = server.address() as AddressInfo
    log.info({ event: 'admin', host: a.address, port: a.port }, 'admin listener up')
    return server
  }
  let server = await open(config)
  const shut = (s: http.Server): Promise<void> => new Promise<void>((resolve) => { s.close(() => resolve()); s.closeAllConnections() })
  return {
    get address () { return server.address() as AddressInfo },
    async follow (next) {
      // The app holds the tokens, so a token change builds a new one too.
      if (next.host === current.host && next.port === current.port && next.token === current.token && next.registry_token === current.registry_token) return
      if (next.host === current.host && next.port === current.port) {
        // Same address: the new app must take the port the old one holds.
        await shut(server)
        server = await open(next)
      } else {
        try {
          const replacement = await open(next)
          const old = server
          server = replacement
          void shut(old)
        } catch (e) {
          log.error({ event: 'admin', err: e }, (e as Error).message)
          return
        }
      }
      current = next
    },
    close: () => shut(server),
  }
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

/** SIGHUP and, unless `watch` is off, changes to `file` call `reload` (operations.md "Hot reload"). */
export function reloadTriggers (file: string, watch: boolean, reload: () => void): { close (): void } {
  const onHup = (): void => reload()
  process.on('SIGHUP', onHup)
  const watcher = watch ? watchFile(file, reload) : undefined
  return { close () { process.off('SIGHUP', onHup); watcher?.close() } }
}

/**
 * Resolves with the first SIGTERM or SIGINT. The handlers stay installed
 * after it: a second signal (a terminal's Ctrl-C reaches every process of
 * the group, and a cluster primary forwards SIGTERM too) must not kill a
 * process that is already draining.
 */
export function stopSignal (): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    process.on('SIGTERM', () => resolve('SIGTERM'))
    process.on('SIGINT', () => resolve('SIGINT'))
  })
}
