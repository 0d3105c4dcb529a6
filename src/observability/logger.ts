/** Logs are objects first, message second (pino); secrets are redacted by path. */
import pino, { type Logger } from 'pino'

export type { Logger }

export const REDACT_PATHS = [
  'req.headers.authorization', 'req.headers.cookie', 'req.headers["proxy-authorization"]', 'req.headers["x-api-key"]',
  'res.headers["set-cookie"]', 'config.admin.token', 'config.admin.registry_token',
]

export function createLogger (options: { level?: string, pretty?: boolean } = {}): Logger {
  const level = options.level ?? process.env.LOG_LEVEL ?? 'info'
  const base = { level, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, base: undefined }
  if (options.pretty === true) return pino({ ...base, transport: { target: 'pino-pretty', options: { destination: 2 } } })
  return pino(base)
}

/** A logger that writes nothing: the default for embedded use and tests. */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
