/**
 * `sluice start` in one process (operations.md): the gateway, its admin
 * listener, reloads by SIGHUP and file watch, and the graceful stop.
 */
import { adminTarget } from '../admin/target'
import { ConfigError } from '../config'
import type { LoadedConfig } from '../config/types'
import { createGateway, loadGatewayConfig } from '../gateway'
import type { Logger } from '../observability/logger'
import { createMetrics } from '../observability/metrics'
import type { ReloadResult } from '../admin/types'
import { reloadTriggers, startAdmin, StartError, stopSignal, type AdminListener } from './common'

export interface StartOptions {
  file: string
  loaded: LoadedConfig
  log: Logger
  watch: boolean
}

export async function runSingle ({ file, loaded, log, watch }: StartOptions): Promise<void> {
  const metrics = createMetrics()
  const gateway = createGateway({ config: loaded, logger: log, loadConfig: () => loadGatewayConfig(file), metrics })
  let ready = true
  try {
    const address = await gateway.listen()
    log.info({ event: 'listening', host: address.address, port: address.port, routes: gateway.generation.routes.length, config: loaded.file }, 'sluice is serving')
  } catch (e) {
    const { host, port } = loaded.config.server
    await gateway.close()
    metrics.close()
    // An unreadable or mismatched server.tls file is a config error at its line (exit 1).
    if (e instanceof ConfigError) throw e
    throw new StartError(`cannot listen on ${host}:${port}: ${(e as NodeJS.ErrnoException).code === 'EADDRINUSE' ? 'the port is in use' : (e as Error).message}`)
  }
  let admin: AdminListener | undefined
  // Every reload, whichever way it came (SIGHUP, the file, POST /admin/reload), may move the admin listener.
  const reloadAll = async (): Promise<ReloadResult> => {
    const result = await gateway.reload()
    if (result.ok) await admin?.follow(gateway.generation.loaded.config.admin)
    return result
  }
  const target = adminTarget(gateway, { ready: () => ready, metrics: () => metrics.expose(), reload: reloadAll })
  try {
    admin = await startAdmin(loaded.config.admin, target, log)
  } catch (e) {
    await gateway.close()
    metrics.close()
    throw e
  }
  const triggers = reloadTriggers(file, watch, () => { void reloadAll() })

  const signal = await stopSignal()
  // operations.md "Shutdown": not ready first, then drain, then exit 0.
  ready = false
  log.info({ event: 'shutdown', signal }, 'shutting down: draining in-flight requests')
  triggers.close()
  await gateway.close()
  await admin.close()
  metrics.close()
}
