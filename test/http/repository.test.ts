import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import type { App } from '../../src/app.js';
import type { ModelControl } from '../../src/config.js';
import { addVersion, goldenOf, makeRepository, png, startApp, TINY } from '../helpers.js';

async function serve(t: Test, control: ModelControl = 'explicit'): Promise<{ app: App; root: string }> {
  const root = await makeRepository();
  const app = await startApp({ modelRepository: root, modelControl: control, workers: 1 });
  t.teardown(async () => { await app.close(); await rm(root, { recursive: true }); });
  return { app, root };
}

const golden = await goldenOf(TINY);
const tensor = (name: string) => ({ inputs: [{ name: 'input', shape: [1, 1, 28, 28], datatype: 'FP32', data: golden[0].input }], id: name });

t.test('two packages from one repository: each answers by name, the first by default', async (t) => {
  const { app } = await serve(t);
  const image = await png(28, 28, 1);
  const byDefault = await app.server.inject({ method: 'POST', url: '/classify', headers: { 'content-type': 'image/png' }, payload: image });
  t.same([byDefault.statusCode, byDefault.json().model], [200, 'tiny-ensemble'], 'no ?model: the default (first by name)');
  const single = await app.server.inject({ method: 'POST', url: '/classify?model=tiny-single', headers: { 'content-type': 'image/png' }, payload: image });
  t.same([single.statusCode, single.json().model], [200, 'tiny-single']);
  const versioned = await app.server.inject({ method: 'POST', url: '/classify?model=tiny-ensemble&version=1.0.0', headers: { 'content-type': 'image/png' }, payload: image });
  t.equal(versioned.statusCode, 200);
  for (const name of ['tiny-ensemble', 'tiny-single']) {
    const v2 = await app.server.inject({ method: 'POST', url: `/v2/models/${name}/infer`, payload: tensor(name) });
    t.same([v2.statusCode, v2.json().model_name], [200, name], `v2 infer on ${name}`);
  }
  const unknown = await app.server.inject({ method: 'POST', url: '/classify?model=nope', headers: { 'content-type': 'image/png' }, payload: image });
  t.same([unknown.statusCode, unknown.json().error], [404, 'unknown_model']);
  t.match(unknown.json().message, /this server serves 'tiny-ensemble', 'tiny-single'/);
  const wrongVersion = await app.server.inject({ method: 'POST', url: '/v2/models/tiny-ensemble/versions/9/infer', payload: tensor('x') });
  t.same([wrongVersion.statusCode, wrongVersion.json().code], [404, 'unknown_version']);
  const models = (await app.server.inject({ url: '/models' })).json();
  t.equal(models.name, 'tiny-ensemble', '/models keeps the default model at its top level');
  t.same(models.models.map((m: { name: string }) => m.name), ['tiny-ensemble', 'tiny-single']);
  const index = (await app.server.inject({ method: 'POST', url: '/v2/repository/index' })).json();
  t.same(index, [
    { name: 'tiny-ensemble', version: '1.0.0', state: 'READY', reason: '' },
    { name: 'tiny-single', version: '1.0.0', state: 'READY', reason: '' },
  ]);
  t.equal((await app.server.inject({ url: '/readyz' })).statusCode, 200);
});

t.test('a new version loads under load with no failed request; a broken one is refused while the old serves', async (t) => {
  const { app, root } = await serve(t);
  await addVersion(root, '2.0.0');
  const statuses = new Map<string, number>();
  let stop = false;
  const client = async () => {
    while (!stop) {
      const res = await app.server.inject({ method: 'POST', url: '/v2/models/tiny-ensemble/infer', payload: tensor('load') });
      const key = res.statusCode === 200 ? `200 v${res.json().model_version}` : `${res.statusCode} ${res.body}`;
      statuses.set(key, (statuses.get(key) ?? 0) + 1);
    }
  };
  const clients = Array.from({ length: 4 }, client);
  await new Promise((r) => setTimeout(r, 150));
  const load = await app.server.inject({ method: 'POST', url: '/v2/repository/models/tiny-ensemble/load', payload: {} });
  await new Promise((r) => setTimeout(r, 150));
  stop = true;
  await Promise.all(clients);
  t.same([load.statusCode, load.json()], [200, {}]);
  const failed = [...statuses].filter(([k]) => !k.startsWith('200'));
  const answered = [...statuses].filter(([k]) => k.startsWith('200')).reduce((n, [, c]) => n + c, 0);
  t.comment(`requests during the load: ${JSON.stringify([...statuses])}`);
  t.same(failed, [], `no failed request of ${answered}`);
  t.ok((statuses.get('200 v1.0.0') ?? 0) > 0 && (statuses.get('200 v2.0.0') ?? 0) > 0, 'answered by the old version, then the new');

  const broken = await addVersion(root, '3.0.0');
  await writeFile(path.join(broken, 'member-0.onnx'), 'not an onnx file');
  const refused = await app.server.inject({ method: 'POST', url: '/v2/repository/models/tiny-ensemble/load' });
  t.same([refused.statusCode, refused.json().code], [400, 'load_failed']);
  t.match(refused.json().error, /version 3\.0\.0 failed to load \(version 2\.0\.0 keeps serving\)/);
  const still = await app.server.inject({ method: 'POST', url: '/v2/models/tiny-ensemble/infer', payload: tensor('after') });
  t.same([still.statusCode, still.json().model_version], [200, '2.0.0'], 'the old version keeps serving');
  const index = (await app.server.inject({ method: 'POST', url: '/v2/repository/index', payload: {} })).json();
  t.match(index[0], { name: 'tiny-ensemble', version: '2.0.0', state: 'READY', reason: /member-0\.onnx/ });
});

t.test('unload: in-flight requests finish, later ones get 404, readiness holds; load brings it back', async (t) => {
  const { app } = await serve(t);
  const inflight = Array.from({ length: 8 }, () => app.server.inject({ method: 'POST', url: '/v2/models/tiny-single/infer', payload: tensor('s') }));
  while (app.server.inflightRequests() === 0) await new Promise((r) => setImmediate(r));
  const admitted = app.server.inflightRequests();
  const unload = await app.server.inject({ method: 'POST', url: '/v2/repository/models/tiny-single/unload', payload: { parameters: { unload_dependents: false } } });
  t.same([unload.statusCode, unload.json()], [200, {}]);
  const codes = (await Promise.all(inflight)).map((r) => r.statusCode);
  t.ok(codes.filter((c) => c === 200).length >= admitted, `the ${admitted} admitted before the unload are answered (${codes})`);
  t.ok(codes.every((c) => c === 200 || c === 404), 'the others get 404, none a 5xx');
  const after = await app.server.inject({ method: 'POST', url: '/v2/models/tiny-single/infer', payload: tensor('s') });
  t.same([after.statusCode, after.json().code], [404, 'unknown_model']);
  t.equal((await app.server.inject({ url: '/v2/models/tiny-single/ready' })).statusCode, 404);
  t.equal((await app.server.inject({ url: '/readyz' })).statusCode, 200, 'an unloaded model does not take the server out of rotation');
  const index = (await app.server.inject({ method: 'POST', url: '/v2/repository/index' })).json();
  t.same(index[1], { name: 'tiny-single', version: '1.0.0', state: 'UNAVAILABLE', reason: 'unloaded' });
  t.equal((await app.server.inject({ method: 'POST', url: '/v2/repository/models/tiny-single/load' })).statusCode, 200);
  t.equal((await app.server.inject({ method: 'POST', url: '/v2/models/tiny-single/infer', payload: tensor('s') })).statusCode, 200);
  const missing = await app.server.inject({ method: 'POST', url: '/v2/repository/models/nope/load' });
  t.same([missing.statusCode, missing.json().code], [404, 'unknown_model']);
});

t.test('without --model-control explicit the repository API answers 403 and changes nothing', async (t) => {
  const { app } = await serve(t, 'none');
  for (const action of ['load', 'unload']) {
    const res = await app.server.inject({ method: 'POST', url: `/v2/repository/models/tiny-single/${action}` });
    t.same([res.statusCode, res.json().code], [403, 'model_control'], action);
    t.match(res.json().error, /--model-control none/);
  }
  t.equal((await app.server.inject({ method: 'POST', url: '/v2/models/tiny-single/infer', payload: tensor('s') })).statusCode, 200);
});

t.test('one --model: the repository API answers 403; the index lists the one model', async (t) => {
  const app = await startApp({ workers: 1 });
  t.teardown(() => app.close());
  const res = await app.server.inject({ method: 'POST', url: '/v2/repository/models/tiny-ensemble/unload' });
  t.equal(res.statusCode, 403);
  t.same((await app.server.inject({ method: 'POST', url: '/v2/repository/index' })).json(),
    [{ name: 'tiny-ensemble', version: '1.0.0', state: 'READY', reason: '' }]);
});
