#!/usr/bin/env node
'use strict'
require('../entry.js')('cli').main(process.argv.slice(2)).then(
  (code) => { if (typeof code === 'number') process.exitCode = code },
  (err) => { process.stderr.write(`sluice: ${err && err.message ? err.message : err}\n`); process.exit(2) },
)
