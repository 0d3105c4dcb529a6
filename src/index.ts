/** The public API: what embedders and pipe modules import from 'sluice'. */
export { createGateway, compileGeneration, type Gateway, type GatewayOptions, type Generation, type Next } from './gateway'
export { GatewayError, ERROR_CODES, type ErrorCode } from './errors'
export { loadConfigFile, loadConfigText, ConfigError, formatProblem } from './config'
export type * from './config/types'
export { createLogger, silentLogger } from './observability/logger'
