/** Built-in pipes of the "traffic" group (registered in ./index.ts). */
import type { PipeDefinition } from '../types'
import { jsonTransformPipe } from './json-transform'
import { rateLimitPipe } from './rate-limit'
import { responseHeadersPipe } from './response-headers'
import { statusMapPipe } from './status-map'

export const trafficPipes: Array<PipeDefinition<any>> = [rateLimitPipe, statusMapPipe, responseHeadersPipe, jsonTransformPipe]
