/**
 * The pipes a config may name: the built-ins and the modules of `pipes_dir`
 * (`.ts` without a build step, `.js`, `.mjs`, `.cjs`; the file stem is the
 * name). Each definition's `schema` is compiled once; `check` validates a
 * placement's properties (filling defaults) for the config loader.
 */
import fs from 'node:fs'
import path from 'node:path'
import Ajv, { type ValidateFunction } from 'ajv'
import addFormats from 'ajv-formats'
import type { PipeCatalog } from '../config'
import { didYouMean } from '../config/suggest'
import { BUILTIN_PIPES } from './builtin'
import type { PipeDefinition } from './types'

const EXTENSIONS = new Set(['.ts', '.js', '.mjs', '.cjs'])

export interface LoadedPipeCatalog extends PipeCatalog {
  get (name: string): PipeDefinition<any> | undefined
  /** Problems with the modules themselves (not a definition, duplicate name…), reported by the loader. */
  readonly moduleProblems: readonly string[]
}

function isDefinition (value: unknown): value is PipeDefinition<any> {
  return value !== null && typeof value === 'object' && typeof (value as PipeDefinition).create === 'function'
}

function isExceptionHandler (value: unknown): boolean {
  return value !== null && typeof value === 'object' && typeof (value as { handle?: unknown }).handle === 'function' &&
    typeof (value as { create?: unknown }).create !== 'function'
}

/**
 * `require('sluice')` from a pipe module means this running gateway, wherever
 * the module lives (a pipes_dir outside any project with sluice installed
 * included): pipes must share its classes (GatewayError) and helpers.
 */
const PUBLIC_API = require.resolve('../index')
type Resolver = (request: string, parent: unknown, ...rest: unknown[]) => string
const ModuleInternals = require('node:module') as { _resolveFilename: Resolver }
const resolveFilename = ModuleInternals._resolveFilename
if ((resolveFilename as { sluice?: true }).sluice === undefined) {
  const patched: Resolver = function (this: unknown, request, parent, ...rest) {
    return request === 'sluice' ? PUBLIC_API : resolveFilename.call(this, request, parent, ...rest)
  }
  ;(patched as { sluice?: true }).sluice = true
  ModuleInternals._resolveFilename = patched
}

/** Loads one module of pipes_dir; ESM modules come through Node's require(esm). */
function loadModule (file: string): unknown {
  const loaded = require(file) as { default?: unknown }
  return loaded !== null && typeof loaded === 'object' && 'default' in loaded ? loaded.default : loaded
}

export function createPipeCatalog (options: { pipesDir?: string } = {}): LoadedPipeCatalog {
  const definitions = new Map<string, PipeDefinition<any>>()
  const moduleProblems: string[] = []
  for (const def of BUILTIN_PIPES) definitions.set(def.name, def)

  const dir = options.pipesDir
  if (dir !== undefined && fs.existsSync(dir)) {
    for (const entry of fs.readdirSync(dir).sort()) {
      const ext = path.extname(entry)
      if (!EXTENSIONS.has(ext) || entry.endsWith('.d.ts') || entry.includes('.test.')) continue
      const name = path.basename(entry, ext)
      const file = path.join(dir, entry)
      let def: unknown
      try {
        def = loadModule(file)
      } catch (err) {
        moduleProblems.push(`pipe module ${file} failed to load: ${(err as Error).message}`)
        continue
      }
      // pipes_dir also holds services' exception handlers (pipes.md): not pipes.
      if (isExceptionHandler(def)) continue
      if (!isDefinition(def)) { moduleProblems.push(`pipe module ${file} does not export a pipe (definePipe({ name, phase, create }))`); continue }
      if (def.name !== name) { moduleProblems.push(`pipe module ${file} names itself "${def.name}": name it "${name}" like its file`); continue }
      if (BUILTIN_PIPES.some(b => b.name === name)) { moduleProblems.push(`pipe module ${file} has the name of a built-in pipe`); continue }
      if (definitions.has(name)) { moduleProblems.push(`pipe module ${file}: another module is already named "${name}"`); continue }
      definitions.set(name, def)
    }
  }

  const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, verbose: true })
  addFormats(ajv)
  const validators = new Map<string, ValidateFunction>()
  function validatorOf (def: PipeDefinition<any>): ValidateFunction | undefined {
    if (def.schema === undefined) return undefined
    let v = validators.get(def.name)
    if (v === undefined) { v = ajv.compile(def.schema); validators.set(def.name, v) }
    return v
  }

  return {
    moduleProblems,
    names: () => [...definitions.keys()],
    has: (name) => definitions.has(name),
    get: (name) => definitions.get(name),
    check (name, properties, phase) {
      const def = definitions.get(name)
      if (def === undefined) return []
      const messages: string[] = []
      if (def.phase !== 'both' && def.phase !== phase) messages.push(`is an ${def.phase} pipe; move it to the ${def.phase} list`)
      let validate: ValidateFunction | undefined
      try { validate = validatorOf(def) } catch (err) {
        return [...messages, `its own schema does not compile: ${(err as Error).message}`]
      }
      if (validate !== undefined && !validate(properties)) {
        for (const e of validate.errors ?? []) {
          const where = e.instancePath === '' ? 'properties' : `properties${e.instancePath.replace(/\//g, '.')}`
          if (e.keyword === 'additionalProperties') {
            const key = String((e.params as { additionalProperty: string }).additionalProperty)
            const known = Object.keys((e.parentSchema as { properties?: object } | undefined)?.properties ?? {})
            messages.push(`unknown property "${key}"${didYouMean(key, known)}`)
          } else {
            messages.push(`${where} ${e.message ?? 'is invalid'}`)
          }
        }
      }
      return messages
    },
  }
}
