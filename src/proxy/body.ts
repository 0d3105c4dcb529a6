/**
 * Request bodies: streamed by default; buffered (within the limit) only when a
 * placeholder or a pipe needs to read them, and then the same bytes go on.
 */
import { Transform, type TransformCallback } from 'node:stream'
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import { GatewayError } from '../errors'

export function tooLarge (limit: number): GatewayError {
  return new GatewayError('PayloadTooLarge', `request body is larger than ${limit} bytes`)
}

/**
 * Whether the request carries a body by its framing (RFC 9112 §6.3): a
 * Transfer-Encoding, or a Content-Length other than 0. Read from the headers
 * the upstream will be sent, as pipes left them.
 */
export function hasBody (headers: IncomingHttpHeaders): boolean {
  return headers['transfer-encoding'] !== undefined || (headers['content-length'] !== undefined && headers['content-length'] !== '0')
}

/** True when the declared Content-Length is over the limit (the body is then never read). */
export function declaredTooLarge (req: IncomingMessage, limit: number): boolean {
  const length = req.headers['content-length']
  return length !== undefined && Number(length) > limit
}

/** Reads the whole body, refusing it with 413 as soon as it passes `limit`. */
export function readBody (req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (declaredTooLarge(req, limit)) { reject(tooLarge(limit)); return }
    const chunks: Buffer[] = []
    let size = 0
    const onData = (chunk: Buffer): void => {
      size += chunk.length
      if (size > limit) { cleanup(); reject(tooLarge(limit)); return }
      chunks.push(chunk)
    }
    const onEnd = (): void => { cleanup(); resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size)) }
    const onError = (err: Error): void => { cleanup(); reject(err) }
    const onClose = (): void => { if (!req.complete) { cleanup(); reject(new Error('client closed the request')) } }
    function cleanup (): void {
      req.off('data', onData); req.off('end', onEnd); req.off('error', onError); req.off('close', onClose)
    }
    req.on('data', onData); req.on('end', onEnd); req.on('error', onError); req.on('close', onClose)
  })
}

/**
 * Passes a streamed (chunked) body through while counting it; past `limit`
 * it fails with a 413 so the upstream request is aborted before it completes.
 */
export class LimitStream extends Transform {
  private seen = 0
  constructor (private readonly limit: number) { super() }

  override _transform (chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.seen += chunk.length
    if (this.seen > this.limit) done(tooLarge(this.limit))
    else done(null, chunk)
  }
}

/**
 * Reads a response body up to `limit` bytes. `complete` is false when the
 * body is larger: the stream is then paused after the chunks returned, and
 * the caller sends those chunks followed by the rest, untouched.
 */
export function readUpTo (stream: IncomingMessage, limit: number): Promise<{ chunks: Buffer[], size: number, complete: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk)
      size += chunk.length
      if (size > limit) { cleanup(); stream.pause(); resolve({ chunks, size, complete: false }) }
    }
    const onEnd = (): void => { cleanup(); resolve({ chunks, size, complete: true }) }
    const onError = (err: Error): void => { cleanup(); reject(err) }
    const onClose = (): void => { if (!stream.complete) { cleanup(); reject(new Error('upstream closed the response')) } }
    function cleanup (): void {
      stream.off('data', onData); stream.off('end', onEnd); stream.off('error', onError); stream.off('close', onClose)
    }
    stream.on('data', onData); stream.on('end', onEnd); stream.on('error', onError); stream.on('close', onClose)
  })
}
