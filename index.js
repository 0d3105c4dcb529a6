'use strict'
// `require('sluice')`: the public API (createGateway, definePipe, types).
module.exports = require('./entry.js')('index')
