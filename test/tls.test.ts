/** TLS: terminated on the gateway port, and to HTTPS upstreams with a private CA and a client certificate (mTLS). */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import https from 'node:https'
import { execFileSync } from 'node:child_process'
import type { AddressInfo } from 'node:net'
import { startGateway } from './support/gateway'
import { startUpstream } from './support/upstream'

let dir: string
const file = (name: string): string => path.join(dir, name)
const read = (name: string): Buffer => fs.readFileSync(file(name))

/** A CA, and certificates it signs: one for 127.0.0.1 (servers), one for the gateway as a client. */
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-tls-'))
  const openssl = (...args: string[]): void => { execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' }) }
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=sluice test CA')
  fs.writeFileSync(file('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n')
  for (const name of ['server', 'client']) {
    openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`)
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '1', '-extfile', 'san.ext')
  }
})
afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }) })

function httpsGet (url: string, options: https.RequestOptions = {}): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    https.get(url, options, (res) => {
      let body = ''
      res.on('data', (c) => { body += String(c) })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    }).on('error', reject)
  })
}

async function mtlsUpstream (): Promise<{ url: string, close (): Promise<void> }> {
  const server = https.createServer({ key: read('server.key'), cert: read('server.pem'), ca: read('ca.pem'), requestCert: true, rejectUnauthorized: true }, (req, res) => {
    const peer = (req.socket as import('node:tls').TLSSocket).getPeerCertificate()
    res.end(`hello ${peer.subject?.CN ?? 'nobody'} at ${req.url}`)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }) }
}

test('HTTPS end to end: TLS terminated at the gateway, a plain upstream behind it', async () => {
  const up = await startUpstream((req, res) => { res.end(`plain ${req.headers['x-forwarded-proto']}`) })
  const gw = await startGateway(`version: 1
server:
  tls: { cert: ${file('server.pem')}, key: ${file('server.key')} }
services:
  api:
    instances: [{ url: ${up.url} }]
routes:
  - { name: r, service_name: api, methods: [GET], path: /r, upstream_path: /r }
`)
  try {
    const res = await httpsGet(`https://127.0.0.1:${gw.port}/r`, { ca: read('ca.pem') })
    expect(res).toEqual({ status: 200, body: 'plain https' })
    await expect(httpsGet(`https://127.0.0.1:${gw.port}/r`)).rejects.toThrow(/self-signed|unable to verify|certificate/i)
  } finally { await gw.close(); await up.close() }
})

test('an HTTPS upstream with a private CA and a client certificate (mTLS)', async () => {
  const up = await mtlsUpstream()
  const gw = await startGateway(`version: 1
services:
  secure:
    instances: [{ url: ${up.url} }]
    tls: { ca: ${file('ca.pem')}, cert: ${file('client.pem')}, key: ${file('client.key')} }
  nocert:
    instances: [{ url: ${up.url} }]
    tls: { ca: ${file('ca.pem')} }
routes:
  - { name: s, service_name: secure, methods: [GET], path: /s, upstream_path: /inside }
  - { name: n, service_name: nocert, methods: [GET], path: /n, upstream_path: /inside }
`)
  try {
    const ok = await startGatewayGet(gw.url + '/s')
    expect(ok).toEqual({ status: 200, body: 'hello client at /inside' })
    const refused = await startGatewayGet(gw.url + '/n')
    expect(refused.status).toBe(502)
    expect(JSON.parse(refused.body).error_code).toBe('UpstreamUnreachable')
  } finally { await gw.close(); await up.close() }
})

test('an upstream certificate the CA did not sign is refused unless reject_unauthorized is false', async () => {
  const server = https.createServer({ key: read('server.key'), cert: read('server.pem') }, (_req, res) => { res.end('reached') })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`
  const gw = await startGateway(`version: 1
services:
  strict:
    instances: [{ url: ${url} }]
  lax:
    instances: [{ url: ${url} }]
    tls: { reject_unauthorized: false }
routes:
  - { name: strict, service_name: strict, methods: [GET], path: /strict, upstream_path: / }
  - { name: lax, service_name: lax, methods: [GET], path: /lax, upstream_path: / }
`)
  try {
    expect((await startGatewayGet(gw.url + '/strict')).status).toBe(502)
    expect(await startGatewayGet(gw.url + '/lax')).toEqual({ status: 200, body: 'reached' })
  } finally { await gw.close(); server.closeAllConnections(); server.close() }
})

function startGatewayGet (url: string): Promise<{ status: number, body: string }> {
  return fetch(url).then(async (r) => ({ status: r.status, body: await r.text() }))
}
