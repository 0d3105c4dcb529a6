/** One table of error codes: every code the gateway can produce is documented with its status. */
import fs from 'node:fs'
import path from 'node:path'
import { ERROR_CODES, GatewayError, errorBody } from '../src/errors'

const readme = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8')
const documented = new Map([...readme.matchAll(/^\| (\d{3}) \| `(\w+)` \|/gm)].map(m => [m[2], Number(m[1])]))

test.each(Object.entries(ERROR_CODES))('%s is in the README\'s error table with its status', (code, { status }) => {
  expect(documented.get(code)).toBe(status)
})

test('the README documents no code the gateway does not have', () => {
  for (const code of documented.keys()) expect(Object.keys(ERROR_CODES)).toContain(code)
})

test('a GatewayError takes status and default message from the table', () => {
  const err = new GatewayError('UpstreamTimeout')
  expect(err.status).toBe(504)
  expect(JSON.parse(errorBody(err, 'rid'))).toEqual({ error_code: 'UpstreamTimeout', error_message: ERROR_CODES.UpstreamTimeout.message, request_id: 'rid' })
})
