/**
 * `sluice explain`: what the gateway would do with a request, worked out on
 * the compiled generation with the same functions the data plane uses —
 * nothing is sent.
 */
import type { Generation } from './gateway'
import { GatewayError, isGatewayError } from './errors'
import { fromHeadersAndQuery } from './routing/extra-params'
import { checkValue } from './routing/params'

export interface Explanation {
  status: number
  route?: string
  service?: string
  params?: Record<string, string>
  pipes?: { inbound: string[], outbound: string[] }
  upstream?: string[]
  error?: { code: string, message: string }
  headers?: Record<string, string>
}

export function explainRequest (gen: Generation, method: string, target: string, headers: Record<string, string>): Explanation {
  // A full URL is accepted; only its path and query matter.
  const url = /^https?:\/\//i.test(target) ? target.replace(/^https?:\/\/[^/?#]*/i, '') || '/' : target
  const q = url.indexOf('?')
  const path = q === -1 ? url : url.slice(0, q)
  const query = q === -1 ? '' : url.slice(q)
  const match = gen.table.find(method, path)
  if (match === null) {
    const why = gen.table.explainMiss(path, query)
    if (why.kind === 'redirect') return { status: 308, headers: { location: why.location } }
    const err = why.kind === 'method'
      ? new GatewayError('MethodNotAllowed', `method ${method} is not allowed here (allowed: ${why.allow})`, { headers: { allow: why.allow } })
      : why.kind === 'bad-url' ? new GatewayError('BadRequest', 'the URL is not validly percent-encoded') : new GatewayError('RouteNotFound')
    return { status: err.status, error: { code: err.code, message: err.message }, headers: err.headers }
  }
  const route = match.route
  const global = gen.loaded.config.global
  const base: Explanation = {
    status: 0,
    route: route.name,
    service: route.service.name,
    params: { ...match.params },
    pipes: {
      inbound: [...global.inbound, ...route.config.pipelines.inbound].map(p => p.name),
      outbound: [...route.config.pipelines.outbound, ...global.outbound].map(p => p.name),
    },
  }
  try {
    const fake = { headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v])) }
    const values = { ...match.params }
    const missing = fromHeadersAndQuery(route.extraParams, fake as never, query.slice(1), values)
    if (missing.length > 0) {
      throw new GatewayError('MissingParameter', `no value for placeholder "${missing[0]}" in headers or query; a form or JSON body field of that name would supply it`)
    }
    for (const [name, isPath] of route.checks) checkValue(name, values[name], isPath)
    base.params = values
    const upstreamPath = route.upstreamPath(values) + query
    base.upstream = route.service.instances.map(i => i.url.replace(/\/$/, '') + upstreamPath)
    return base
  } catch (err) {
    if (!isGatewayError(err)) throw err
    return { ...base, status: err.status, error: { code: err.code, message: err.message } }
  }
}
