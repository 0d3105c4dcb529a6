/**
 * The YAML text as a document that remembers where every node came from:
 * parse errors with their positions, and YAML path → line/column lookups.
 */
import { LineCounter, isAlias, isCollection, isMap, isScalar, isSeq, parseDocument, type Document, type Node, type YAMLError } from 'yaml'
import type { SourcePosition } from './types'
import type { Issue, Locator, YamlPath } from './problems'

export interface SyntaxProblem extends Issue {
  position: SourcePosition
  /** The document cannot be trusted past this (everything but duplicate keys). */
  fatal: boolean
}

export class Source implements Locator {
  readonly doc: Document.Parsed
  private readonly lines = new LineCounter()

  constructor (private readonly text: string) {
    // YAML 1.2 core schema (so `on:` and `yes` stay strings); merge keys on,
    // because `<<: *defaults` is how YAML users share service settings.
    this.doc = parseDocument(text, { lineCounter: this.lines, prettyErrors: false, merge: true })
  }

  /**
   * Parse errors and warnings (unresolved tags …), each at its position. One
   * mistake often derails the rest of its line, so only a line's first error
   * is kept.
   */
  syntaxProblems (): SyntaxProblem[] {
    const errors = this.doc.errors.map(err => this.syntaxProblem(err, err.code !== 'DUPLICATE_KEY'))
    const firstOfLine = errors.filter((p, i) => errors.findIndex(q => q.position.line === p.position.line) === i)
    return [...firstOfLine, ...this.doc.warnings.map(w => this.syntaxProblem(w, false))]
  }

  position (yamlPath: YamlPath, at: 'key' | 'value' = 'value'): SourcePosition {
    const { node, key } = this.walk(yamlPath)
    // What the user sees as the place of a value: the key, when the value is
    // empty (`key:` has a zero-width value) or an indented block below it.
    const blank = node?.range != null && node.range[0] === node.range[1]
    const block = isCollection(node) && !node.flow
    const target = (at === 'key' || blank || block) && key !== undefined ? key : node ?? key
    return target?.range ? this.offsetPosition(target.range[0]) : { line: 1, col: 1 }
  }

  /** Whether the file itself has a node at this path (defaults are not in the file). */
  has (yamlPath: YamlPath): boolean {
    return this.walk(yamlPath).depth === yamlPath.length
  }

  /**
   * Follows the path as far as the file goes. `node` is the deepest value
   * reached, `key` the key node of the last map step (for keys whose value is
   * empty or missing, and for pointing at the key itself).
   */
  private walk (yamlPath: YamlPath): { node: Node | undefined, key: Node | undefined, depth: number } {
    let node: Node | undefined = this.doc.contents ?? undefined
    let key: Node | undefined
    let depth = 0
    for (const segment of yamlPath) {
      const current = isAlias(node) ? node.resolve(this.doc) : node
      if (isMap(current)) {
        const pair = current.items.find(p => isScalar(p.key) && String(p.key.value) === String(segment))
        if (pair === undefined) break
        key = pair.key as Node
        node = (pair.value as Node | null) ?? undefined
      } else if (isSeq(current) && typeof segment === 'number' && segment < current.items.length) {
        key = undefined
        node = current.items[segment] as Node
      } else {
        break
      }
      depth++
    }
    return { node, key, depth }
  }

  /** The YAML path of the innermost node at a source offset (to name a duplicate key). */
  private pathAt (offset: number): Array<string | number> {
    const out: Array<string | number> = []
    const inside = (n: unknown): n is Node => (n as Node | null)?.range != null &&
      (n as Node).range![0] <= offset && offset < (n as Node).range![2]
    let node: unknown = this.doc.contents
    for (;;) {
      if (isMap(node)) {
        const pair = node.items.find(p => inside(p.key) || inside(p.value))
        if (pair === undefined || !isScalar(pair.key)) break
        out.push(String(pair.key.value))
        if (inside(pair.key)) break
        node = pair.value
      } else if (isSeq(node)) {
        const index = node.items.findIndex(inside)
        if (index < 0) break
        out.push(index)
        node = node.items[index]
      } else {
        break
      }
    }
    return out
  }

  private syntaxProblem (err: YAMLError, fatal: boolean): SyntaxProblem {
    const offset = err.pos[0]
    // Inside [ ] or { }, an unquoted ${VAR} reads as "$" followed by a mapping.
    const message = this.text.startsWith('${', offset - 1)
      ? 'YAML syntax error: inside [ ] or { }, a value with ${...} must be quoted, e.g. "${NAME}"'
      : syntaxMessage(err)
    // Past a syntax error the tree is a misreading, so its path would mislead.
    return { position: this.offsetPosition(offset), path: fatal ? [] : this.pathAt(offset), message, fatal }
  }

  private offsetPosition (offset: number): SourcePosition {
    const { line, col } = this.lines.linePos(offset)
    // linePos reports line 0 for a text without any newline.
    return line === 0 ? { line: 1, col: offset + 1 } : { line, col }
  }
}

/** yaml's messages, reworded where they speak of the library instead of the file. */
function syntaxMessage (err: YAMLError): string {
  switch (err.code) {
    case 'DUPLICATE_KEY': return 'duplicate key: each key may appear only once in a mapping'
    case 'MULTIPLE_DOCS': return 'only one YAML document is allowed: remove the extra "---"'
    case 'TAB_AS_INDENT': return 'tabs are not allowed for indentation in YAML: indent with spaces'
    case 'TAG_RESOLVE_FAILED': return `${err.message}: remove the tag`
    default: return `YAML syntax error: ${err.message}`
  }
}
