'use strict'
// Resolves the package's own modules: the compiled dist/ (what a published
// package ships and what `npm install` builds in a checkout), or, in a
// checkout whose src/ was edited after the last build, the TypeScript
// sources through tsx. dist/ is preferred because tsx's CommonJS output
// turns every export into a getter, which the hot path pays on each request.
// tsx is registered either way so custom pipes may be written in .ts.
const path = require('node:path')
const fs = require('node:fs')

require('tsx/cjs/api').register()

const src = path.join(__dirname, 'src')
const dist = path.join(__dirname, 'dist')

function newestMtime (dir) {
  let newest = 0
  for (const name of fs.readdirSync(dir, { recursive: true })) {
    if (!String(name).endsWith('.ts')) continue
    newest = Math.max(newest, fs.statSync(path.join(dir, String(name))).mtimeMs)
  }
  return newest
}

function useDist () {
  if (!fs.existsSync(path.join(dist, 'cli.js'))) return false
  if (!fs.existsSync(src)) return true
  return fs.statSync(path.join(dist, 'cli.js')).mtimeMs >= newestMtime(src)
}

const root = useDist() ? dist : src

module.exports = (name) => require(path.join(root, name))
