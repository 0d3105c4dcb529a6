/**
 * File references in routes.yaml are relative to the file's own folder, not
 * to wherever the gateway was started, so one config works from any cwd.
 * Only the paths are resolved here; the files are read when the gateway starts.
 */
import path from 'node:path'
import type { GatewayConfig } from './types'

export function resolveFiles (config: GatewayConfig, folder: string): void {
  const resolve = (file: string): string => path.resolve(folder, file)
  config.pipes_dir = resolve(config.pipes_dir)
  if (config.server.tls !== undefined) {
    config.server.tls.cert = resolve(config.server.tls.cert)
    config.server.tls.key = resolve(config.server.tls.key)
  }
  for (const service of Object.values(config.services)) {
    if (service.exception_handler !== undefined) service.exception_handler = resolve(service.exception_handler)
    const tls = service.tls
    if (tls === undefined) continue
    if (tls.ca !== undefined) tls.ca = resolve(tls.ca)
    if (tls.cert !== undefined) tls.cert = resolve(tls.cert)
    if (tls.key !== undefined) tls.key = resolve(tls.key)
  }
}
