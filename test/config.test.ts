import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {
  ConfigError,
  checkInstanceUrl,
  formatProblem,
  loadConfigFile,
  loadConfigText,
  overlappingMethods,
  problemAt,
  routeShapeKey,
  SCHEMA_FILE,
  type LoadOptions,
  type PipeCatalog,
} from '../src/config'
import { createSchemaAjv } from '../src/config/schema'
import { parseTemplate } from '../src/routing/template'

const FIXTURES = path.join(__dirname, 'fixtures', 'config')

/** Strips the first newline and the common indentation, so line 1 is the first line written. */
function yaml (strings: TemplateStringsArray, ...values: unknown[]): string {
  const text = strings.reduce((out, s, i) => out + String(values[i - 1]) + s).replace(/^\n/, '')
  const indent = Math.min(...text.split('\n').filter(l => l.trim() !== '').map(l => /^ */.exec(l)![0].length))
  return text.split('\n').map(l => l.slice(indent)).join('\n')
}

function catalog (names: string[], check?: PipeCatalog['check']): PipeCatalog {
  return { names: () => names, has: name => names.includes(name), check }
}

const PIPES = catalog(['jwt', 'add-tenant-header', 'status-map', 'rate-limit'])

/** The problems a config is refused with, as the user reads them. */
function problems (text: string, options: LoadOptions = {}): string[] {
  try {
    loadConfigText(text, 'routes.yaml', { env: {}, pipes: PIPES, ...options })
  } catch (err) {
    if (err instanceof ConfigError) return err.message.split('\n')
    throw err
  }
  throw new Error('the config was accepted')
}

function load (text: string, options: LoadOptions = {}) {
  return loadConfigText(text, 'routes.yaml', { env: {}, pipes: PIPES, ...options })
}

function withTempDir (run: (dir: string) => void): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-config-'))
  try {
    run(dir)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

// A valid file that tests extend below its last line.
const ONE_ROUTE = yaml`
  version: 1
  services:
    users:
      instances:
        - url: http://127.0.0.1:9001
  routes:
    - name: list-users
      service_name: users
      methods: [GET]
      path: /users
      upstream_path: /v1/users
`

describe('the complete example of config.md', () => {
  const file = path.join(FIXTURES, 'complete.yaml')
  const env = { JWT_SECRET: 'sekrit', SLUICE_ADMIN_TOKEN: 'admin-token' }

  test('loads, with ${ENV} substituted and pipes checked in their phase', () => {
    const check = jest.fn((): string[] => [])
    const loaded = loadConfigFile(file, { env, pipes: catalog(['jwt', 'add-tenant-header', 'status-map'], check) })
    const { config } = loaded

    expect(loaded.file).toBe(path.relative(process.cwd(), file))
    expect(config.admin).toEqual({ host: '127.0.0.1', port: 8081, token: 'admin-token' })
    expect(config.routes[0].pipelines.inbound[0]).toEqual({ name: 'jwt', properties: { secret: 'sekrit', algorithms: ['HS256'] } })
    expect(check.mock.calls).toEqual([
      ['jwt', { secret: 'sekrit', algorithms: ['HS256'] }, 'inbound'],
      ['add-tenant-header', { header: 'X-Tenant' }, 'inbound'],
      ['status-map', { map: { 404: 204 } }, 'outbound'],
    ])
  })

  test('fills what it leaves out and resolves files against its own folder', () => {
    const { config } = loadConfigFile(file, { env, pipes: PIPES })
    expect(config.store).toEqual({ type: 'memory', url: 'redis://127.0.0.1:6379', on_error: 'fail-open' })
    expect(config.services.users.instances[0]).toEqual({ url: 'http://127.0.0.1:9001', weight: 1, labels: [] })
    expect(config.services.users.circuit_breaker?.fallback).toEqual({
      status: 200,
      headers: { 'content-type': 'application/json' },
      body: '{"items": [], "degraded": true}',
    })
    expect(config.pipes_dir).toBe(path.join(FIXTURES, 'pipes'))
    expect(config.server.tls).toEqual({ cert: path.join(FIXTURES, 'certs/gateway.crt'), key: path.join(FIXTURES, 'certs/gateway.key') })
    expect(config.services.users.exception_handler).toBe(path.join(FIXTURES, 'pipes/cached-users.ts'))
    expect(config.services.users.tls).toEqual({
      ca: path.join(FIXTURES, 'certs/internal-ca.pem'),
      cert: path.join(FIXTURES, 'certs/gateway-client.crt'),
      key: path.join(FIXTURES, 'certs/gateway-client.key'),
      reject_unauthorized: true,
    })
  })

  test('without its environment, names each unset variable where it is used', () => {
    expect(problems(fs.readFileSync(file, 'utf8'), { env: {} }).filter(p => p.includes('not set'))).toEqual([
      'routes.yaml:23:10 admin.token: environment variable SLUICE_ADMIN_TOKEN is not set: set it, or give a default with ${SLUICE_ADMIN_TOKEN:-value}',
      'routes.yaml:81:33 routes[0].pipelines.inbound[0].properties.secret: environment variable JWT_SECRET is not set: set it, or give a default with ${JWT_SECRET:-value}',
    ])
  })
})

describe('defaults', () => {
  test('a minimal config gets every default of config.md', () => {
    const { config } = load(ONE_ROUTE)
    expect(config).toEqual({
      version: 1,
      server: {
        host: '0.0.0.0',
        port: 8080,
        trust_proxy: [],
        route_label_header: 'X-Route-Label',
        limits: { max_body_bytes: 10485760, headers_timeout_ms: 15000, request_timeout_ms: 60000, keep_alive_timeout_ms: 65000 },
        shutdown_timeout_ms: 30000,
        workers: 1,
      },
      admin: { host: '127.0.0.1', port: 8081 },
      store: { type: 'memory', on_error: 'fail-open' },
      pipes_dir: path.resolve('pipes'),
      services: {
        users: {
          instances: [{ url: 'http://127.0.0.1:9001', weight: 1, labels: [] }],
          balancer: 'round-robin',
          timeout_ms: 10000,
          connect_timeout_ms: 2000,
        },
      },
      global: { inbound: [], outbound: [] },
      routes: [{
        name: 'list-users',
        service_name: 'users',
        methods: ['GET'],
        path: '/users',
        upstream_path: '/v1/users',
        pipelines: { inbound: [], outbound: [] },
      }],
    })
  })

  test('optional service blocks, once present, are filled', () => {
    const { config } = load(yaml`
      version: 1
      services:
        users:
          instances: []
          retries: {}
          circuit_breaker: { fallback: {} }
          health_check: {}
          tls: {}
      routes:
        - name: r
          service_name: users
          methods: [GET]
          path: /r
          upstream_path: /r
          pipelines: { inbound: [{ name: rate-limit }] }
    `)
    const users = config.services.users
    expect(users.instances).toEqual([])
    expect(users.retries).toEqual({ attempts: 1, on: ['connect-failure', 502, 503, 504], backoff_ms: 50 })
    expect(users.circuit_breaker).toEqual({
      error_threshold_percentage: 50,
      volume_threshold: 10,
      rolling_window_ms: 10000,
      reset_timeout_ms: 10000,
      failure_statuses: [500, 502, 503, 504],
      fallback: { status: 200, headers: {}, body: '' },
    })
    expect(users.health_check).toEqual({ path: '/healthz', interval_ms: 5000, timeout_ms: 1000, healthy_threshold: 2, unhealthy_threshold: 3 })
    expect(users.tls).toEqual({ reject_unauthorized: true })
    expect(config.routes[0].pipelines).toEqual({ inbound: [{ name: 'rate-limit', properties: {} }], outbound: [] })
  })

  test('workers may be "auto"', () => {
    expect(load('version: 1\nserver: { workers: auto }\n').config.server.workers).toBe('auto')
  })
})

describe('environment variables', () => {
  test('${VAR:-default} uses the default when the variable is unset or empty, and the value otherwise', () => {
    const text = 'version: 1\nadmin:\n  host: ${ADMIN_HOST:-localhost}\n  token: "${TOKEN:-none}"\n'
    expect(load(text).config.admin).toEqual({ host: 'localhost', port: 8081, token: 'none' })
    expect(load(text, { env: { ADMIN_HOST: '', TOKEN: 't' } }).config.admin).toEqual({ host: 'localhost', port: 8081, token: 't' })
    expect(load(text, { env: { ADMIN_HOST: '10.0.0.1', TOKEN: 't' } }).config.admin.host).toBe('10.0.0.1')
  })

  test('$${ is a literal ${', () => {
    const { config } = load('version: 1\nadmin:\n  token: "a$${NOT_A_VAR}b${X}"\n', { env: { X: '!' } })
    expect(config.admin.token).toBe('a${NOT_A_VAR}b!')
  })

  test('a plain value is typed as YAML would type the result; a quoted one stays a string', () => {
    const text = yaml`
      version: 1
      server:
        port: \${PORT:-8080}
        workers: \${WORKERS}
      services:
        users:
          instances: []
          tls:
            reject_unauthorized: \${VERIFY}
    `
    const { config } = load(text, { env: { WORKERS: '4', VERIFY: 'false' } })
    expect(config.server.port).toBe(8080)
    expect(config.server.workers).toBe(4)
    expect(config.services.users.tls?.reject_unauthorized).toBe(false)

    expect(problems('version: 1\nserver:\n  port: "${PORT:-8080}"\n')).toEqual([
      'routes.yaml:3:9 server.port: must be an integer',
    ])
  })

  test('an unset variable without a default is a problem at its value, and nothing else is said of that value', () => {
    expect(problems('version: 1\nserver:\n  port: ${PORT}\n')).toEqual([
      'routes.yaml:3:9 server.port: environment variable PORT is not set: set it, or give a default with ${PORT:-value}',
    ])
  })

  test('a malformed reference is a problem', () => {
    expect(problems('version: 1\nadmin:\n  token: "${1TOKEN}"\n')).toEqual([
      'routes.yaml:3:10 admin.token: malformed "${1TOKEN}": write ${NAME} or ${NAME:-default}, or $${ for a literal ${',
    ])
  })

  test('process.env is the default source', () => {
    process.env.SLUICE_TEST_ADMIN_TOKEN = 'from-process-env'
    try {
      const { config } = loadConfigText('version: 1\nadmin:\n  token: ${SLUICE_TEST_ADMIN_TOKEN}\n', 'routes.yaml')
      expect(config.admin.token).toBe('from-process-env')
    } finally {
      delete process.env.SLUICE_TEST_ADMIN_TOKEN
    }
  })

  test('an unquoted ${VAR} inside [ ] or { } gets a hint to quote it', () => {
    expect(problems('version: 1\nserver:\n  trust_proxy: [${PROXY}]\n')).toEqual([
      'routes.yaml:3:18: YAML syntax error: inside [ ] or { }, a value with ${...} must be quoted, e.g. "${NAME}"',
    ])
  })
})

describe('YAML errors', () => {
  test('a syntax error is reported at its position, and stops there', () => {
    expect(problems('version: 1\nserver: [a\nrutes: 1\n')).toEqual([
      'routes.yaml:3:1: YAML syntax error: Flow sequence in block collection must be sufficiently indented and end with a ]',
    ])
  })

  test('a duplicate key is reported at the second one, with everything else', () => {
    expect(problems('version: 1\nserver:\n  port: 1\n  port: 2\nrutes: []\n')).toEqual([
      'routes.yaml:4:3 server.port: duplicate key: each key may appear only once in a mapping',
      'routes.yaml:5:1 rutes: unknown key "rutes" (did you mean "routes"?)',
    ])
  })

  test('an empty file says what it needs', () => {
    expect(problems('')).toEqual(['routes.yaml:1:1: the file is empty: it needs at least "version: 1"'])
  })

  test('alias expansion is bounded', () => {
    const ten = (alias: string): string => `[${Array(10).fill(alias).join(', ')}]`
    const text = `a: &a ${ten('x')}\nb: &b ${ten('*a')}\nc: &c ${ten('*b')}\nd: ${ten('*c')}\n`
    expect(problems(text)).toEqual([
      'routes.yaml:1:1: Excessive alias count indicates a resource exhaustion attack: use fewer aliases (*name)',
    ])
  })

  test('only one document', () => {
    expect(problems('version: 1\n---\nversion: 1\n')).toEqual(['routes.yaml:2:1: only one YAML document is allowed: remove the extra "---"'])
  })
})

describe('schema problems', () => {
  test('version is required and must be 1', () => {
    expect(problems('server: {}\n')).toEqual(['routes.yaml:1:1: missing required key "version"'])
    expect(problems('version: 2\n')).toEqual(['routes.yaml:1:10 version: must be 1'])
  })

  test('an unknown top-level key is located at the key, with a suggestion when one is close', () => {
    expect(problems('version: 1\nrutes: []\n')).toEqual(['routes.yaml:2:1 rutes: unknown key "rutes" (did you mean "routes"?)'])
    expect(problems('version: 1\nplugins: []\n')).toEqual([
      'routes.yaml:2:1 plugins: unknown key "plugins"; known keys: version, server, admin, store, pipes_dir, services, global, routes',
    ])
  })

  test('a misspelt option deep inside gets a did-you-mean', () => {
    const text = yaml`
      version: 1
      services:
        users:
          instances: []
          circuit_breaker:
            reset_timout_ms: 5000
    `
    expect(problems(text)).toEqual([
      'routes.yaml:6:7 services.users.circuit_breaker.reset_timout_ms: unknown key "reset_timout_ms" (did you mean "reset_timeout_ms"?)',
    ])
  })

  test('a misspelt route key', () => {
    const text = yaml`
      version: 1
      services: { users: { instances: [] } }
      routes:
        - name: r
          servce_name: users
          methods: [GET]
          path: /r
          upstream_path: /r
    `
    expect(problems(text)).toEqual([
      'routes.yaml:4:5 routes[0]: missing required key "service_name"',
      'routes.yaml:5:5 routes[0].servce_name: unknown key "servce_name" (did you mean "service_name"?)',
    ])
  })

  test('missing keys are reported once per object, at the object', () => {
    expect(problems('version: 1\nroutes:\n  - name: r\n    methods: [GET]\n')).toEqual([
      'routes.yaml:3:5 routes[0]: missing required keys "service_name", "path", "upstream_path"',
    ])
  })

  test('enum, type, range and list rules', () => {
    const text = yaml`
      version: 1
      server:
        port: 70000
        limits: { max_body_bytes: big }
      store: { type: redis }
      services:
        users:
          balancer: round_robin
          instances: []
      routes:
        - name: r
          service_name: users
          methods: [GET, get, GET]
          path: /r
          upstream_path: /r
        - name: s
          service_name: users
          methods: []
          path: /s
          upstream_path: /s
    `
    expect(problems(text)).toEqual([
      'routes.yaml:3:9 server.port: must be at most 65535',
      'routes.yaml:4:29 server.limits.max_body_bytes: must be an integer',
      'routes.yaml:5:8 store: missing required key "url"',
      'routes.yaml:8:15 services.users.balancer: must be one of: round-robin, weighted-round-robin, random, least-connections (did you mean "round-robin"?)',
      'routes.yaml:13:20 routes[0].methods[1]: must be one of: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE, CONNECT (did you mean "GET"?)',
      'routes.yaml:13:25 routes[0].methods[2]: "GET" is listed twice (also item 0): list each item once',
      'routes.yaml:18:14 routes[1].methods: must not be empty',
    ])
  })

  test('names of services and routes are restricted', () => {
    const text = yaml`
      version: 1
      services:
        "user service": { instances: [] }
      routes:
        - name: -r
          service_name: users
          methods: [GET]
          path: /r
          upstream_path: /r
    `
    expect(problems(text)).toEqual([
      'routes.yaml:3:3 services["user service"]: name "user service" must be made of letters, digits, ".", "_" and "-", starting with a letter or digit',
      'routes.yaml:5:11 routes[0].name: must be made of letters, digits, ".", "_" and "-", starting with a letter or digit',
      'routes.yaml:6:19 routes[0].service_name: service "users" is not declared: add it under services',
    ])
  })

  test('alternatives collapse to one message', () => {
    expect(problems('version: 1\nserver: { workers: 0 }\n')).toEqual([
      'routes.yaml:2:20 server.workers: must be a whole number of at least 1, or "auto"',
    ])
    expect(problems('version: 1\nservices:\n  users:\n    retries: { on: [connect-failure, 5000] }\n')).toEqual([
      'routes.yaml:4:38 services.users.retries.on[1]: must be connect-failure or an HTTP status code (100-599)',
    ])
  })

  test('keys that go together', () => {
    expect(problems('version: 1\nserver:\n  tls: { cert: a.crt }\nservices: { users: { tls: { key: k } } }\n')).toEqual([
      'routes.yaml:3:8 server.tls: missing required key "key"',
      'routes.yaml:4:27 services.users.tls: missing key "cert", required together with "key"',
    ])
  })
})

describe('cross-checks', () => {
  test('a route naming an undeclared service', () => {
    const text = yaml`
      version: 1
      services:
        users:
          instances: []
      routes:
        - name: a
          service_name: users
          methods: [GET]
          path: /a
          upstream_path: /a
        - name: b
          service_name: users
          methods: [GET]
          path: /b
          upstream_path: /b
        - name: c
          service_name: user
          methods: [GET]
          path: /c
          upstream_path: /c
    `
    expect(problems(text)).toEqual([
      'routes.yaml:17:19 routes[2].service_name: service "user" is not declared (did you mean "users"?)',
    ])
  })

  test('route names are unique; the second is pointed at, naming the first', () => {
    const text = yaml`
      version: 1
      services: { users: { instances: [] } }
      routes:
        - name: list-users
          service_name: users
          methods: [GET]
          path: /users
          upstream_path: /v1/users
        - name: list-users
          service_name: users
          methods: [POST]
          path: /users
          upstream_path: /v1/users
    `
    expect(problems(text)).toEqual([
      'routes.yaml:9:11 routes[1].name: duplicate route name "list-users" (first used at routes.yaml:4:11): give each route its own name',
    ])
  })

  test('path templates must parse', () => {
    const text = yaml`
      version: 1
      services: { users: { instances: [] } }
      routes:
        - name: bad
          service_name: users
          methods: [GET]
          path: /a//b
          upstream_path: /x/<float:y>
    `
    expect(problems(text)).toEqual([
      'routes.yaml:7:11 routes[0].path: must not contain an empty segment ("//")',
      'routes.yaml:8:20 routes[0].upstream_path: unknown converter "float" in "<float:y>" (use int, uuid, path or none)',
    ])
  })

  test('upstream placeholders: absent from path or plain is fine, a converter other than the path\'s is not', () => {
    const accepted = yaml`
      version: 1
      services: { users: { instances: [] } }
      routes:
        - name: submit
          service_name: users
          methods: [POST]
          path: /<service_name>/<int:id>/<path:rest>
          upstream_path: /v1/<tenant>/<id>/<rest>
    `
    expect(load(accepted).config.routes[0].upstream_path).toBe('/v1/<tenant>/<id>/<rest>')

    const mismatched = yaml`
      version: 1
      services: { users: { instances: [] } }
      routes:
        - name: files
          service_name: users
          methods: [GET]
          path: /files/<name>/<uuid:id>/<path:rest>
          upstream_path: /v1/<path:name>/<int:id>/<rest>
    `
    expect(problems(mismatched)).toEqual([
      'routes.yaml:8:20 routes[0].upstream_path: placeholder <path:name> does not match <name> in path: write it as <name>',
      'routes.yaml:8:20 routes[0].upstream_path: placeholder <int:id> does not match <uuid:id> in path: write it as <id> or <uuid:id>',
    ])
  })

  test.each([
    ['http://u:p@host:9001', 'must not contain user info ("user:password@"); give credentials to a pipe, not the URL'],
    ['http://host/x', 'must not have a path ("/x"); put paths in the routes\' upstream_path'],
    ['http://host/./', 'must not have a path ("/./"); put paths in the routes\' upstream_path'],
    ['ftp://host', 'must use http:// or https://, not ftp://'],
    ['http://host?x=1', 'must not have a query or fragment; write it as http://host[:port] or https://host[:port]'],
    ['http://host#top', 'must not have a query or fragment; write it as http://host[:port] or https://host[:port]'],
    ['http://host\\x', 'must not contain whitespace or backslashes; write it as http://host[:port] or https://host[:port]'],
    ['http:host', 'must start with http://; write it as http://host[:port] or https://host[:port]'],
    ['host:9001', 'must use http:// or https://, not host://'],
    ['http://host:99999', 'is not a valid URL; write it as http://host[:port] or https://host[:port]'],
  ])('instance URL %s is refused', (url, message) => {
    expect(checkInstanceUrl(url)).toBe(message)
    expect(problems(`version: 1\nservices:\n  users:\n    instances:\n      - url: "${url.replace(/\\/g, '\\\\')}"\n`)).toEqual([
      `routes.yaml:5:14 services.users.instances[0].url: ${message}`,
    ])
  })

  test.each(['http://127.0.0.1:9001', 'https://users.internal', 'http://users:80/', 'http://[::1]:9001'])('instance URL %s is fine', url => {
    expect(checkInstanceUrl(url)).toBeUndefined()
  })

  test('pipe names resolve through the catalog, with a suggestion', () => {
    const text = yaml`
      version: 1
      services: { users: { instances: [] } }
      routes:
        - name: r
          service_name: users
          methods: [GET]
          path: /r
          upstream_path: /r
          pipelines:
            inbound:
              - name: jtw
      global:
        outbound: [{ name: cors-headers }]
    `
    expect(problems(text)).toEqual([
      'routes.yaml:11:17 routes[0].pipelines.inbound[0].name: unknown pipe "jtw" (did you mean "jwt"?)',
      'routes.yaml:13:22 global.outbound[0].name: unknown pipe "cors-headers": it is neither built in nor a module in pipes_dir',
    ])
  })

  test('without a catalog every pipe name is unknown', () => {
    const text = ONE_ROUTE + '    pipelines: { inbound: [{ name: jwt }] }\n'
    expect(problems(text, { pipes: undefined })).toEqual([
      'routes.yaml:12:36 routes[0].pipelines.inbound[0].name: unknown pipe "jwt": it is neither built in nor a module in pipes_dir',
    ])
  })

  test('a pipe\'s own checks are reported at its properties, or its name when it has none', () => {
    const check = jest.fn((name: string, properties: Record<string, unknown>, phase: string) =>
      name === 'jwt' && properties.algorithms === undefined ? [`missing required key "algorithms" (${phase})`] : [])
    const text = yaml`
      version: 1
      global:
        inbound:
          - name: jwt
            properties:
              secret: s
        outbound:
          - name: jwt
    `
    expect(problems(text, { pipes: catalog(['jwt'], check) })).toEqual([
      'routes.yaml:5:7 global.inbound[0].properties: pipe "jwt": missing required key "algorithms" (inbound)',
      'routes.yaml:8:13 global.outbound[0].name: pipe "jwt": missing required key "algorithms" (outbound)',
    ])
  })

  test('a catalog may be built from the resolved pipes_dir', () => {
    withTempDir(dir => {
      const file = path.join(dir, 'routes.yaml')
      fs.writeFileSync(file, 'version: 1\npipes_dir: custom\n')
      const factory = jest.fn(() => PIPES)
      loadConfigFile(file, { pipes: factory })
      expect(factory).toHaveBeenCalledWith(path.join(dir, 'custom'))
    })
  })

  test('a non-loopback admin host needs a token', () => {
    expect(problems('version: 1\nadmin:\n  host: 0.0.0.0\n')).toEqual([
      'routes.yaml:3:9 admin.host: admin.token is required when admin.host is not a loopback address',
    ])
    for (const host of ['127.0.0.1', '127.0.0.2', '::1', '"[::1]"', 'localhost']) {
      expect(load(`version: 1\nadmin:\n  host: ${host}\n`).config.admin.token).toBeUndefined()
    }
    expect(load('version: 1\nadmin:\n  host: 0.0.0.0\n  token: t\n').config.admin.token).toBe('t')
  })

  test('trust_proxy holds addresses or CIDR ranges', () => {
    expect(load('version: 1\nserver:\n  trust_proxy: [10.0.0.0/8, "::1", "fd00::/8", 192.168.1.1]\n').config.server.trust_proxy).toHaveLength(4)
    expect(problems('version: 1\nserver:\n  trust_proxy: [10.0.0.0/33, proxy.local]\n')).toEqual([
      'routes.yaml:3:17 server.trust_proxy[0]: "10.0.0.0/33" is not an IP address or CIDR range (e.g. 10.0.0.0/8 or fd00::/8)',
      'routes.yaml:3:30 server.trust_proxy[1]: "proxy.local" is not an IP address or CIDR range (e.g. 10.0.0.0/8 or fd00::/8)',
    ])
  })
})

describe('RouteConflict', () => {
  const route = (name: string, methods: string, routePath: string): string => yaml`
      - name: ${name}
        service_name: users
        methods: [${methods}]
        path: ${routePath}
        upstream_path: /v1
  `
  const config = (...routes: string[]): string => 'version: 1\nservices: { users: { instances: [] } }\nroutes:\n' + routes.join('')

  test('same shape and method: reported at the second path, naming the first with its location', () => {
    expect(problems(config(route('a', 'GET, POST', '/users/<id>'), route('b', 'DELETE, POST', '/users/<user_id>')))).toEqual([
      'routes.yaml:12:9 routes[1].path: RouteConflict: same path shape as route "a" (routes.yaml:7:9) with overlapping method POST',
    ])
  })

  test('HEAD is implied by GET', () => {
    expect(problems(config(route('a', 'GET', '/users'), route('b', 'HEAD', '/users')))).toEqual([
      'routes.yaml:12:9 routes[1].path: RouteConflict: same path shape as route "a" (routes.yaml:7:9) with overlapping method HEAD',
    ])
    expect(problems(config(route('a', 'HEAD', '/users'), route('b', 'GET, PUT', '/users')))).toEqual([
      'routes.yaml:12:9 routes[1].path: RouteConflict: same path shape as route "a" (routes.yaml:7:9) with overlapping method HEAD',
    ])
  })

  test('several shared methods are all named', () => {
    expect(problems(config(route('a', 'GET, PUT', '/u'), route('b', 'PUT, GET', '/u')))).toEqual([
      'routes.yaml:12:9 routes[1].path: RouteConflict: same path shape as route "a" (routes.yaml:7:9) with overlapping methods PUT, GET',
    ])
  })

  test('different methods, converters, statics or trailing slash do not conflict', () => {
    expect(() => load(config(
      route('a', 'GET', '/users/<id>'),
      route('b', 'POST', '/users/<id>'),
      route('c', 'GET', '/users/<int:id>'),
      route('d', 'GET', '/users/<id>/'),
      route('e', 'GET', '/users/me'),
      route('f', 'GET', '/users/<path:rest>'),
    ))).not.toThrow()
  })

  test('shape keys', () => {
    const key = (p: string): string => routeShapeKey(parseTemplate(p, 'svc'))
    expect(key('/a/<x>/<int:n>/<uuid:u>/<path:p>/')).toBe('/a/<string>/<int>/<uuid>/<path>/')
    expect(key('/<service_name>/<y>')).toBe(key('/svc/<z>'))
    expect(key('/')).toBe('/')
    expect(overlappingMethods(['GET'], ['GET'])).toEqual(['GET'])
    expect(overlappingMethods(['POST'], ['HEAD'])).toEqual([])
  })
})

describe('reporting', () => {
  test('every problem at once, in file order', () => {
    const text = yaml`
      version: 1
      server:
        port: \${PORT}
      services:
        users:
          instances:
            - url: http://user:secret@users.internal
      routes:
        - name: a
          service_name: usrs
          methods: [GET]
          path: /a
          upstream_path: /a
          pipelines: { inbound: [{ name: jtw }] }
      admn: {}
    `
    expect(problems(text)).toEqual([
      'routes.yaml:3:9 server.port: environment variable PORT is not set: set it, or give a default with ${PORT:-value}',
      'routes.yaml:7:14 services.users.instances[0].url: must not contain user info ("user:password@"); give credentials to a pipe, not the URL',
      'routes.yaml:10:19 routes[0].service_name: service "usrs" is not declared (did you mean "users"?)',
      'routes.yaml:14:36 routes[0].pipelines.inbound[0].name: unknown pipe "jtw" (did you mean "jwt"?)',
      'routes.yaml:15:1 admn: unknown key "admn" (did you mean "admin"?)',
    ])
  })

  test('ConfigError carries the problems as data', () => {
    let error: unknown
    try {
      load('version: 2\n')
    } catch (err) {
      error = err
    }
    expect(error).toBeInstanceOf(ConfigError)
    const { problems: list, message } = error as ConfigError
    expect(list).toEqual([{ file: 'routes.yaml', line: 1, col: 10, path: 'version', message: 'must be 1' }])
    expect(message).toBe(formatProblem(list[0]))
  })

  test('a file inside cwd is named relative to it; one outside, as given', () => {
    const inside = path.join(process.cwd(), 'routes.yaml')
    expect(() => loadConfigText('version: 2\n', inside)).toThrow('routes.yaml:1:10 version: must be 1')
    withTempDir(dir => {
      const file = path.join(dir, 'routes.yaml')
      fs.writeFileSync(file, 'version: 2\n')
      expect(() => loadConfigFile(file)).toThrow(`${file}:1:10 version: must be 1`)
    })
  })

  test('an unreadable file is a ConfigError at 1:1', () => {
    withTempDir(dir => {
      const file = path.join(dir, 'missing.yaml')
      expect(() => loadConfigFile(file)).toThrow(new ConfigError([
        { file, line: 1, col: 1, path: '', message: 'cannot read the config file: no such file' },
      ]))
      expect(() => loadConfigFile(dir)).toThrow(`${dir}:1:1: cannot read the config file: it is a directory, not a file`)
    })
  })
})

describe('the loaded config', () => {
  test('is deeply frozen', () => {
    const { config } = load(ONE_ROUTE)
    expect(Object.isFrozen(config)).toBe(true)
    expect(Object.isFrozen(config.server.limits)).toBe(true)
    expect(Object.isFrozen(config.routes[0].methods)).toBe(true)
    expect(Object.isFrozen(config.services.users.instances[0])).toBe(true)
    expect(() => { (config.routes as unknown[]).push({}) }).toThrow(TypeError)
  })

  test('absolute file paths are kept; relative ones follow the file, not cwd', () => {
    withTempDir(dir => {
      fs.mkdirSync(path.join(dir, 'conf'))
      const file = path.join(dir, 'conf', 'routes.yaml')
      fs.writeFileSync(file, yaml`
        version: 1
        pipes_dir: ../shared-pipes
        server:
          tls: { cert: /etc/ssl/gw.crt, key: gw.key }
        services:
          users:
            exception_handler: handlers/users.ts
            tls: { ca: ./ca.pem }
      `)
      const { config } = loadConfigFile(file)
      expect(config.pipes_dir).toBe(path.join(dir, 'shared-pipes'))
      expect(config.server.tls).toEqual({ cert: '/etc/ssl/gw.crt', key: path.join(dir, 'conf', 'gw.key') })
      expect(config.services.users.exception_handler).toBe(path.join(dir, 'conf', 'handlers', 'users.ts'))
      expect(config.services.users.tls?.ca).toBe(path.join(dir, 'conf', 'ca.pem'))
    })
  })

  test('locate() finds a node, or its nearest written parent', () => {
    const loaded = load(ONE_ROUTE)
    expect(loaded.locate(['routes', 0, 'path'])).toEqual({ line: 10, col: 11 })
    expect(loaded.locate(['routes', 0])).toEqual({ line: 7, col: 5 })
    // A block below its key is placed at the key, where the user looks for it.
    expect(loaded.locate(['services', 'users'])).toEqual({ line: 3, col: 3 })
    expect(loaded.locate(['services', 'users', 'instances', 0, 'url'])).toEqual({ line: 5, col: 14 })
    // Defaults are not in the file: the route itself, then the document.
    expect(loaded.locate(['routes', 0, 'pipelines', 'inbound'])).toEqual({ line: 7, col: 5 })
    expect(loaded.locate(['server', 'port'])).toEqual({ line: 1, col: 1 })
    expect(problemAt(loaded, ['routes', 0, 'upstream_path'], 'cannot compile')).toEqual({
      file: 'routes.yaml', line: 11, col: 20, path: 'routes[0].upstream_path', message: 'cannot compile',
    })
  })

  test('YAML anchors and merge keys work', () => {
    const { config } = load(yaml`
      version: 1
      services:
        users: &defaults
          instances: []
          timeout_ms: 500
        orders:
          <<: *defaults
          balancer: random
    `)
    expect(config.services.orders).toEqual({ instances: [], timeout_ms: 500, balancer: 'random', connect_timeout_ms: 2000 })
  })
})

describe('schema/routes.schema.json', () => {
  const schema = JSON.parse(fs.readFileSync(SCHEMA_FILE, 'utf8')) as Record<string, unknown>

  test('is valid draft-07 JSON Schema that ajv compiles in strict mode', () => {
    const ajv = createSchemaAjv()
    expect(ajv.validateSchema(schema)).toBe(true)
    expect(() => ajv.compile(schema)).not.toThrow()
  })

  test('describes every key, so editors can explain it', () => {
    type SchemaNode = { description?: string, properties?: Record<string, SchemaNode>, items?: SchemaNode, additionalProperties?: SchemaNode | boolean, definitions?: Record<string, SchemaNode> }
    const undescribed: string[] = []
    const visit = (node: SchemaNode, where: string): void => {
      for (const [key, sub] of Object.entries(node.properties ?? {})) {
        if (sub.description === undefined) undescribed.push(`${where}/properties/${key}`)
        visit(sub, `${where}/properties/${key}`)
      }
      for (const [key, sub] of Object.entries(node.definitions ?? {})) visit(sub, `${where}/definitions/${key}`)
      if (node.items !== undefined) visit(node.items, `${where}/items`)
      if (typeof node.additionalProperties === 'object') visit(node.additionalProperties, `${where}/additionalProperties`)
    }
    visit(schema as SchemaNode, '#')
    expect(undescribed).toEqual([])
  })
})
