/**
 * routes.yaml → LoadedConfig: parse with positions, substitute ${ENV}, apply
 * the schema (filling defaults), cross-check, resolve file paths, freeze.
 * Every problem found on the way is reported at once, as one ConfigError.
 */
import fs from 'node:fs'
import path from 'node:path'
import { substituteEnv, type Env } from './env'
import { ConfigError, displayName, formatPath, sortProblems, toProblem } from './problems'
import { resolveFiles } from './resolve-files'
import { checkSchema, type SchemaVerdict } from './schema'
import { Source } from './source'
import { crossCheck, type PipeCatalog } from './validate'
import type { ConfigProblem, GatewayConfig, LoadedConfig } from './types'

export interface LoadOptions {
  /** Where `${VAR}` values come from; default process.env. */
  env?: Env
  /**
   * The pipes routes may name. Custom pipes live in the file's own pipes_dir,
   * so a function is called with that folder (resolved) once it is known.
   * Absent: every pipe name is unknown.
   */
  pipes?: PipeCatalog | ((pipesDir: string) => PipeCatalog)
}

/** Throws ConfigError, also when the file cannot be read. */
export function loadConfigFile (file: string, options: LoadOptions = {}): LoadedConfig {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError([{ file: displayName(file), line: 1, col: 1, path: '', message: `cannot read the config file: ${readFailure(err)}` }])
  }
  return loadConfigText(text, file, options)
}

/** `file` names the text in problems and anchors its relative paths. */
export function loadConfigText (text: string, file: string, options: LoadOptions = {}): LoadedConfig {
  const name = displayName(file)
  const folder = path.dirname(path.resolve(file))
  const source = new Source(text)
  const syntax = source.syntaxProblems()
  const problems: ConfigProblem[] = syntax.map(s => ({ file: name, ...s.position, path: formatPath(s.path), message: s.message }))
  // Past a syntax error the tree may not be what the user meant; schema
  // complaints about a misreading would only bury the real mistake.
  if (syntax.some(s => s.fatal)) throw new ConfigError(sortProblems(problems))

  const envIssues = substituteEnv(source.doc, options.env ?? process.env)
  const config = toPlainData(source, name)
  const verdict = checkSchema(config)
  const crossIssues = crossCheck(config, {
    verdict,
    pipes: pipeCatalog(options.pipes, config, verdict, folder),
    where: p => {
      const { line, col } = source.position(p)
      return `${name}:${line}:${col}`
    },
    written: p => source.has(p),
  })
  // An unset variable left an empty value behind only so checking could go
  // on; what the schema then says about that value would be noise.
  const unset = new Set(envIssues.map(i => formatPath(i.path)))
  const issues = [...envIssues, ...[...verdict.issues, ...crossIssues].filter(i => !unset.has(formatPath(i.path)))]
  problems.push(...issues.map(i => toProblem(name, source, i)))
  if (problems.length > 0) throw new ConfigError(sortProblems(problems))

  resolveFiles(config, folder)
  return { file: name, config: deepFreeze(config), locate: p => source.position(p) }
}

/** yaml refuses to expand aliases past a limit (a "billion laughs" guard); that is the user's to fix. */
function toPlainData (source: Source, name: string): GatewayConfig {
  try {
    return source.doc.toJS() as GatewayConfig
  } catch (err) {
    if (!(err instanceof ReferenceError)) throw err
    throw new ConfigError([{ file: name, line: 1, col: 1, path: '', message: `${err.message}: use fewer aliases (*name)` }])
  }
}

function pipeCatalog (option: LoadOptions['pipes'], config: GatewayConfig, verdict: SchemaVerdict, folder: string): PipeCatalog | undefined {
  if (typeof option !== 'function') return option
  // A broken pipes_dir is reported already; custom pipes cannot be known.
  return verdict.valid(['pipes_dir']) ? option(path.resolve(folder, config.pipes_dir)) : undefined
}

function readFailure (err: unknown): string {
  switch ((err as NodeJS.ErrnoException).code) {
    case 'ENOENT': return 'no such file'
    case 'EACCES': return 'permission denied'
    case 'EISDIR': return 'it is a directory, not a file'
    default: return err instanceof Error ? err.message : String(err)
  }
}

/** The config is shared by every request of a generation; nothing may change it. */
function deepFreeze<T> (value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const child of Object.values(value)) deepFreeze(child)
  }
  return value
}
