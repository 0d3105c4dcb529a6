'use strict'
// `npm start`: the example services, then the gateway on :8080 with the
// shipped routes.yaml. Ctrl-C stops both.
const { spawn } = require('node:child_process')
const path = require('node:path')
const { startExampleServices } = require('./services')

async function main () {
  const services = await startExampleServices()
  console.error(`example services up: ${Object.values(services.urls).join(', ')}`)
  const gateway = spawn(process.execPath, [path.join(__dirname, '..', 'bin', 'sluice.js'), 'start', '-c', path.join(__dirname, '..', 'routes.yaml'), ...process.argv.slice(2)], { stdio: 'inherit' })
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => gateway.kill(signal))
  gateway.on('exit', async (code) => {
    await services.close()
    process.exit(code ?? 0)
  })
}

main().catch((err) => { console.error(`npm start: ${err.message}`); process.exit(2) })
