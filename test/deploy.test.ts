/** Docker cannot run in CI here, so the deployment files are checked by reading them. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import { DEFAULTS } from '../src/config.js';
import { openapiDocument } from '../src/http/openapi-document.js';
import { ROOT } from './helpers.js';

const read = (f: string) => readFile(path.join(ROOT, f), 'utf8');

t.test('Dockerfile: multi-stage, non-root, healthcheck on /readyz, default port and model', async (t) => {
  const df = await read('Dockerfile');
  t.ok((df.match(/^FROM /gm) ?? []).length >= 2, 'multi-stage');
  t.match(df, /^USER node$/m, 'runs as the non-root node user');
  t.match(df, /^HEALTHCHECK .*\n.*\/readyz/m, 'healthcheck probes /readyz');
  t.match(df, new RegExp(`^EXPOSE ${DEFAULTS.port}$`, 'm'), 'exposes the default port');
  t.match(df, /CMD \["node", "dist\/src\/server.js"\]/, 'starts the compiled server');
  t.match(df, /COPY package.json package-lock.json .npmrc/, 'installs with the project npm config (CUDA download skipped)');
  t.match(df, /ONNXRUNTIME_NODE_INSTALL=cuda12/, 'the cuda variant installs the CUDA provider');
  t.match(df, new RegExp(`REDSERVE_MODEL=/app/${DEFAULTS.modelDir}`), 'default model matches the code default');
  const ignore = await read('.dockerignore');
  for (const p of ['node_modules', '.venv', 'runs']) t.match(ignore, new RegExp(`^${p.replace('.', '\\.')}$`, 'm'));
});

t.test('docker-compose.yml: port, healthcheck path and environment match the code', async (t) => {
  const compose = YAML.parse(await read('docker-compose.yml'));
  const svc = compose.services.redserve;
  t.same(svc.ports, [`${DEFAULTS.port}:${DEFAULTS.port}`]);
  t.match(svc.healthcheck.test.join(' '), /\/readyz/);
  t.equal(svc.environment.REDSERVE_SAMPLING, 'random');
});

t.test('openapi.yaml is exactly what the routes generate (run `npm run openapi` after changing a route)', async (t) => {
  const committed = YAML.parse(await read('openapi.yaml'));
  const generated = YAML.parse(await openapiDocument());
  t.same(committed, generated);
  for (const p of ['/classify', '/healthz', '/readyz', '/models', '/v2', '/v2/health/live', '/v2/health/ready',
    '/v2/models/{name}', '/v2/models/{name}/ready', '/v2/models/{name}/infer', '/v2/models/{name}/versions/{version}/infer']) {
    t.ok(committed.paths[p], `documents ${p}`);
  }
  const content = committed.paths['/classify'].post.requestBody.content;
  for (const type of ['image/png', 'image/jpeg', 'image/webp', 'image/gif', 'image/tiff', 'multipart/form-data', 'application/json']) {
    t.ok(content[type], `documents ${type} bodies`);
  }
});
