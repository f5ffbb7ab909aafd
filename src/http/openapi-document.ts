/**
 * The OpenAPI document as YAML, generated from the registered routes (no model is loaded).
 */
import { createServer } from '../app.js';
import { loadConfig } from '../config.js';
import { unstartedRepository } from '../repository.js';

export async function openapiDocument(): Promise<string> {
  const config = { ...loadConfig([], {}), logLevel: 'silent' };
  const server = createServer(config, unstartedRepository(config), { logger: false });
  await server.ready();
  const yaml = server.swagger({ yaml: true });
  await server.close();
  return yaml;
}
