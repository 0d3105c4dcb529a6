/** Built-in pipes of the "filters" group (registered in ./index.ts). */
import type { PipeDefinition } from '../types'

export const filtersPipes: Array<PipeDefinition<any>> = []
