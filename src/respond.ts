/** Writing the gateway's own answers: the JSON error body of http.md "Errors". */
import type { ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { STATUS_CODES } from 'node:http'
import { errorBody, type GatewayError } from './errors'

export function sendError (res: ServerResponse, err: GatewayError, requestId: string | undefined, isHead = false): void {
  if (res.headersSent) { res.destroy(); return }
  const body = errorBody(err, requestId)
  res.statusCode = err.status
  res.setHeader('content-type', 'application/json; charset=utf-8')
  res.setHeader('content-length', Buffer.byteLength(body))
  if (err.headers !== undefined) for (const name in err.headers) res.setHeader(name, err.headers[name])
  // An unread oversized body is not worth draining: close the connection instead.
  if (err.status === 413) res.setHeader('connection', 'close')
  res.end(isHead ? undefined : body)
}

/** The same error, written by hand on a socket that asked for an upgrade. */
export function sendUpgradeError (socket: Duplex, err: GatewayError, requestId: string | undefined): void {
  if (!socket.writable) { socket.destroy(); return }
  const body = errorBody(err, requestId)
  let head = `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? ''}\r\n` +
    'content-type: application/json; charset=utf-8\r\n' +
    `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n`
  if (requestId !== undefined) head += `x-request-id: ${requestId}\r\n`
  if (err.headers !== undefined) for (const name in err.headers) head += `${name}: ${err.headers[name]}\r\n`
  socket.end(head + '\r\n' + body)
}
