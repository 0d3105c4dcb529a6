/**
 * What every answered request leaves behind (operations.md "Metrics" and
 * "Logs"): its count and duration by route, and one access-log line.
 *
 * Recorded when the response emits 'close' (after 'finish', or when the
 * client went away first). The gateway's own listener uses
 * `ObservedResponse`, whose `emit` notices 'finish' and 'close' itself, so
 * recording costs no listener per request; a response from a server the
 * gateway does not own (Express, a user's node:http server) gets one
 * 'close' listener instead. A WebSocket upgrade has no response: its record
 * is written when the client's socket closes.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { performance } from 'node:perf_hooks'
import pino, { type Logger } from 'pino'
import type { GatewayConfig } from '../config/types'
import type { Exchange } from '../exchange'
import type { GatewayMetrics, RouteMetrics } from './metrics'

export const kRecord = Symbol('sluice.record')

/** One request on the record, from its arrival to its response's 'close'. */
export class RequestRecord {
  /** Bytes the client connection had been sent when this request arrived. */
  readonly bytesAtStart: number
  bytesOut = -1
  /** Set once the request matched a route. */
  ex: Exchange | undefined = undefined
  /** WebSocket upgrades, which have no response object: the status answered (0: none yet), by whom, to which instance. */
  status = 0
  fromUpstream = false
  instance: string | undefined = undefined
  upstreamMs = -1

  constructor (
    readonly recorder: RequestRecorder,
    /** The route's counters; the unmatched ones until a route matched. */
    public route: RouteMetrics,
    readonly method: string,
    /** The URL as the client sent it (the gateway rewrites req.url for the upstream). */
    readonly url: string,
    readonly socket: Socket,
    readonly startedAt: number,
    readonly requestId: string | undefined,
  ) {
    this.bytesAtStart = socket.bytesWritten
  }
}

type Recorded = ServerResponse & { [kRecord]?: RequestRecord }

/** The response class of the gateway's own listener: records its request without a listener. */
export class ObservedResponse extends http.ServerResponse {
  [kRecord]: RequestRecord | undefined = undefined

  override emit (event: string | symbol, ...args: unknown[]): boolean {
    const record = this[kRecord]
    if (record !== undefined) {
      // 'finish' runs before Node hands the socket to a pipelined next response.
      if (event === 'finish') record.bytesOut = record.socket.bytesWritten - record.bytesAtStart
      else if (event === 'close') { this[kRecord] = undefined; record.recorder.done(record, this) }
    }
    return super.emit(event, ...args)
  }
}

function onPlainResponseClose (this: Recorded): void {
  const record = this[kRecord]
  if (record === undefined) return
  this[kRecord] = undefined
  record.recorder.done(record, this)
}

/**
 * The access line is written in the logger's own format (its level label,
 * time, bindings and message key, read from pino's exported symbols) to the
 * logger's own destination, but serialised here: its fields are fixed and
 * their names need no escaping, and pino's generic serialiser costs ~27k
 * instructions a line (callgrind; 8% of a proxied request) against ~2.5k.
 * Other log lines go through pino as usual.
 */
function accessLine (log: Logger): { head (): string, tail: string, write (line: string): void } {
  const internals = log as unknown as Record<symbol, unknown>
  const levels = internals[pino.symbols.lsCacheSym] as Record<number, string>
  const time = internals[pino.symbols.timeSym] as () => string
  const stream = internals[pino.symbols.streamSym] as { write (line: string): unknown }
  const info = log.levels.values.info
  return {
    head: () => levels[info] + time() + (internals[pino.symbols.chindingsSym] as string),
    tail: ',' + JSON.stringify(internals[pino.symbols.messageKeySym]) + ':"request"}\n',
    write: (line) => { stream.write(line) },
  }
}

/** Query parameters whose values are credentials; the api-key pipes' `query_param` names are added per config. */
export const SECRET_QUERY_PARAMS: readonly string[] = [
  'api_key', 'apikey', 'api-key', 'key', 'token', 'access_token', 'id_token', 'refresh_token',
  'password', 'passwd', 'secret', 'client_secret', 'signature', 'sig', 'jwt', 'auth', 'authorization',
]

/** The defaults and every api-key pipe's `query_param`, lower-cased, for one config. */
export function secretQueryParams (config: GatewayConfig): ReadonlySet<string> {
  const names = new Set(SECRET_QUERY_PARAMS)
  for (const pipe of [...config.global.inbound, ...config.routes.flatMap(r => r.pipelines.inbound)]) {
    const param = pipe.name === 'api-key' ? (pipe.properties as { query_param?: unknown } | undefined)?.query_param : undefined
    if (typeof param === 'string') names.add(param.toLowerCase())
  }
  return names
}

/** `url` with the values of credential parameters replaced (operations.md: API keys are never logged). */
export function redactQuery (url: string, secret: ReadonlySet<string>): string {
  const q = url.indexOf('?')
  if (q === -1) return url
  let changed = false
  const parts = url.slice(q + 1).split('&')
  for (let i = 0; i < parts.length; i++) {
    const eq = parts[i].indexOf('=')
    const raw = eq === -1 ? parts[i] : parts[i].slice(0, eq)
    let name = raw
    try { name = decodeURIComponent(raw.replace(/\+/g, ' ')) } catch { /* logged as sent */ }
    if (secret.has(name.toLowerCase())) { parts[i] = raw + '=[redacted]'; changed = true }
  }
  return changed ? url.slice(0, q + 1) + parts.join('&') : url
}

export interface RequestRecorder {
  /** Starts the record of a request; `route` is the route's metrics, or the unmatched ones. */
  start (req: IncomingMessage, res: ServerResponse, route: RouteMetrics, requestId: string | undefined): RequestRecord
  done (record: RequestRecord, res: ServerResponse): void
  /**
   * Starts the record of a WebSocket upgrade (unmatched until `route` is
   * set). It is written when the client's socket closes: a tunnel's line
   * comes when the tunnel ends, with its status (101, or the refusal) set on
   * the record by whoever answered.
   */
  startUpgrade (req: IncomingMessage, socket: Duplex, requestId: string): RequestRecord
  /** Query parameters never logged with their values (the config's api-key `query_param`s included). */
  secretParams: ReadonlySet<string>
}

export function createRequestRecorder (metrics: GatewayMetrics, log: Logger): RequestRecorder {
  const access = accessLine(log)
  const recorder: RequestRecorder = {
    secretParams: new Set(SECRET_QUERY_PARAMS),
    start (req, res, route, requestId) {
      metrics.inflight.inc()
      const record = new RequestRecord(recorder, route, req.method ?? 'GET', req.url ?? '/', req.socket, performance.now(), requestId)
      ;(res as Recorded)[kRecord] = record
      if (!(res instanceof ObservedResponse)) res.once('close', onPlainResponseClose)
      return record
    },
    done (record, res) {
      // A response cut off before it was sent: 499, as nginx and Kong log a client that closed first.
      const finished = res.writableFinished
      finish(record, finished || res.headersSent ? res.statusCode : 499, record.ex?.fromUpstream === true, finished)
    },
    startUpgrade (req, socket, requestId) {
      metrics.inflight.inc()
      const record = new RequestRecord(recorder, metrics.unmatched, req.method ?? 'GET', req.url ?? '/', req.socket, performance.now(), requestId)
      ;(req as IncomingMessage & { [kRecord]?: RequestRecord })[kRecord] = record
      socket.once('close', () => finish(record, record.status === 0 ? 499 : record.status, record.fromUpstream, record.status !== 0))
      return record
    },
  }

  function finish (record: RequestRecord, status: number, fromUpstream: boolean, finished: boolean): void {
    metrics.inflight.dec()
    const ms = performance.now() - record.startedAt
    const ex = record.ex
    record.route.done(record.method, status, fromUpstream ? 'upstream' : 'gateway', ms / 1000)
    if (!log.isLevelEnabled('info')) return
    const upstreamMs = ex !== undefined ? ex.upstreamMs : record.upstreamMs
    const service = record.route.service
    const instance = ex?.instance?.url ?? record.instance
    const bytesOut = record.bytesOut >= 0 ? record.bytesOut : record.socket.bytesWritten - record.bytesAtStart
    access.write(access.head() +
      ',"request_id":' + (record.requestId === undefined ? 'null' : JSON.stringify(record.requestId)) +
      ',"method":' + known(record.method) +
      ',"url":' + JSON.stringify(redactQuery(record.url, recorder.secretParams)) +
      ',"route":' + known(record.route.route) +
      ',"service":' + (service === '' ? 'null' : known(service)) +
      ',"instance":' + (instance === undefined ? 'null' : known(instance)) +
      ',"status":' + status +
      ',"duration_ms":' + Math.round(ms * 1000) / 1000 +
      ',"upstream_ms":' + (upstreamMs < 0 ? 'null' : Math.round(upstreamMs * 1000) / 1000) +
      ',"bytes_out":' + bytesOut +
      (finished ? '' : ',"aborted":true') +
      access.tail)
  }

  /** JSON of a string from a small set (route, service and instance names from the config; methods, which Node's parser limits to its list): encoded once. */
  const encoded = new Map<string, string>()
  function known (value: string): string {
    let json = encoded.get(value)
    if (json === undefined) {
      json = JSON.stringify(value)
      if (encoded.size < 10_000) encoded.set(value, json)
    }
    return json
  }

  return recorder
}
