/**
 * `request-validate`: JSON Schemas for the body, the query and the headers,
 * compiled by ajv once at load. A refusal is 400 ValidationFailed whose
 * `errors` lists every ajv error (ajv's allErrors), capped at MAX_ERRORS.
 */
import Ajv, { type ErrorObject, type ValidateFunction } from 'ajv'
import addFormats from 'ajv-formats'
import { GatewayError } from '../../errors'
import { definePipe, type PipeContext } from '../types'

interface RequestValidateProperties {
  body?: Record<string, unknown>
  query?: Record<string, unknown>
  headers?: Record<string, unknown>
}

type Location = 'body' | 'query' | 'headers'

export interface ValidationErrorEntry {
  location: Location
  instancePath: string
  keyword: string
  message: string
  /** ajv's details, e.g. { additionalProperty: 'admin' } or { missingProperty: 'name' } */
  params: Record<string, unknown>
}

// A hostile body can make allErrors list one error per array item; the
// answer stays bounded whatever the body.
const MAX_ERRORS = 100
const JSON_MEDIA_TYPE = /^application\/(?:[\w.!#$&^-]+\+)?json\s*(?:;|$)/i

// strictSchema catches misspelt keywords (`minlength`) at load; strictTypes
// would also refuse ordinary schemas that omit `type: object`, so it is off.
// One ajv per placement: ajv keeps every schema it compiled and refuses a
// second schema with the same $id, which a reload or a second route would be.
const ajvOptions = { allErrors: true, strictSchema: true, strictNumbers: true, strictTypes: false, strictTuples: false, strictRequired: false } as const

/** JSON bodies keep their types. */
function bodyCompiler (): Ajv {
  return addFormats(new Ajv(ajvOptions))
}

/**
 * Query and header values are strings; coercion lets a schema say
 * `type: integer`, or `type: array` for a key that may appear once. Only the
 * copy made for validation is coerced: the upstream gets the client's bytes.
 */
function textCompiler (): Ajv {
  return addFormats(new Ajv({ ...ajvOptions, coerceTypes: 'array' }))
}

function compile (ajv: Ajv, schema: object, property: Location): ValidateFunction {
  try {
    return ajv.compile(schema)
  } catch (err) {
    throw new Error(`${property}: the JSON Schema does not compile: ${(err as Error).message}`)
  }
}

/** Header names arrive lower-cased; a schema written with `X-Api-Version` should still mean that header. */
function lowerCaseHeaderNames (schema: Record<string, unknown>): Record<string, unknown> {
  const copy: Record<string, unknown> = structuredClone(schema)
  const properties = copy.properties
  if (properties !== null && typeof properties === 'object' && !Array.isArray(properties)) {
    copy.properties = Object.fromEntries(Object.entries(properties).map(([k, v]) => [k.toLowerCase(), v]))
  }
  if (Array.isArray(copy.required)) copy.required = copy.required.map(r => typeof r === 'string' ? r.toLowerCase() : r)
  return copy
}

function entries (location: Location, errors: ErrorObject[] | null | undefined): ValidationErrorEntry[] {
  return (errors ?? []).map(e => ({ location, instancePath: e.instancePath, keyword: e.keyword, message: e.message ?? 'is invalid', params: e.params }))
}

/** Repeated keys become arrays; a null prototype so `__proto__` is just a key. */
function queryObject (query: URLSearchParams): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = Object.create(null)
  for (const [key, value] of query) {
    const prior = out[key]
    out[key] = prior === undefined ? value : Array.isArray(prior) ? [...prior, value] : [prior, value]
  }
  return out
}

function headersObject (headers: PipeContext['request']['headers']): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = Object.create(null)
  for (const [name, value] of Object.entries(headers)) if (value !== undefined) out[name] = Array.isArray(value) ? [...value] : value
  return out
}

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true })

/** The body as JSON, or the one error entry saying why it is not. */
async function readJson (ctx: PipeContext): Promise<{ value: unknown } | ValidationErrorEntry> {
  const bytes = await ctx.request.body()
  const at = { location: 'body' as const, instancePath: '', params: {} }
  if (bytes.length === 0) return { ...at, keyword: 'required', message: 'must have a JSON body' }
  // The upstream reads the body by its Content-Type: a form or text body
  // that happens to parse as JSON here would be validated as one thing and
  // understood as another.
  const type = ctx.request.headers['content-type']
  if (type === undefined || !JSON_MEDIA_TYPE.test(type)) {
    return { ...at, keyword: 'contentType', message: 'must be sent with Content-Type: application/json' }
  }
  let text: string
  try {
    // Invalid UTF-8 is refused rather than replaced with U+FFFD, which the
    // upstream's decoder might not do the same way (RFC 8259 §8.1).
    text = fatalUtf8.decode(bytes)
  } catch {
    return { ...at, keyword: 'json', message: 'is not valid JSON: invalid UTF-8' }
  }
  try {
    return { value: JSON.parse(text) }
  } catch (err) {
    return { ...at, keyword: 'json', message: `is not valid JSON: ${(err as Error).message}` }
  }
}

const SCHEMA = { type: 'object', description: 'a JSON Schema (draft-07 / 2019-09 keywords ajv knows; formats from ajv-formats)' }

export default definePipe<RequestValidateProperties>({
  name: 'request-validate',
  phase: 'inbound',
  schema: {
    type: 'object',
    description: 'Refuses with 400 ValidationFailed a request whose body, query or headers do not match their JSON Schema; ' +
      '`errors` lists each problem as {location, instancePath, keyword, message, params} (at most 100). body: the request must ' +
      'carry a JSON body (Content-Type application/json or */*+json, UTF-8) — it is buffered within the server body ' +
      'limit (put request-size first for a tighter one) and the same bytes go upstream. query: an object of strings, ' +
      'arrays for repeated keys. headers: lower-case names (property names in the schema are lower-cased), the headers ' +
      'as they go upstream at this point. Query and header values are coerced to the schema\'s types for checking only.',
    properties: {
      body: { ...SCHEMA, description: 'JSON Schema of the parsed JSON body' },
      query: { ...SCHEMA, description: 'JSON Schema of the query, e.g. {type: object, required: [q], properties: {limit: {type: integer}}}' },
      headers: { ...SCHEMA, description: 'JSON Schema of the headers, e.g. {required: [x-api-version]}' },
    },
    additionalProperties: false,
  },
  create (props) {
    if (props.body === undefined && props.query === undefined && props.headers === undefined) {
      throw new Error('set at least one of body, query or headers')
    }
    const body = props.body === undefined ? undefined : compile(bodyCompiler(), props.body, 'body')
    let text: Ajv | undefined
    const query = props.query === undefined ? undefined : compile(text ??= textCompiler(), props.query, 'query')
    const headers = props.headers === undefined ? undefined : compile(text ??= textCompiler(), lowerCaseHeaderNames(props.headers), 'headers')

    return async (ctx: PipeContext) => {
      const errors: ValidationErrorEntry[] = []
      if (query !== undefined && !query(queryObject(ctx.request.query))) errors.push(...entries('query', query.errors))
      if (headers !== undefined && !headers(headersObject(ctx.request.headers))) errors.push(...entries('headers', headers.errors))
      if (body !== undefined) {
        const parsed = await readJson(ctx)
        if (!('value' in parsed)) errors.push(parsed)
        else if (!body(parsed.value)) errors.push(...entries('body', body.errors))
      }
      if (errors.length === 0) return
      const first = errors[0]
      const more = errors.length > 1 ? ` (and ${errors.length - 1} more)` : ''
      throw new GatewayError('ValidationFailed', `${first.location}${first.instancePath} ${first.message}${more}`, {
        extra: { errors: errors.slice(0, MAX_ERRORS) },
      })
    }
  },
})
