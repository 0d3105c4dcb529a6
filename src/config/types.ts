/**
 * routes.yaml after parsing, ${ENV} substitution, schema validation (with
 * defaults filled in) and cross-checks. Field names are the file's own keys.
 */
export type HttpMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'OPTIONS' | 'TRACE' | 'CONNECT'

export interface PipeRef {
  name: string
  properties: Record<string, unknown>
}

export interface Pipelines {
  inbound: PipeRef[]
  outbound: PipeRef[]
}

export interface RouteConfig {
  name: string
  service_name: string
  methods: HttpMethod[]
  path: string
  upstream_path: string
  pipelines: Pipelines
}

export interface InstanceConfig {
  url: string
  weight: number
  labels: string[]
}

export interface RetryConfig {
  attempts: number
  on: Array<'connect-failure' | number>
  backoff_ms: number
}

export interface FallbackConfig {
  status: number
  headers: Record<string, string>
  body: string
}

export interface CircuitBreakerConfig {
  error_threshold_percentage: number
  volume_threshold: number
  rolling_window_ms: number
  reset_timeout_ms: number
  failure_statuses: number[]
  fallback?: FallbackConfig
}

export interface HealthCheckConfig {
  path: string
  interval_ms: number
  timeout_ms: number
  healthy_threshold: number
  unhealthy_threshold: number
}

export interface UpstreamTlsConfig {
  ca?: string
  cert?: string
  key?: string
  reject_unauthorized: boolean
}

export type BalancerName = 'round-robin' | 'weighted-round-robin' | 'random' | 'least-connections'

export interface ServiceConfig {
  instances: InstanceConfig[]
  balancer: BalancerName
  timeout_ms: number
  connect_timeout_ms: number
  retries?: RetryConfig
  circuit_breaker?: CircuitBreakerConfig
  health_check?: HealthCheckConfig
  exception_handler?: string
  tls?: UpstreamTlsConfig
}

export interface ServerConfig {
  host: string
  port: number
  trust_proxy: string[]
  route_label_header: string
  tls?: { cert: string, key: string }
  limits: {
    max_body_bytes: number
    headers_timeout_ms: number
    request_timeout_ms: number
    keep_alive_timeout_ms: number
  }
  shutdown_timeout_ms: number
  workers: number | 'auto'
}

export interface AdminConfig {
  host: string
  port: number
  token?: string
  registry_token?: string
}

export interface StoreConfig {
  type: 'memory' | 'redis'
  url?: string
  on_error: 'fail-open' | 'fail-closed'
}

export interface GatewayConfig {
  version: 1
  server: ServerConfig
  admin: AdminConfig
  store: StoreConfig
  /** Absolute path (resolved against the config file's folder). */
  pipes_dir: string
  services: Record<string, ServiceConfig>
  global: Pipelines
  routes: RouteConfig[]
}

/** A position in the source file, 1-based. */
export interface SourcePosition {
  line: number
  col: number
}

/** One config mistake: where it is and what to do. */
export interface ConfigProblem {
  file: string
  line: number
  col: number
  /** YAML path, e.g. `routes[2].service_name`. */
  path: string
  message: string
}

/** The validated config plus the means to point back into the file. */
export interface LoadedConfig {
  file: string
  config: GatewayConfig
  /** Position of the node at a YAML path (falls back to the nearest existing parent). */
  locate (path: ReadonlyArray<string | number>): SourcePosition
}
