/**
 * The OpenAPI document as YAML, generated from the registered routes (no model is loaded).
 */
import { createServer } from '../app.js';
import { loadConfig } from '../config.js';
import { ModelState } from '../model-state.js';

export async function openapiDocument(): Promise<string> {
  const config = { ...loadConfig([], {}), logLevel: 'silent' };
  const server = createServer(config, new ModelState(), { logger: false });
  await server.ready();
  const yaml = server.swagger({ yaml: true });
  await server.close();
  return yaml;
}
