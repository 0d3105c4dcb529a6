/**
 * Logs are objects first, message second (pino); secrets are redacted by path.
 *
 * Every answered request logs a line, so lines are batched: a line is
 * appended to an array, and the batch goes to sonic-boom (pino's
 * destination, which owns the file descriptor: partial writes, EAGAIN on
 * pipes) as one string every FLUSH_MS or BATCH_BYTES. Measured per line on
 * top of pino's serialising (2.8 µs), with a request's worth of work between
 * lines: sonic-boom writing each line 26 µs, sonic-boom's own `minLength`
 * buffering 4–6 µs (it re-measures its growing buffer with Buffer.byteLength
 * on every line), this batch 0.9 µs. The batch is written synchronously, as
 * pino's default destination does: an asynchronous write hands each batch to
 * libuv's thread pool, whose wake-ups cost the proxy's core more than the
 * write itself (bench: ~10 µs per request more on a pinned core).
 */
import pino, { type DestinationStream, type Logger, type LoggerOptions } from 'pino'

export type { Logger }

export const REDACT_PATHS = [
  'req.headers.authorization', 'req.headers.cookie', 'req.headers["proxy-authorization"]', 'req.headers["x-api-key"]',
  'res.headers["set-cookie"]', 'config.admin.token', 'config.admin.registry_token',
]

export interface LoggerSettings {
  /** Default: LOG_LEVEL, else info. */
  level?: string
  /** Colourised lines for humans (pino-pretty) on stderr, instead of JSON on stdout. */
  pretty?: boolean
  /** Other processes write to the same stdout (cluster workers): batches stay within PIPE_BUF. */
  sharedStdout?: boolean
}

export function loggerOptions (level = process.env.LOG_LEVEL ?? 'info'): LoggerOptions {
  return {
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: undefined,
    // "level":"info" rather than 30; time stays pino's epoch milliseconds (an ISO string costs 1.4% of a request).
    formatters: { level: (label) => ({ level: label }) },
  }
}

/** pino's own destination (sonic-boom). */
type Destination = ReturnType<typeof pino.destination>

/** Lines go out in batches of at most this size… */
const BATCH_BYTES = 64 * 1024
/**
 * …or, when other processes write to the same stdout (cluster workers), PIPE_BUF: a write to a
 * pipe of up to that size is atomic, so no worker splits another's lines.
 */
export const PIPE_BUF = 4096
/** …or this often, whichever comes first; a quiet gateway's lines wait no longer. */
const FLUSH_MS = 100

/** Batches lines for `out`; what is pending is written synchronously when the process exits. */
export function createLineBatch (out: Destination, { flushMs = FLUSH_MS, batchBytes = BATCH_BYTES } = {}): DestinationStream & { flush (cb?: (err?: Error) => void): void } {
  let lines: string[] = []
  let bytes = 0
  const drain = (): void => {
    if (lines.length === 0) return
    const batch = lines.join('')
    lines = []
    bytes = 0
    out.write(batch)
  }
  setInterval(drain, flushMs).unref()
  process.on('exit', () => { drain(); out.flushSync() })
  return {
    write (line: string) {
      const size = Buffer.byteLength(line)
      if (bytes + size > batchBytes) drain()
      lines.push(line)
      bytes += size
    },
    flush (cb?: (err?: Error) => void) {
      drain()
      out.flush(cb)
    },
  }
}

export function createLogger (settings: LoggerSettings = {}): Logger {
  const options = loggerOptions(settings.level)
  if (settings.pretty === true) return pino({ ...options, transport: { target: 'pino-pretty', options: { destination: 2 } } })
  const batchBytes = settings.sharedStdout === true ? PIPE_BUF : BATCH_BYTES
  // maxWrite: sonic-boom neither splits a batch nor merges two.
  return pino(options, createLineBatch(pino.destination({ dest: 1, sync: true, maxWrite: batchBytes }), { batchBytes }))
}

/** A logger that writes nothing: the default for embedded use and tests. */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
