'use strict'
// The example services `npm start` brings up behind the gateway: a "users"
// service with two instances (so round-robin is visible) and an "echo"
// service that shows what the gateway sent upstream. Plain node:http.
const http = require('node:http')

function json (res, status, value) {
  const body = JSON.stringify(value)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

function usersService (instance) {
  return http.createServer((req, res) => {
    const m = /^\/v1\/users\/(\d+)$/.exec(req.url.split('?')[0])
    if (req.url === '/healthz') return json(res, 200, { ok: true })
    if (req.url.split('?')[0] === '/v1/users') return json(res, 200, { items: [{ id: 1, name: 'Ada' }, { id: 2, name: 'Grace' }], served_by: instance })
    if (m === null) return json(res, 404, { error: 'no such user path' })
    json(res, 200, { id: Number(m[1]), name: `User ${m[1]}`, served_by: instance })
  })
}

function echoService () {
  return http.createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => json(res, 200, { method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') }))
  })
}

/** Starts the example services; port 0 picks free ports (tests), the defaults match routes.yaml. */
async function startExampleServices (ports = { users1: 9001, users2: 9002, echo: 9003 }) {
  const servers = { users1: usersService('users-1'), users2: usersService('users-2'), echo: echoService() }
  const urls = {}
  for (const [name, server] of Object.entries(servers)) {
    await new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(ports[name], '127.0.0.1', resolve)
    })
    urls[name] = `http://127.0.0.1:${server.address().port}`
  }
  return {
    urls,
    close: () => Promise.all(Object.values(servers).map((s) => new Promise((resolve) => { s.closeAllConnections(); s.close(resolve) }))),
  }
}

module.exports = { startExampleServices }

if (require.main === module) {
  startExampleServices().then(({ urls }) => console.error(`example services: ${JSON.stringify(urls)}`))
}
