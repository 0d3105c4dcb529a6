'use strict'
// The bench upstream: answers every request 200 with the same small JSON body.
// It must cost as little as possible and the same for every target, so the
// proxies' CPU is what differs between runs: no routing, no per-request
// allocation beyond what node:http itself does.
//
//   module:  const { port, close } = await startUpstream({ port: 0 })
//   script:  node bench/upstream.js [port]   → prints "listening <port>"
const http = require('node:http')

const BODY = Buffer.from('{"ok":true,"service":"bench","items":[1,2,3]}')
const HEADERS = {
  'content-type': 'application/json',
  // A fixed length keeps the response un-chunked, so the proxy only relays bytes.
  'content-length': String(BODY.length),
}

function startUpstream ({ port = 0, host = '127.0.0.1' } = {}) {
  const server = http.createServer((req, res) => {
    // Drain a request body if one is sent, so a keep-alive connection stays usable.
    req.resume()
    res.writeHead(200, HEADERS)
    res.end(BODY)
  })
  // Targets sit idle for whole seconds while the others are measured. With
  // Node's 5 s default the upstream would close the proxies' pooled sockets in
  // between, and a proxy reusing one just as it closes sees ECONNRESET: an
  // error the bench would blame on the proxy.
  server.keepAliveTimeout = 10 * 60 * 1000
  server.headersTimeout = server.keepAliveTimeout + 1000
  server.requestTimeout = 0

  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve({
        port: server.address().port,
        close: () => new Promise((done) => {
          server.close(() => done())
          server.closeAllConnections()
        }),
      })
    })
  })
}

module.exports = { startUpstream, BODY }

if (require.main === module) {
  const port = Number(process.argv[2] || 0)
  startUpstream({ port }).then(
    (up) => {
      process.stdout.write(`listening ${up.port}\n`)
      const stop = () => up.close().then(() => process.exit(0))
      process.on('SIGTERM', stop)
      process.on('SIGINT', stop)
    },
    (err) => {
      process.stderr.write(`upstream: ${err.message}\n`)
      process.exit(2)
    },
  )
}
