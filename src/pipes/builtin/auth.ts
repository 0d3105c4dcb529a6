/** Built-in pipes of the "auth" group (registered in ./index.ts). */
import type { PipeDefinition } from '../types'

export const authPipes: Array<PipeDefinition<any>> = []
