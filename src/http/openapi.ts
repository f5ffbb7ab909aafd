/**
 * OpenAPI document settings. The paths come from the route schemas; `npm run openapi` writes the
 * result to openapi.yaml, and a test fails when the file and the routes disagree.
 */
import type { Config } from '../config.js';
import { SERVICE_NAME, SERVICE_VERSION } from '../version.js';

export function openapiInfo(config: Pick<Config, 'port'>) {
  return {
    openapi: '3.0.3',
    info: {
      title: SERVICE_NAME,
      description: 'Random Ensemble Defense serving: each request is answered by one ensemble member drawn at random.',
      version: SERVICE_VERSION,
    },
    servers: [{ url: `http://localhost:${config.port}` }],
  };
}
