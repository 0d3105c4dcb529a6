/** Every built-in pipe (pipes.md "Built-in pipes"), by name. */
import type { PipeDefinition } from '../types'
import { authPipes } from './auth'
import { filtersPipes } from './filters'
import { trafficPipes } from './traffic'

export const BUILTIN_PIPES: ReadonlyArray<PipeDefinition<any>> = [...authPipes, ...filtersPipes, ...trafficPipes]
