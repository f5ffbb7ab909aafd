/**
 * `npm run openapi`: write openapi.yaml from the route schemas (the single source of truth).
 */
import { writeFile } from 'node:fs/promises';
import { openapiDocument } from './openapi-document.js';

const yaml = await openapiDocument();
await writeFile(new URL('../../../openapi.yaml', import.meta.url), yaml);
process.stdout.write('wrote openapi.yaml\n');
