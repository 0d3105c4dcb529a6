/** What the admin app needs from a running gateway (operations.md "Admin listener"). */
export interface AdminRoute {
  name: string
  methods: string[]
  path: string
  upstream_path: string
  service: string
  pipes: { inbound: string[], outbound: string[] }
}

export interface AdminInstance {
  id: string
  url: string
  weight: number
  labels: string[]
  /** Active/passive health as the balancer sees it. */
  health: 'healthy' | 'unhealthy' | 'drained'
  drained: boolean
  inflight: number
  source: 'static' | 'registered'
}

export interface AdminService {
  name: string
  balancer: string
  breaker: 'closed' | 'open' | 'half_open' | null
  instances: AdminInstance[]
}

export type DrainResult = 'ok' | 'no-service' | 'no-instance'

export type ReloadResult = { ok: true, generation: number } | { ok: false, errors: string[] }

export interface AdminTarget {
  routes (): AdminRoute[]
  /** Live state; in a cluster the primary asks its workers. */
  services (): AdminService[] | Promise<AdminService[]>
  /** The effective config with secrets redacted. */
  config (): unknown
  reload (): Promise<ReloadResult>
  /** Drains (true) or undrains an instance: 'ok', or which of the two was not found. */
  setDrained (service: string, instance: string, drained: boolean): DrainResult | Promise<DrainResult>
  /** Config loaded and not shutting down. */
  ready (): boolean
  /** Prometheus exposition of every metric. */
  metrics (): Promise<{ contentType: string, body: string }>
}
