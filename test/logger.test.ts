/** Log lines leave in whole-line batches of at most PIPE_BUF bytes, soon, and all of them. */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import pino from 'pino'
import { createLineBatch, PIPE_BUF } from '../src/observability/logger'

test('batches hold whole lines, at most PIPE_BUF (4096) bytes each when stdout is shared, and a quiet logger is flushed within the interval', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-log-'))
  const file = path.join(dir, 'out.log')
  const destination = pino.destination({ dest: file, sync: false, maxWrite: 4096 })
  await new Promise(resolve => destination.once('ready', resolve))
  const writes: string[] = []
  const write = destination.write.bind(destination)
  destination.write = (data: string) => { writes.push(data); return write(data) }
  const log = pino({ base: undefined }, createLineBatch(destination, { flushMs: 50, batchBytes: PIPE_BUF }))
  for (let i = 0; i < 500; i++) log.info({ i, pad: 'x'.repeat(i % 97) }, 'line')
  await new Promise(resolve => setTimeout(resolve, 200))
  expect(writes.length).toBeGreaterThan(1)
  for (const batch of writes) {
    expect(Buffer.byteLength(batch)).toBeLessThanOrEqual(4096)
    expect(batch.endsWith('\n')).toBe(true)
  }
  await new Promise<void>((resolve, reject) => destination.flush((err) => { if (err) reject(err); else resolve() }))
  const lines = fs.readFileSync(file, 'utf8').trim().split('\n').map(l => JSON.parse(l) as { i: number })
  expect(lines.map(l => l.i)).toEqual(Array.from({ length: 500 }, (_, i) => i))
  destination.end()
  fs.rmSync(dir, { recursive: true, force: true })
})

test('what is still batched when the process exits is written', () => {
  const script = `
    require('tsx/cjs')
    const pino = require('pino')
    const { createLineBatch } = require(${JSON.stringify(path.join(__dirname, '..', 'src', 'observability', 'logger.ts'))})
    const log = pino({ base: undefined }, createLineBatch(pino.destination({ dest: 1, sync: true }), { flushMs: 60000 }))
    for (let i = 0; i < 3; i++) log.info({ i }, 'pending')
    process.exit(0)
  `
  const r = spawnSync(process.execPath, ['-e', script], { cwd: path.join(__dirname, '..'), encoding: 'utf8' })
  expect(r.stderr).toBe('')
  expect(r.stdout.trim().split('\n').map(l => (JSON.parse(l) as { i: number }).i)).toEqual([0, 1, 2])
})
