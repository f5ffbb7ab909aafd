/**
 * OpenAPI document settings. The paths come from the route schemas; `npm run openapi` writes the
 * result to openapi.yaml, and a test fails when the file and the routes disagree.
 */
import type { Config } from '../config.js';

export function openapiInfo(config: Pick<Config, 'port'>) {
  return {
    openapi: '3.0.3',
    info: {
      title: 'redserve',
      description: 'Random Ensemble Defense serving: each request is answered by one ensemble member drawn at random.',
      version: '0.1.0',
    },
    servers: [{ url: `http://localhost:${config.port}` }],
  };
}
