/** WebSocket upgrades the gateway refuses, seen from a real client. */
import type http from 'node:http'
import { once } from 'node:events'
import WebSocket from 'ws'

/** Opens `url` expecting the upgrade to be refused; resolves with the HTTP answer instead. */
export async function refusedUpgrade (url: string): Promise<{ status: number, body: string }> {
  const ws = new WebSocket(url)
  ws.on('error', () => {})
  const [, res] = await once(ws, 'unexpected-response') as [unknown, http.IncomingMessage]
  let body = ''
  for await (const chunk of res) body += String(chunk)
  return { status: res.statusCode ?? 0, body }
}
