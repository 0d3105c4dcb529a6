/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }] },
  moduleNameMapper: { '^sluice$': '<rootDir>/src/index.ts' },
  testTimeout: 20000,
  // Servers and sockets opened by a test must be closed by it; this makes leaks fail loudly.
  detectOpenHandles: false,
}
