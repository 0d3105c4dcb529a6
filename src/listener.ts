/**
 * The gateway's own listener: `server.host`/`port`/`tls`/`limits`, and what
 * a reload does to it (operations.md "Hot reload": TLS files are read again
 * and swapped in; a moved port or host is bound before the old listener
 * drains; changed limits apply to the listener in place). Its responses
 * record themselves (observability/requests.ts).
 */
import fs from 'node:fs'
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import tls from 'node:tls'
import { ConfigError, problemAt } from './config'
import type { ConfigProblem, LoadedConfig, ServerConfig } from './config/types'
import type { Logger } from './observability/logger'
import { ObservedResponse } from './observability/requests'

type Server = http.Server<typeof IncomingMessage, typeof ObservedResponse> | https.Server<typeof IncomingMessage, typeof ObservedResponse>

/** The certificate and key of `server.tls`, read from their files. */
interface ServerTls { cert: Buffer, key: Buffer }

/** What a listener is made with: the address asked for (the caller's or the file's), TLS and limits. */
interface Plan {
  host: string
  port: number
  tls: ServerTls | undefined
  limits: ServerConfig['limits']
}

export interface GatewayListener {
  /** Where it is bound; undefined before listen() and after close(). */
  readonly address: AddressInfo | undefined
  /** A host or port given here outranks the file's until a reload changes that value in the file. */
  listen (loaded: LoadedConfig, options: { port?: number, host?: string }): Promise<AddressInfo>
  /**
   * The part of a reload that may still fail: reads `server.tls` again and
   * binds a moved address, throwing a ConfigError at the line that asked for
   * it with nothing changed. Returns what to do once the new generation is
   * swapped in (undefined when there is no listener).
   */
  prepare (before: LoadedConfig, after: LoadedConfig): Promise<(() => void) | undefined>
  /** Drains the listener and any replaced one still draining. */
  close (drainMs: number): Promise<void>
}

export function createListener (
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void,
  log: Logger,
): GatewayListener {
  let server: Server | undefined
  let plan: Plan | undefined
  /** Address values the caller of listen() gave. */
  const chosen = { host: false, port: false }
  /** Listeners a rebind replaced, still draining. */
  const draining = new Set<Promise<void>>()

  async function open (p: Plan): Promise<Server> {
    const limits = nodeLimits(p.limits)
    const s: Server = p.tls !== undefined
      ? https.createServer({ ...limits, ServerResponse: ObservedResponse, cert: p.tls.cert, key: p.tls.key }, handler)
      : http.createServer({ ...limits, ServerResponse: ObservedResponse }, handler)
    s.on('upgrade', upgrade)
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject)
      s.listen(p.port, p.host, () => { s.off('error', reject); resolve() })
    })
    return s
  }

  function drainInBackground (s: Server, timeoutMs: number): void {
    const done = drain(s, timeoutMs)
    draining.add(done)
    void done.then(() => draining.delete(done))
  }

  /**
   * Makes `server` a listener made from `wanted`, bound before the old one
   * stops accepting; returns the old one, to drain once the reload is
   * committed (undefined when it is draining already). Throws the bind error
   * with nothing changed.
   */
  async function rebind (current: Plan, wanted: Plan, drainMs: number): Promise<Server | undefined> {
    const previous = server as Server
    if (wanted.host !== current.host || wanted.port !== current.port || wanted.port === 0) {
      server = await open(wanted)
      return previous
    }
    // http ↔ https on the same host:port cannot be bound twice: the old
    // listener stops accepting first, and connections attempted before the
    // new one listens (one bind: well under a millisecond) are refused. The
    // old listener's requests in flight still finish.
    drainInBackground(previous, drainMs)
    try {
      server = await open(wanted)
      return undefined
    } catch (err) {
      // The port was just freed; should it be taken meanwhile, the old kind of listener comes back.
      try {
        server = await open(current)
      } catch (again) {
        server = undefined
        log.error({ event: 'listening', err: again, host: current.host, port: current.port }, 'the listener could not be restored after a failed rebind')
      }
      throw err
    }
  }

  return {
    get address () { return (server?.address() ?? undefined) as AddressInfo | undefined },

    async listen (loaded, options) {
      const cfg = loaded.config.server
      const wanted: Plan = { host: options.host ?? cfg.host, port: options.port ?? cfg.port, tls: readServerTls(loaded), limits: cfg.limits }
      server = await open(wanted)
      plan = wanted
      chosen.host = options.host !== undefined
      chosen.port = options.port !== undefined
      return server.address() as AddressInfo
    },

    async prepare (before, after) {
      const current = plan
      if (server === undefined || current === undefined) return undefined
      // Certificates are renewed in place: read them again even when the paths did not change.
      const certificates = readServerTls(after)
      const was = before.config.server
      const now = after.config.server
      // The caller's port or host stays unless the file changed that value (file against file:
      // port 0 binds anywhere, so the bound address says nothing).
      const wanted: Plan = {
        host: chosen.host && now.host === was.host ? current.host : now.host,
        port: chosen.port && now.port === was.port ? current.port : now.port,
        tls: certificates,
        limits: now.limits,
      }
      const moves = wanted.host !== current.host || wanted.port !== current.port || (wanted.tls === undefined) !== (current.tls === undefined)
      if (!moves) {
        return () => {
          // New handshakes get the new certificate; connections already open keep theirs.
          if (server instanceof https.Server && certificates !== undefined) server.setSecureContext(certificates)
          // Node reads these off the server as it goes: the next idle connection, the next timeout check.
          if (server !== undefined) Object.assign(server, nodeLimits(now.limits))
          plan = { ...current, tls: certificates, limits: now.limits }
        }
      }
      let previous: Server | undefined
      try {
        previous = await rebind(current, wanted, was.shutdown_timeout_ms)
      } catch (err) {
        const where = now.port !== was.port ? ['server', 'port'] : now.host !== was.host ? ['server', 'host'] : ['server']
        throw new ConfigError([problemAt(after, where, `cannot listen on ${hostPort(wanted.host, wanted.port)}: ${bindFailure(err)}`)])
      }
      return () => {
        plan = wanted
        // Only a value the file changed stops being the caller's.
        chosen.host &&= now.host === was.host
        chosen.port &&= now.port === was.port
        if (previous !== undefined) drainInBackground(previous, was.shutdown_timeout_ms)
        const a = server?.address() as AddressInfo
        log.info({ event: 'listening', host: a.address, port: a.port }, 'rebound')
      }
    },

    async close (drainMs) {
      const s = server
      server = undefined
      plan = undefined
      const drains = [...draining]
      if (s !== undefined) drains.push(drain(s, drainMs))
      await Promise.all(drains)
    },
  }
}

/** `server.limits` under the names of Node's server options (and properties). */
function nodeLimits (limits: Plan['limits']): { headersTimeout: number, requestTimeout: number, keepAliveTimeout: number } {
  return {
    headersTimeout: limits.headers_timeout_ms,
    requestTimeout: limits.request_timeout_ms,
    keepAliveTimeout: limits.keep_alive_timeout_ms,
  }
}

/**
 * Reads `server.tls` and checks that the pair makes a TLS context, so a
 * missing, unreadable or mismatched file is a ConfigError at its line
 * before anything is swapped.
 */
function readServerTls (loaded: LoadedConfig): ServerTls | undefined {
  const files = loaded.config.server.tls
  if (files === undefined) return undefined
  const problems: ConfigProblem[] = []
  const read = (which: 'cert' | 'key'): Buffer => {
    try {
      return fs.readFileSync(files[which])
    } catch (err) {
      problems.push(problemAt(loaded, ['server', 'tls', which], `cannot read ${files[which]}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`))
      return Buffer.alloc(0)
    }
  }
  const material = { cert: read('cert'), key: read('key') }
  if (problems.length > 0) throw new ConfigError(problems)
  try {
    tls.createSecureContext(material)
  } catch (err) {
    throw new ConfigError([problemAt(loaded, ['server', 'tls'], `${files.cert} and ${files.key} do not make a usable certificate and key: ${(err as Error).message}`)])
  }
  return material
}

/**
 * Stops `s` accepting; requests and streams in flight get `timeoutMs` to
 * finish while keep-alive connections are closed as they go idle; what is
 * left then is closed.
 */
async function drain (s: Server, timeoutMs: number): Promise<void> {
  const closed = new Promise<void>((resolve) => s.close(() => resolve()))
  s.closeIdleConnections()
  const idle = setInterval(() => s.closeIdleConnections(), 50)
  let timer: NodeJS.Timeout | undefined
  const timedOut = new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs) })
  await Promise.race([closed, timedOut])
  clearInterval(idle)
  clearTimeout(timer)
  s.closeAllConnections()
  await closed
}

/** Why a listen() failed, in the words of the CLI's one-line errors. */
export function bindFailure (err: unknown): string {
  return (err as NodeJS.ErrnoException).code === 'EADDRINUSE' ? 'the port is in use' : (err as Error).message
}

/** `host:port`, with an IPv6 host in brackets. */
function hostPort (host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}
