/** Built-in pipes of the "auth" group (registered in ./index.ts). */
import type { PipeDefinition } from '../types'
import apiKey from './api-key'
import basicAuth from './basic-auth'
import jwt from './jwt'

export const authPipes: Array<PipeDefinition<any>> = [jwt, apiKey, basicAuth]
