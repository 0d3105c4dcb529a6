/**
 * `json-transform` (pipes.md): rewrites a JSON response body, addressed by
 * JSON Pointers (RFC 6901). Per response: `rename`, then `remove`, then `set`.
 *
 * - `rename` is RFC 6902's move (remove, then add); a pointer may not be
 *   moved into itself. A missing source is a no-op.
 * - `remove` of a missing member or index is a no-op.
 * - `set` replaces or adds a member; `-` appends to an array, an index up to
 *   the array's length replaces (or, at the length, appends). Missing parents
 *   are created as objects; a parent that is a scalar, or an index past the
 *   end of an array, leaves the body as it was at that pointer.
 *
 * Only JSON media types (application/json, application/*+json) are touched.
 * Passed through untouched, so a transform never breaks a response: bodies
 * over `max_bytes`, compressed bodies, invalid JSON or UTF-8, and documents
 * with integers beyond 2^53, which JSON.parse would silently round (64-bit
 * ids are common). Content-Length follows the new body (setBody).
 */
import { definePipe, type PipeContext } from '../types'

export interface JsonTransformProperties {
  set: Record<string, unknown>
  remove: string[]
  rename: Record<string, string>
  max_bytes: number
}

type Container = Record<string, unknown> | unknown[]

const ARRAY_INDEX = /^(0|[1-9][0-9]*)$/
const JSON_MEDIA = /^application\/(?:[\w.+-]+\+)?json$/

/** RFC 6901 §3–4: `~1` is `/`, `~0` is `~` (in that order); any other `~` is an error. */
export function parsePointer (pointer: string): string[] {
  if (pointer === '') return []
  if (!pointer.startsWith('/')) throw new Error(`"${pointer}" is not a JSON Pointer: it must be empty or start with "/"`)
  return pointer.slice(1).split('/').map(token => {
    if (/~(?![01])/.test(token)) throw new Error(`"${pointer}" is not a JSON Pointer: "~" must be followed by 0 or 1 (~0 is "~", ~1 is "/")`)
    return token.replace(/~1/g, '/').replace(/~0/g, '~')
  })
}

function isContainer (value: unknown): value is Container {
  return value !== null && typeof value === 'object'
}

const MISSING = Symbol('missing')

/** Own members only: "__proto__" or "constructor" in a pointer never reach Object.prototype. */
function child (parent: Container, token: string): unknown {
  if (Array.isArray(parent)) return ARRAY_INDEX.test(token) && Number(token) < parent.length ? parent[Number(token)] : MISSING
  return Object.hasOwn(parent, token) ? parent[token] : MISSING
}

/** A plain assignment to "__proto__" would set the prototype; define the member instead. */
function defineMember (parent: Record<string, unknown>, token: string, value: unknown): void {
  Object.defineProperty(parent, token, { value, writable: true, enumerable: true, configurable: true })
}

/** The container holding the pointer's last token, creating missing objects when asked. */
function parentOf (root: Container, tokens: string[], create: boolean): Container | undefined {
  let here: Container = root
  for (let i = 0; i < tokens.length - 1; i++) {
    let next = child(here, tokens[i])
    if (next === MISSING && create && !Array.isArray(here)) {
      next = {}
      defineMember(here, tokens[i], next)
    }
    if (!isContainer(next)) return undefined
    here = next
  }
  return here
}

/** The document lives under a holder so that the root pointer ("") is one more member. */
type Holder = { doc: unknown }
const inHolder = (tokens: string[]): string[] => ['doc', ...tokens]

function setAt (holder: Holder, tokens: string[], value: unknown): boolean {
  const path = inHolder(tokens)
  const parent = parentOf(holder as Container, path, true)
  if (parent === undefined) return false
  const last = path[path.length - 1]
  if (Array.isArray(parent)) {
    if (last === '-') { parent.push(value); return true }
    if (!ARRAY_INDEX.test(last) || Number(last) > parent.length) return false
    parent[Number(last)] = value
    return true
  }
  defineMember(parent, last, value)
  return true
}

interface Removed { value: unknown, undo (): void }

function removeAt (holder: Holder, tokens: string[]): Removed | undefined {
  const path = inHolder(tokens)
  const parent = parentOf(holder as Container, path, false)
  if (parent === undefined) return undefined
  const last = path[path.length - 1]
  const value = child(parent, last)
  if (value === MISSING) return undefined
  if (Array.isArray(parent)) {
    const index = Number(last)
    parent.splice(index, 1)
    return { value, undo: () => parent.splice(index, 0, value) }
  }
  delete parent[last]
  return { value, undo: () => defineMember(parent, last, value) }
}

/** JSON.parse rounds integers past 2^53 silently; such a document is left alone. */
function parseExactly (body: Buffer): { doc: unknown } | undefined {
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body)
  } catch {
    return undefined
  }
  let exact = true
  try {
    const doc: unknown = JSON.parse(text, (_key, value: unknown) => {
      if (typeof value === 'number' && Number.isInteger(value) && !Number.isSafeInteger(value)) exact = false
      return value
    })
    return exact ? { doc } : undefined
  } catch {
    return undefined
  }
}

function header (value: number | string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value === undefined ? undefined : String(value)
}

export function isJsonMediaType (contentType: string | undefined): boolean {
  if (contentType === undefined) return false
  return JSON_MEDIA.test(contentType.split(';')[0].trim().toLowerCase())
}

export const jsonTransformPipe = definePipe<JsonTransformProperties>({
  name: 'json-transform',
  phase: 'outbound',
  buffer: true,
  schema: {
    type: 'object',
    properties: {
      set: { type: 'object', default: {} },
      remove: { type: 'array', items: { type: 'string' }, default: [] },
      rename: { type: 'object', additionalProperties: { type: 'string' }, default: {} },
      max_bytes: { type: 'integer', minimum: 1, default: 1024 * 1024 },
    },
    additionalProperties: false,
  },
  create (props) {
    // Values are kept as JSON text and parsed per response: the config is
    // frozen and shared, the body being rewritten must be neither.
    const set = Object.entries(props.set).map(([pointer, value]) => {
      const json = JSON.stringify(value)
      if (json === undefined) throw new Error(`set "${pointer}": the value is not JSON`)
      return { tokens: parsePointer(pointer), json }
    })
    const remove = props.remove.map(pointer => {
      const tokens = parsePointer(pointer)
      if (tokens.length === 0) throw new Error('remove "": the whole document cannot be removed')
      return tokens
    })
    const rename = Object.entries(props.rename).map(([from, to]) => {
      const source = parsePointer(from)
      const target = parsePointer(to)
      if (source.length === 0 || target.length === 0) throw new Error(`rename "${from}" to "${to}": the whole document cannot be renamed`)
      if (target.length > source.length && source.every((t, i) => t === target[i])) {
        throw new Error(`rename "${from}" to "${to}": a member cannot be moved inside itself`)
      }
      return { source, target }
    })
    const maxBytes = props.max_bytes

    return async (ctx: PipeContext) => {
      const response = ctx.response
      if (response === undefined || !isJsonMediaType(header(response.headers['content-type']))) return
      const encoding = header(response.headers['content-encoding'])
      if (encoding !== undefined && encoding.toLowerCase() !== 'identity') return
      const declared = Number(header(response.headers['content-length']))
      if (declared > maxBytes) { tooLarge(ctx, declared, maxBytes); return }
      const body = await response.body()
      if (body.length > maxBytes) { tooLarge(ctx, body.length, maxBytes); return }
      const parsed = parseExactly(body)
      if (parsed === undefined) {
        ctx.log.debug({ pipe: 'json-transform', bytes: body.length }, 'json-transform: body is not exact JSON, passed through untouched')
        return
      }

      const holder: Holder = { doc: parsed.doc }
      for (const { source, target } of rename) {
        const removed = removeAt(holder, source)
        if (removed !== undefined && !setAt(holder, target, removed.value)) removed.undo()
      }
      for (const tokens of remove) removeAt(holder, tokens)
      for (const { tokens, json } of set) setAt(holder, tokens, JSON.parse(json))
      response.setBody(JSON.stringify(holder.doc))
    }
  },
})

function tooLarge (ctx: PipeContext, bytes: number, maxBytes: number): void {
  ctx.log.info({ pipe: 'json-transform', bytes, max_bytes: maxBytes }, 'json-transform: body over max_bytes, passed through untouched')
}
