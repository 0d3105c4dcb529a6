/**
 * Config problems: how a finding becomes `file:line:col path: message`, and
 * the error that carries all of them at once.
 */
import path from 'node:path'
import type { ConfigProblem, LoadedConfig, SourcePosition } from './types'

/** A YAML path: map keys and sequence indexes from the document root. */
export type YamlPath = ReadonlyArray<string | number>

/** A finding before it has a position: what is wrong, and where in the tree. */
export interface Issue {
  path: YamlPath
  message: string
  /** Point at the key itself (unknown or misspelt keys) rather than its value. */
  at?: 'key' | 'value'
}

export interface Locator {
  position (path: YamlPath, at?: 'key' | 'value'): SourcePosition
}

/** Every problem, formatted one per line, in file order. */
export class ConfigError extends Error {
  readonly problems: ConfigProblem[]

  constructor (problems: ConfigProblem[]) {
    super(problems.map(formatProblem).join('\n'))
    this.name = 'ConfigError'
    this.problems = problems
  }
}

/** `routes.yaml:14:7 routes[2].service_name: message` (no path part for file-level problems). */
export function formatProblem (p: ConfigProblem): string {
  const where = `${p.file}:${p.line}:${p.col}`
  return p.path === '' ? `${where}: ${p.message}` : `${where} ${p.path}: ${p.message}`
}

/** `routes[2].service_name`; keys that are not plain words are quoted: `services["users.v2"]`. */
export function formatPath (yamlPath: YamlPath): string {
  let out = ''
  for (const segment of yamlPath) {
    if (typeof segment === 'number') out += `[${segment}]`
    else if (/^[A-Za-z0-9_-]+$/.test(segment)) out += out === '' ? segment : `.${segment}`
    else out += `[${JSON.stringify(segment)}]`
  }
  return out
}

/** The file as the user should read it: relative to cwd when inside it, else as given. */
export function displayName (file: string): string {
  const relative = path.relative(process.cwd(), path.resolve(file))
  const inside = relative !== '' && relative.split(path.sep)[0] !== '..' && !path.isAbsolute(relative)
  return inside ? relative : file
}

export function toProblem (file: string, locator: Locator, issue: Issue): ConfigProblem {
  const { line, col } = locator.position(issue.path, issue.at)
  return { file, line, col, path: formatPath(issue.path), message: issue.message }
}

/**
 * A problem at a path of a loaded config, for errors found after loading
 * (e.g. a route that fails to compile), formatted like the loader's own.
 */
export function problemAt (loaded: LoadedConfig, yamlPath: YamlPath, message: string): ConfigProblem {
  return toProblem(loaded.file, { position: p => loaded.locate(p) }, { path: yamlPath, message })
}

/** File order, each problem once: what a user fixes top to bottom. */
export function sortProblems (problems: ConfigProblem[]): ConfigProblem[] {
  const seen = new Set<string>()
  return [...problems]
    .sort((a, b) => a.line - b.line || a.col - b.col)
    .filter(p => {
      const key = formatProblem(p)
      if (seen.has(key)) return false
      seen.add(key)
      return true
    })
}
