/** Loading and validating routes.yaml (spec/config.md). */
export { loadConfigFile, loadConfigText, type LoadOptions } from './load'
export { ConfigError, formatPath, formatProblem, problemAt, type YamlPath } from './problems'
export type { PipeCatalog } from './validate'
export { overlappingMethods, routeShapeKey } from './route-shape'
export { checkInstanceUrl } from './instance-url'
export { SCHEMA_FILE } from './schema'
export type * from './types'
