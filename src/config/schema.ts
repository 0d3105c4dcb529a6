/**
 * The shipped JSON Schema (schema/routes.schema.json — the same file editors
 * use) applied with ajv: defaults filled in, every error turned into one
 * readable issue at the node it is about.
 */
import fs from 'node:fs'
import path from 'node:path'
import Ajv, { type ErrorObject, type ValidateFunction } from 'ajv'
import { closestName, didYouMean } from './suggest'
import type { Issue, YamlPath } from './problems'

/** Same relative place from src/config/ in a checkout and dist/config/ in the package. */
export const SCHEMA_FILE = path.join(__dirname, '..', '..', 'schema', 'routes.schema.json')

/**
 * Strict ajv that knows the schema's editor hints: `errorMessage` (VS Code,
 * yaml-language-server) and `patternErrorMessage` are annotations to ajv,
 * and this code reads them to word its own messages.
 */
export function createSchemaAjv (): Ajv {
  const ajv = new Ajv({ strict: true, allErrors: true, useDefaults: true, verbose: true })
  ajv.addKeyword({ keyword: 'errorMessage', schemaType: 'string' })
  ajv.addKeyword({ keyword: 'patternErrorMessage', schemaType: 'string' })
  return ajv
}

let compiled: ValidateFunction | undefined

function validator (): ValidateFunction {
  compiled ??= createSchemaAjv().compile(JSON.parse(fs.readFileSync(SCHEMA_FILE, 'utf8')) as object)
  return compiled
}

/** What the schema said about the data, and which parts cross-checks may trust. */
export class SchemaVerdict {
  readonly issues: Issue[]
  private readonly errors: ReadonlyArray<{ pointer: string, keyword: string }>

  constructor (private readonly data: unknown, errors: ErrorObject[]) {
    this.errors = errors.map(e => ({ pointer: e.instancePath, keyword: e.keyword }))
    this.issues = describeErrors(errors, data)
  }

  /** The value exists and has the schema's type (its descendants may still be wrong). */
  typed (yamlPath: YamlPath): boolean {
    const pointer = toPointer(yamlPath)
    return valueAt(this.data, yamlPath) !== undefined &&
      !this.errors.some(e => e.keyword === 'type' && (pointer === e.pointer || pointer.startsWith(e.pointer + '/')))
  }

  /** The value exists and nothing at or below it broke the schema. */
  valid (yamlPath: YamlPath): boolean {
    const pointer = toPointer(yamlPath)
    return this.typed(yamlPath) &&
      !this.errors.some(e => e.pointer === pointer || e.pointer.startsWith(pointer + '/'))
  }
}

/** Validates `data` in place (defaults are inserted). */
export function checkSchema (data: unknown): SchemaVerdict {
  const validate = validator()
  validate(data)
  return new SchemaVerdict(data, validate.errors ?? [])
}

function describeErrors (errors: ErrorObject[], data: unknown): Issue[] {
  const issues: Issue[] = []
  const absorbed = new Set<ErrorObject>()
  errors.forEach((error, index) => {
    if (error.keyword === 'anyOf' || error.keyword === 'oneOf') {
      const branches = branchErrors(errors, index)
      for (const b of branches) absorbed.add(b)
      issues.push(...describeAlternatives(error, branches, data))
    }
  })
  // One line per object for its missing keys, however many there are.
  const missing = new Map<string, string[]>()
  for (const error of errors) {
    if (absorbed.has(error) || error.keyword === 'anyOf' || error.keyword === 'oneOf') continue
    if (error.keyword === 'required') {
      const keys = missing.get(error.instancePath) ?? []
      missing.set(error.instancePath, [...keys, `"${String(error.params.missingProperty)}"`])
      continue
    }
    const issue = describe(error, data)
    if (issue !== undefined) issues.push(issue)
  }
  for (const [pointer, keys] of missing) {
    issues.push({ path: toYamlPath(pointer, data), message: `missing required key${keys.length > 1 ? 's' : ''} ${keys.join(', ')}` })
  }
  return issues
}

/**
 * ajv reports the errors of each failed alternative right before the
 * anyOf/oneOf error itself, at or below its instance path; their schemaPath
 * cannot be used, as it restarts at every $ref.
 */
function branchErrors (errors: ErrorObject[], index: number): ErrorObject[] {
  const at = errors[index].instancePath
  let start = index
  while (start > 0 && (errors[start - 1].instancePath === at || errors[start - 1].instancePath.startsWith(at + '/'))) start--
  return errors.slice(start, index)
}

/**
 * One message for "matches none of the forms". When the value got past an
 * alternative's shape and failed deeper inside, those deeper errors are the
 * useful ones; otherwise the schema's own `errorMessage` says what is allowed.
 */
function describeAlternatives (error: ErrorObject, branches: ErrorObject[], data: unknown): Issue[] {
  const deeper = branches.filter(b => b.instancePath !== error.instancePath)
  if (deeper.length > 0) return describeErrors(deeper, data)
  const custom = (error.parentSchema as { errorMessage?: string } | undefined)?.errorMessage
  const message = custom ?? [...new Set(branches.map(b => describe(b, data)?.message).filter(m => m !== undefined))].join(', or ')
  return [{ path: toYamlPath(error.instancePath, data), message }]
}

const TYPE_NAMES: Record<string, string> = {
  integer: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  object: 'a mapping (key: value)',
  array: 'a list',
  null: 'empty',
}

function describe (error: ErrorObject, data: unknown): Issue | undefined {
  const at = toYamlPath(error.instancePath, data)
  const p = error.params as Record<string, unknown>
  // Errors inside `propertyNames` are about a key, not a value.
  if (error.propertyName !== undefined) {
    const inner = describe({ ...error, propertyName: undefined }, data)
    return { path: [...at, error.propertyName], at: 'key', message: `name ${JSON.stringify(error.propertyName)} ${inner?.message ?? 'is not allowed'}` }
  }
  switch (error.keyword) {
    case 'additionalProperties': {
      const key = String(p.additionalProperty)
      const known = Object.keys((error.parentSchema as { properties?: object } | undefined)?.properties ?? {})
      const guess = closestName(key, known)
      const hint = guess !== undefined ? ` (did you mean "${guess}"?)` : `; known keys: ${known.join(', ')}`
      return { path: [...at, key], at: 'key', message: `unknown key "${key}"${hint}` }
    }
    case 'dependencies':
      return { path: at, message: `missing key "${String(p.missingProperty)}", required together with "${String(p.property)}"` }
    case 'type':
      if (at.length === 0 && data == null) return { path: at, message: 'the file is empty: it needs at least "version: 1"' }
      return { path: at, message: `must be ${TYPE_NAMES[String(p.type)] ?? String(p.type)}` }
    case 'enum': {
      const allowed = (p.allowedValues as unknown[]).map(String)
      const hint = typeof error.data === 'string' ? didYouMean(error.data, allowed) : ''
      return { path: at, message: `must be one of: ${allowed.join(', ')}${hint}` }
    }
    case 'const':
      return { path: at, message: `must be ${JSON.stringify(p.allowedValue)}` }
    case 'minimum': return { path: at, message: `must be at least ${String(p.limit)}` }
    case 'maximum': return { path: at, message: `must be at most ${String(p.limit)}` }
    case 'exclusiveMinimum': return { path: at, message: `must be greater than ${String(p.limit)}` }
    case 'exclusiveMaximum': return { path: at, message: `must be less than ${String(p.limit)}` }
    case 'minLength':
      return { path: at, message: p.limit === 1 ? 'must not be empty' : `must be at least ${String(p.limit)} characters long` }
    case 'minItems':
      return { path: at, message: p.limit === 1 ? 'must not be empty' : `must have at least ${String(p.limit)} items` }
    case 'uniqueItems': {
      const later = Number(p.i)
      const item = valueAt(data, [...at, later])
      return { path: [...at, later], message: `${JSON.stringify(item)} is listed twice (also item ${String(p.j)}): list each item once` }
    }
    case 'pattern': {
      const custom = (error.parentSchema as { patternErrorMessage?: string } | undefined)?.patternErrorMessage
      return { path: at, message: custom ?? `must match the pattern ${String(p.pattern)}` }
    }
    // `if` only says which `then` failed; the `then` errors carry the detail.
    case 'if':
    case 'propertyNames':
      return undefined
    default:
      return { path: at, message: error.message ?? `breaks the schema rule "${error.keyword}"` }
  }
}

/** An ajv instance path (JSON pointer) as a YAML path: array steps become numbers. */
function toYamlPath (pointer: string, data: unknown): Array<string | number> {
  const out: Array<string | number> = []
  if (pointer === '') return out
  let node = data
  for (const raw of pointer.slice(1).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~')
    const segment = Array.isArray(node) ? Number(key) : key
    out.push(segment)
    node = (node as Record<string | number, unknown> | undefined)?.[segment]
  }
  return out
}

function toPointer (yamlPath: YamlPath): string {
  return yamlPath.map(s => '/' + String(s).replace(/~/g, '~0').replace(/\//g, '~1')).join('')
}

/** Only descends through lists and mappings, so a wrong-typed parent yields undefined. */
function valueAt (data: unknown, yamlPath: YamlPath): unknown {
  let node = data
  for (const segment of yamlPath) {
    if (Array.isArray(node) && typeof segment === 'number') node = node[segment]
    else if (node !== null && typeof node === 'object' && !Array.isArray(node) && typeof segment === 'string') {
      node = Object.hasOwn(node, segment) ? (node as Record<string, unknown>)[segment] : undefined
    } else return undefined
  }
  return node
}
