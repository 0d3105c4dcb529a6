'use strict'
// The floor (../shared/PERFORMANCE.md): the least any http-proxy based gateway
// can cost — node:http + http-proxy 1.18.1 through a keep-alive agent, and
// nothing else. Sluice is reported as a ratio to this, measured in the same run.
//
//   node bench/floor.js <listenPort> <targetUrl>   → prints "listening <port>"
const http = require('node:http')
const httpProxy = require('http-proxy')

const [listenPort = '0', target] = process.argv.slice(2)
if (!target) {
  process.stderr.write('usage: node bench/floor.js <listenPort> <targetUrl>\n')
  process.exit(1)
}

// Without keepAlive every proxied request would open a new upstream socket,
// and the floor would mostly measure connect().
const agent = new http.Agent({ keepAlive: true })
const proxy = httpProxy.createProxyServer({ agent, target })
proxy.on('error', (err, req, res) => {
  if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' })
  res.end(`bad gateway: ${err.code || err.message}\n`)
})

const server = http.createServer((req, res) => proxy.web(req, res))
server.listen(Number(listenPort), '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`)
})
