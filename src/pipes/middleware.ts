/**
 * Any Express/connect middleware (`cors`, `helmet`, …) as an inbound pipe:
 * it runs on the Node request and response; calling `next()` continues the
 * pipeline, `next(err)` fails the request, and answering ends it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { GatewayError } from '../errors'
import { Respond } from './context'
import type { PipeDefinition } from './types'

export type ConnectMiddleware = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void

/** Answered by the middleware itself: nothing more to send. */
const ALREADY_ANSWERED = new Respond(0, Buffer.alloc(0), {})

export function fromMiddleware<P = Record<string, unknown>> (
  name: string,
  factory: (properties: P) => ConnectMiddleware,
  schema?: object,
): PipeDefinition<P> {
  return {
    name,
    phase: 'inbound',
    schema,
    create (properties) {
      const middleware = factory(properties)
      return (ctx) => new Promise<void>((resolve, reject) => {
        const { req, res } = ctx.raw
        const onFinish = (): void => reject(ALREADY_ANSWERED)
        res.once('finish', onFinish)
        try {
          middleware(req, res, (err?: unknown) => {
            res.off('finish', onFinish)
            if (err === undefined || err === null || err === 'route') { resolve(); return }
            const status = (err as { status?: number, statusCode?: number }).status ?? (err as { statusCode?: number }).statusCode
            reject(typeof status === 'number' && status >= 400 && status < 500
              ? new GatewayError('BadRequest', (err as Error).message, { status })
              : err)
          })
        } catch (err) {
          res.off('finish', onFinish)
          reject(err)
        }
      })
    },
  }
}

export function isAlreadyAnswered (signal: unknown): boolean {
  return signal === ALREADY_ANSWERED
}
