/**
 * The shipped routes.yaml and the README's first curl, served for real: the
 * example services npm start brings up, on free ports, behind the gateway.
 */
import path from 'node:path'
import type { AddressInfo } from 'node:net'
import request from 'supertest'
import { loadConfigFile } from '../src/config'
import { createGateway, type Gateway } from '../src/gateway'
import { createPipeCatalog } from '../src/pipes/catalog'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { startExampleServices } = require('../examples/services.js') as {
  startExampleServices (ports: Record<string, number>): Promise<{ urls: Record<string, string>, close (): Promise<void> }>
}

let services: Awaited<ReturnType<typeof startExampleServices>>
let gateway: Gateway
let url: string

beforeAll(async () => {
  services = await startExampleServices({ users1: 0, users2: 0, echo: 0 })
  const loaded = loadConfigFile(path.join(__dirname, '..', 'routes.yaml'), {
    env: { USERS_1_URL: services.urls.users1, USERS_2_URL: services.urls.users2, ECHO_URL: services.urls.echo },
    pipes: (pipesDir) => createPipeCatalog({ pipesDir }),
  })
  gateway = createGateway({ config: loaded })
  const address = await gateway.listen({ port: 0, host: '127.0.0.1' }) as AddressInfo
  url = `http://127.0.0.1:${address.port}`
})
afterAll(async () => { await gateway.close(); await services.close() })

test('the README\'s first curl: GET /users/42 is answered by a users instance', async () => {
  const res = await request(url).get('/users/42')
  expect(res.status).toBe(200)
  expect(res.body).toMatchObject({ id: 42, name: 'User 42', served_by: expect.stringMatching(/^users-[12]$/) })
})

test('round-robin alternates between the two users instances', async () => {
  const served = []
  for (let i = 0; i < 4; i++) served.push((await request(url).get('/users')).body.served_by)
  expect(new Set(served)).toEqual(new Set(['users-1', 'users-2']))
  expect(served[0]).not.toBe(served[1])
})

test('/echo shows what the upstream received', async () => {
  const res = await request(url).post('/echo/a/b?x=1').send({ hello: 'world' })
  expect(res.status).toBe(200)
  expect(res.body).toMatchObject({ method: 'POST', url: '/a/b?x=1', body: '{"hello":"world"}' })
  expect(res.body.headers['x-request-id']).toBe(res.headers['x-request-id'])
})

test('a non-integer user id is no route', async () => {
  const res = await request(url).get('/users/abc')
  expect(res.status).toBe(404)
  expect(res.body.error_code).toBe('RouteNotFound')
})
