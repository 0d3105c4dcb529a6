/** A gateway on port 0 built from a YAML text, as a user's routes.yaml would be. */
import type { AddressInfo } from 'node:net'
import { loadConfigText } from '../../src/config'
import { createGateway, type Gateway } from '../../src/gateway'
import { createPipeCatalog } from '../../src/pipes/catalog'

export interface RunningGateway {
  gateway: Gateway
  url: string
  port: number
  close (): Promise<void>
}

/** `file` places the config (relative pipes_dir resolves against its folder); it need not exist. */
export async function startGateway (yaml: string, env: Record<string, string> = {}, file = 'routes.yaml'): Promise<RunningGateway> {
  const loaded = loadConfigText(yaml, file, { env: { ...env }, pipes: (pipesDir) => createPipeCatalog({ pipesDir }) })
  const gateway = createGateway({ config: loaded })
  const { port } = await gateway.listen({ port: 0, host: '127.0.0.1' }) as AddressInfo
  return { gateway, url: `http://127.0.0.1:${port}`, port, close: () => gateway.close() }
}

/** `services:` block for one service with the given instance URLs. */
export function service (name: string, urls: string[], extra = ''): string {
  return `  ${name}:\n    instances:\n${urls.map(u => `      - url: ${u}\n`).join('')}${extra}`
}
