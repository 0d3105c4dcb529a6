/**
 * Values for `upstream_path` placeholders that are not in `path`, looked up
 * in the order config.md gives: request header (case-insensitive), query
 * string, form field (urlencoded or multipart), top-level JSON body field.
 */
import type { IncomingMessage } from 'node:http'
import busboy from 'busboy'

/** Fills `values` from headers and query; returns the names still missing. */
export function fromHeadersAndQuery (names: readonly string[], req: IncomingMessage, query: string, values: Record<string, string>): string[] {
  const missing: string[] = []
  let search: URLSearchParams | undefined
  for (const name of names) {
    const header = req.headers[name.toLowerCase()]
    if (typeof header === 'string') { values[name] = header; continue }
    search ??= new URLSearchParams(query)
    const fromQuery = search.get(name)
    if (fromQuery !== null) { values[name] = fromQuery; continue }
    missing.push(name)
  }
  return missing
}

export function bodyCanHold (req: IncomingMessage): boolean {
  const type = req.headers['content-type'] ?? ''
  return /^(application\/x-www-form-urlencoded|multipart\/form-data|application\/(?:[\w.+-]+\+)?json)\b/i.test(type)
}

/** Fills `values` from a buffered body; returns the names still missing. */
export async function fromBody (names: readonly string[], req: IncomingMessage, body: Buffer, values: Record<string, string>): Promise<string[]> {
  const type = (req.headers['content-type'] ?? '').toLowerCase()
  let fields: Map<string, string>
  if (type.startsWith('application/x-www-form-urlencoded')) {
    fields = new Map(new URLSearchParams(body.toString('utf8')))
  } else if (type.startsWith('multipart/form-data')) {
    fields = await multipartFields(req, body)
  } else {
    fields = jsonFields(body)
  }
  return names.filter(name => {
    const value = fields.get(name)
    if (value === undefined) return true
    values[name] = value
    return false
  })
}

function jsonFields (body: Buffer): Map<string, string> {
  const fields = new Map<string, string>()
  let parsed: unknown
  try { parsed = JSON.parse(body.toString('utf8')) } catch { return fields }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return fields
  for (const [key, value] of Object.entries(parsed)) {
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') fields.set(key, String(value))
  }
  return fields
}

function multipartFields (req: IncomingMessage, body: Buffer): Promise<Map<string, string>> {
  return new Promise((resolve) => {
    const fields = new Map<string, string>()
    let parser: busboy.Busboy
    try { parser = busboy({ headers: req.headers }) } catch { resolve(fields); return }
    parser.on('field', (name, value) => { if (!fields.has(name)) fields.set(name, value) })
    parser.on('file', (_name, stream) => stream.resume())
    parser.on('close', () => resolve(fields))
    parser.on('error', () => resolve(fields))
    parser.end(body)
  })
}
