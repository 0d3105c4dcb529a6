/**
 * The pipes a config may name. Built-in pipes and modules from `pipes_dir`
 * register here; until they do, every pipe name is unknown (a config error).
 */
import type { PipeCatalog } from '../config'

export function createPipeCatalog (): PipeCatalog {
  return {
    names: () => [],
    has: () => false,
  }
}
