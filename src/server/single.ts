/**
 * `sluice start` in one process (operations.md): the gateway, its admin
 * listener, reloads by SIGHUP and file watch, and the graceful stop.
 */
import { adminTarget } from '../admin/target'
import type { LoadedConfig } from '../config/types'
import { createGateway, loadGatewayConfig } from '../gateway'
import type { Logger } from '../observability/logger'
import { createMetrics } from '../observability/metrics'
import type { ReloadResult } from '../admin/types'
import { listenOrExplain, reloadTriggers, startAdmin, stopSignal, type AdminListener } from './common'

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
  const closeAll = async (): Promise<void> => { await gateway.close(); metrics.close() }
  const address = await listenOrExplain(gateway, loaded, closeAll)
  log.info({ event: 'listening', host: address.address, port: address.port, routes: gateway.generation.routes.length, config: loaded.file }, 'sluice is serving')
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
    await closeAll()
    throw e
  }
  const triggers = reloadTriggers(file, watch, () => { void reloadAll() })

  const signal = await stopSignal()
  // operations.md "Shutdown": not ready first, then drain, then exit 0.
  ready = false
  log.info({ event: 'shutdown', signal }, 'shutting down: draining in-flight requests')
  triggers.close()
  // The admin listener answers (readyz 503) until the traffic listener has drained.
  await closeAll()
  await admin.close()
}
