/** Built-in pipes of the "traffic" group (registered in ./index.ts). */
import type { PipeDefinition } from '../types'

export const trafficPipes: Array<PipeDefinition<any>> = []
