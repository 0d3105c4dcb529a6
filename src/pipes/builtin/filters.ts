/** Built-in pipes of the "filters" group (registered in ./index.ts). */
import type { PipeDefinition } from '../types'
import cors from './cors'
import ipFilter from './ip-filter'
import refererFilter from './referer-filter'
import requestHeaders from './request-headers'
import requestSize from './request-size'
import requestValidate from './request-validate'

export const filtersPipes: Array<PipeDefinition<any>> = [ipFilter, refererFilter, cors, requestSize, requestValidate, requestHeaders]
