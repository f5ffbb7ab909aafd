import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { loadEnsemble } from '../src/ensemble/ensemble.js';
import { ForbiddenError, NotFoundError, UnavailableError } from '../src/errors.js';
import type { ModelControl } from '../src/config.js';
import { compareVersions, ModelRepository } from '../src/repository.js';
import { editManifest, embeddedConfig, TINY, TINY_SINGLE } from './helpers.js';

const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined };
const load = (dir: string) => loadEnsemble(embeddedConfig({ modelDir: dir, workers: 1 }), quiet);
const image = new Float32Array(28 * 28).fill(0.5);

/** A repository folder: tiny-ensemble in versions 1.0.0 and 2.0.0, tiny-single unversioned. */
async function makeRepository(): Promise<string> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'redserve-repo-'));
  for (const version of ['1.0.0', '2.0.0']) await addVersion(root, version);
  await cp(TINY_SINGLE, path.join(root, 'tiny-single'), { recursive: true });
  return root;
}

async function addVersion(root: string, version: string, edit: (m: Record<string, any>) => void = () => undefined) {
  const dir = path.join(root, 'tiny-ensemble', version);
  await mkdir(path.dirname(dir), { recursive: true });
  await cp(TINY, dir, { recursive: true });
  await editManifest(dir, (m) => { m.version = version; edit(m); });
  return dir;
}

function repository(root: string, control: ModelControl = 'explicit', maxModels = 8) {
  return new ModelRepository({ root, single: null, control, maxModels, pollMs: 60_000 }, load, quiet);
}

t.test('version folders order numerically, then as text', async (t) => {
  t.same(['10', '2', '1.10.0', '1.2.0', 'b', 'a'].sort(compareVersions), ['1.2.0', '1.10.0', '2', '10', 'a', 'b']);
});

t.test('a repository serves each model at its highest version; the first name is the default', async (t) => {
  const root = await makeRepository();
  const repo = repository(root);
  await repo.start();
  t.teardown(async () => { await repo.close(); await rm(root, { recursive: true }); });
  t.same(repo.index(), [
    { name: 'tiny-ensemble', version: '2.0.0', state: 'READY', reason: '' },
    { name: 'tiny-single', version: '1.0.0', state: 'READY', reason: '' },
  ]);
  t.equal(repo.defaultModel, 'tiny-ensemble');
  t.equal(repo.serving().manifest.version, '2.0.0');
  t.equal(repo.serving('tiny-single').manifest.name, 'tiny-single');
  t.equal(repo.serving('tiny-ensemble', '2.0.0').manifest.version, '2.0.0');
  t.throws(() => repo.serving('tiny-ensemble', '1.0.0'), NotFoundError, 'only the highest version is loaded');
  t.throws(() => repo.serving('nope'), NotFoundError);
  const probabilities = await repo.use('tiny-single', undefined, (e) => e.classify(image, 1));
  t.equal(probabilities[0].length, 10);
});

t.test('a folder whose manifest disagrees with its name or version is refused, naming both', async (t) => {
  const root = await makeRepository();
  await addVersion(root, '3.0.0', (m) => { m.version = '3.0.1'; });
  const renamed = path.join(root, 'other-name');
  await cp(TINY_SINGLE, renamed, { recursive: true });
  const repo = repository(root);
  await repo.start();
  t.teardown(async () => { await repo.close(); await rm(root, { recursive: true }); });
  const byName = new Map(repo.index().map((e) => [e.name, e]));
  t.equal(byName.get('tiny-ensemble')!.state, 'UNAVAILABLE');
  t.match(byName.get('tiny-ensemble')!.reason, /version is '3\.0\.1', its folder '3\.0\.0'/);
  t.match(byName.get('other-name')!.reason, /names the model 'tiny-single', its folder 'other-name'/);
  t.throws(() => repo.serving('other-name'), UnavailableError);
});

t.test('a new version loads beside the serving one under load: no request fails, the old one closes after its requests', async (t) => {
  const root = await makeRepository();
  const repo = repository(root);
  await repo.start();
  t.teardown(async () => { await repo.close(); await rm(root, { recursive: true }); });
  await addVersion(root, '3.0.0');
  let stop = false;
  const statuses = new Map<string, number>();
  const client = async () => {
    while (!stop) {
      try {
        const version = await repo.use('tiny-ensemble', undefined, async (e) => { await e.classify(image, 1); return e.manifest.version; });
        statuses.set(version, (statuses.get(version) ?? 0) + 1);
      } catch (err) {
        statuses.set(`failed: ${(err as Error).message}`, (statuses.get(`failed: ${(err as Error).message}`) ?? 0) + 1);
      }
    }
  };
  const clients = Array.from({ length: 4 }, client);
  await new Promise((r) => setTimeout(r, 100));
  const entry = await repo.load('tiny-ensemble');
  await new Promise((r) => setTimeout(r, 100));
  stop = true;
  await Promise.all(clients);
  t.same(entry, { name: 'tiny-ensemble', version: '3.0.0', state: 'READY', reason: '' });
  t.same([...statuses.keys()].filter((k) => k.startsWith('failed')), [], 'no request failed');
  t.ok((statuses.get('2.0.0') ?? 0) > 0 && (statuses.get('3.0.0') ?? 0) > 0, `answered by both versions: ${JSON.stringify([...statuses])}`);
  t.equal(repo.serving('tiny-ensemble').manifest.version, '3.0.0');
});

t.test('a broken version is refused and the old one keeps serving, with the reason in the index', async (t) => {
  const root = await makeRepository();
  const repo = repository(root);
  await repo.start();
  t.teardown(async () => { await repo.close(); await rm(root, { recursive: true }); });
  const broken = await addVersion(root, '3.0.0');
  await writeFile(path.join(broken, 'member-1.onnx'), 'not an onnx file');
  const entry = await repo.load('tiny-ensemble');
  t.equal(entry.state, 'READY');
  t.equal(entry.version, '2.0.0');
  t.match(entry.reason, /version 3\.0\.0 failed to load \(version 2\.0\.0 keeps serving\): .*member-1\.onnx/s);
  t.equal(repo.serving('tiny-ensemble').manifest.version, '2.0.0');
});

t.test('unloading waits for the requests that hold the model; later requests get not found', async (t) => {
  const root = await makeRepository();
  const repo = repository(root);
  await repo.start();
  t.teardown(async () => { await repo.close(); await rm(root, { recursive: true }); });
  let release!: () => void;
  const held = repo.use('tiny-single', undefined, async (e) => {
    await new Promise<void>((r) => { release = r; });
    return e.classify(image, 1);
  });
  let unloaded = false;
  const unloading = repo.unload('tiny-single').then((e) => { unloaded = true; return e; });
  await new Promise((r) => setTimeout(r, 50));
  t.notOk(unloaded, 'unload waits for the request in flight');
  t.equal(repo.index().find((e) => e.name === 'tiny-single')!.state, 'UNLOADING');
  t.throws(() => repo.serving('tiny-single'), NotFoundError, 'no new request gets it');
  release();
  t.equal((await held)[0].length, 10, 'the held request is answered');
  t.same(await unloading, { name: 'tiny-single', version: '1.0.0', state: 'UNAVAILABLE', reason: 'unloaded' });
  const reloaded = await repo.load('tiny-single');
  t.equal(reloaded.state, 'READY', 'a model unloaded can be loaded again');
});

t.test('load and unload need --model-control explicit; --max-models bounds what loads', async (t) => {
  const root = await makeRepository();
  const repo = repository(root, 'none', 1);
  await repo.start();
  t.teardown(async () => { await repo.close(); await rm(root, { recursive: true }); });
  await t.rejects(repo.load('tiny-ensemble'), ForbiddenError);
  await t.rejects(repo.unload('tiny-ensemble'), ForbiddenError);
  const byName = new Map(repo.index().map((e) => [e.name, e]));
  t.equal(byName.get('tiny-ensemble')!.state, 'READY');
  t.equal(byName.get('tiny-single')!.state, 'UNAVAILABLE');
  t.match(byName.get('tiny-single')!.reason, /--max-models 1/);
});

t.test('polling loads a new version, reloads a package replaced in place, and unloads a folder that left', async (t) => {
  const root = await makeRepository();
  const repo = repository(root, 'poll');
  await repo.start();
  t.teardown(async () => { await repo.close(); await rm(root, { recursive: true }); });
  await addVersion(root, '3.0.0');
  await repo.pollOnce();
  t.equal(repo.serving('tiny-ensemble').manifest.version, '3.0.0');
  await rm(path.join(root, 'tiny-ensemble', '3.0.0'), { recursive: true });
  await repo.pollOnce();
  t.equal(repo.serving('tiny-ensemble').manifest.version, '2.0.0', 'a version folder removed: the highest left serves (roll back)');
  const before = repo.serving('tiny-single');
  await rm(path.join(root, 'tiny-single'), { recursive: true });
  await cp(TINY_SINGLE, path.join(root, 'tiny-single'), { recursive: true });
  await editManifest(path.join(root, 'tiny-single'), (m) => { m.description = 'replaced in place'; });
  await repo.pollOnce();
  t.not(repo.serving('tiny-single'), before, 'replaced in place: reloaded');
  await repo.pollOnce();
  await rm(path.join(root, 'tiny-single'), { recursive: true });
  await repo.pollOnce();
  t.throws(() => repo.serving('tiny-single'), NotFoundError);
  t.match(repo.index().find((e) => e.name === 'tiny-single')!.reason, /left the repository/);
});

t.test('with one --model, a package that cannot load rejects start-up', async (t) => {
  const repo = new ModelRepository({ root: null, single: '/nonexistent/pkg', control: 'none', maxModels: 1, pollMs: 1000 }, load, quiet);
  await t.rejects(repo.start());
  t.throws(() => repo.serving(), UnavailableError);
});
