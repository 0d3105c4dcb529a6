/**
 * Real upstream servers for tests: port 0, recording exactly what arrived
 * (method, url, headers, body bytes), answering with a handler of the test's.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

export interface Received {
  method: string
  url: string
  headers: http.IncomingHttpHeaders
  rawHeaders: string[]
  body: Buffer
}

export type UpstreamHandler = (req: IncomingMessage & { body: Buffer }, res: ServerResponse) => void

export interface Upstream {
  url: string
  port: number
  server: http.Server
  received: Received[]
  close (): Promise<void>
}

/** Echoes what it received as JSON, unless the test gives its own handler. */
export const echo: UpstreamHandler = (req, res) => {
  const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: req.body.toString('utf8') })
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

export async function startUpstream (handler: UpstreamHandler = echo, options: { bufferBody?: boolean } = {}): Promise<Upstream> {
  const received: Received[] = []
  const sockets = new Set<Socket>()
  const server = http.createServer((req, res) => {
    if (options.bufferBody === false) {
      received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.alloc(0) })
      handler(Object.assign(req, { body: Buffer.alloc(0) }), res)
      return
    }
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body })
      handler(Object.assign(req, { body }), res)
    })
  })
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    received,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy()
      server.close(() => resolve())
    }),
  }
}

/** A port with nothing listening on it (bound, read, released). */
export async function closedPort (): Promise<number> {
  const server = http.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}
