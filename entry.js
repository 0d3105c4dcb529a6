'use strict'
// Resolves the package's own modules: the TypeScript sources in a checkout
// (run through tsx, so no build step), the compiled dist/ in a published
// package. tsx is registered either way so custom pipes may be written in .ts.
const path = require('node:path')
const fs = require('node:fs')

require('tsx/cjs/api').register()
const root = fs.existsSync(path.join(__dirname, 'src', 'index.ts'))
  ? path.join(__dirname, 'src')
  : path.join(__dirname, 'dist')

module.exports = (name) => require(path.join(root, name))
