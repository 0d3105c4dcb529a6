/**
 * Deadlines of one service's in-flight requests (`timeout_ms`, until the
 * upstream's response headers). Every request of a service has the same
 * timeout, so arrival order is deadline order: a linked list through the
 * exchanges and one timer for its head serve them all — the design of
 * Node's own timer lists, without a Timeout object per request.
 */
import { performance } from 'node:perf_hooks'

export interface DeadlineEntry {
  deadline: number
  prevDeadline: DeadlineEntry | undefined
  nextDeadline: DeadlineEntry | undefined
  queued: boolean
}

export class DeadlineQueue<E extends DeadlineEntry> {
  private head: E | undefined = undefined
  private tail: E | undefined = undefined
  private timer: NodeJS.Timeout | undefined = undefined

  constructor (private readonly ms: number, private readonly expire: (entry: E) => void) {}

  add (entry: E): void {
    entry.deadline = performance.now() + this.ms
    entry.prevDeadline = this.tail
    entry.nextDeadline = undefined
    entry.queued = true
    if (this.tail === undefined) this.head = entry
    else this.tail.nextDeadline = entry
    this.tail = entry
    this.timer ??= setTimeout(this.fire, this.ms)
  }

  remove (entry: E): void {
    if (!entry.queued) return
    entry.queued = false
    const { prevDeadline: prev, nextDeadline: next } = entry
    if (prev === undefined) this.head = next as E | undefined
    else prev.nextDeadline = next
    if (next === undefined) this.tail = prev as E | undefined
    else next.prevDeadline = prev
    entry.prevDeadline = entry.nextDeadline = undefined
  }

  private readonly fire = (): void => {
    this.timer = undefined
    const now = performance.now()
    let head = this.head
    while (head !== undefined && head.deadline <= now) {
      this.remove(head)
      this.expire(head)
      head = this.head
    }
    // The head's own deadline, not a fixed period: a queue that emptied
    // and refilled is not checked before its first entry is due.
    if (head !== undefined) this.timer = setTimeout(this.fire, Math.max(1, Math.ceil(head.deadline - now)))
  }

  close (): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
  }
}
