/**
 * `${VAR}` and `${VAR:-default}` in string values, substituted after parsing
 * so that positions still point into the file as written. `$${` is a
 * literal `${`. Map keys are left alone (names in the file stay names).
 */
import { isMap, isScalar, isSeq, type Document, type Scalar } from 'yaml'
import type { Issue } from './problems'

export type Env = Record<string, string | undefined>

// `$${` escape, a well-formed reference, or a `${` that never closes.
const REFERENCE = /\$\$\{|\$\{([^}]*)\}|\$\{/g
const INNER = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s

/** Substitutes in place; returns a problem per unset variable or malformed reference. */
export function substituteEnv (doc: Document.Parsed, env: Env): Issue[] {
  const issues: Issue[] = []
  const visit = (node: unknown, yamlPath: Array<string | number>): void => {
    if (isMap(node)) {
      for (const pair of node.items) {
        if (isScalar(pair.key)) visit(pair.value, [...yamlPath, String(pair.key.value)])
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => visit(item, [...yamlPath, i]))
    } else if (isScalar(node) && typeof node.value === 'string' && node.value.includes('${')) {
      const { value, problems } = expand(node.value, env)
      node.value = isPlainUntagged(node) ? resolveAsYaml(doc, value) : value
      for (const message of problems) issues.push({ path: yamlPath, message })
    }
    // Aliases are skipped: their anchor is visited where it is defined.
  }
  visit(doc.contents, [])
  return issues
}

function expand (text: string, env: Env): { value: string, problems: string[] } {
  const problems: string[] = []
  const value = text.replace(REFERENCE, (match, inner: string | undefined) => {
    if (match === '$${') return '${'
    const ref = inner === undefined ? undefined : INNER.exec(inner)
    if (!ref) {
      problems.push(`malformed ${JSON.stringify(match)}: write \${NAME} or \${NAME:-default}, or $\${ for a literal \${`)
      return ''
    }
    const [, name, fallback] = ref
    const set = env[name]
    if (fallback !== undefined) return set === undefined || set === '' ? fallback : set
    if (set === undefined) {
      problems.push(`environment variable ${name} is not set: set it, or give a default with \${${name}:-value}`)
      return ''
    }
    return set
  })
  return { value, problems }
}

function isPlainUntagged (node: Scalar): boolean {
  return node.type === 'PLAIN' && node.tag === undefined
}

/**
 * A plain scalar is typed by its text (`8080` is an integer), so after
 * substitution it is typed as YAML would have typed the result, with the
 * document's own schema. An empty result stays an empty string rather than
 * null: `${TOKEN:-}` means "no value", not "no key".
 */
function resolveAsYaml (doc: Document.Parsed, text: string): unknown {
  if (text === '') return text
  for (const tag of doc.schema.tags) {
    if (tag.collection !== undefined || tag.default !== true || tag.test?.test(text) !== true) continue
    const resolved = tag.resolve(text, () => {}, doc.options)
    return isScalar(resolved) ? resolved.value : resolved
  }
  return text
}
