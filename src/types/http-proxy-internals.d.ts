// http-proxy 1.18.1 internals the forwarder builds on (they have no types of their own).
declare module 'http-proxy/lib/http-proxy/common' {
  import type { IncomingMessage, RequestOptions } from 'node:http'
  export function setupOutgoing (outgoing: object, options: object, req: IncomingMessage, forward?: string): RequestOptions
  export function urlJoin (...parts: string[]): string
}
declare module 'http-proxy/lib/http-proxy/passes/web-incoming' {
  const passes: Record<string, (...args: unknown[]) => unknown>
  export = passes
}
