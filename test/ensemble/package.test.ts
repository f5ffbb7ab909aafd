import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { buildApp } from '../../src/app.js';
import { readPackage, validateManifest } from '../../src/ensemble/manifest.js';
import { copyPackage, editManifest, goldenOf, manifestOf, startApp, embeddedConfig, TINY } from '../helpers.js';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';

const sha = async (file: string) => createHash('sha256').update(await readFile(file)).digest('hex');

t.test('the fixture package is valid', async (t) => {
  t.same(validateManifest(await manifestOf(TINY)), []);
  const pkg = await readPackage(TINY);
  t.equal(pkg.members.length, 3);
  t.equal(pkg.golden.length, (await goldenOf(TINY)).length);
});

t.test('validation reports every problem at once, naming each key', async (t) => {
  const m: any = await manifestOf(TINY);
  m.input.std = [0];
  m.input.resize.fit = 'squash';
  m.labels = ['a'];
  m.members[1].sha256 = 'nope';
  delete m.golden;
  m.colour = 'blue';
  const problems = validateManifest(m);
  for (const expected of ['input.std', 'input.resize.fit', 'labels: 1 labels for 10 classes', 'members[1].sha256', 'golden: missing', 'colour: unknown key']) {
    t.ok(problems.some((p) => p.includes(expected)), `reports ${expected}`);
  }
  t.ok(problems.length >= 6);
});

t.test('bad packages stop start-up with a message naming the problem', async (t) => {
  const cases: [string, (dir: string) => Promise<void>, RegExp][] = [
    ['missing manifest', (dir) => rm(path.join(dir, 'manifest.json')), /manifest.json not found/],
    ['manifest not JSON', (dir) => writeFile(path.join(dir, 'manifest.json'), '{ nope'), /not valid JSON/],
    ['tampered member', (dir) => writeFile(path.join(dir, 'member-1.onnx'), 'garbage'), /members\[1\]: sha256 of member-1.onnx does not match/],
    ['missing member file', (dir) => rm(path.join(dir, 'member-2.onnx')), /members\[2\]: file member-2.onnx not found/],
    ['wrong input name', (dir) => editManifest(dir, (m) => { m.input.name = 'pixels'; }), /member 0: inputs are \[input\], the manifest says \[pixels\]/],
    ['wrong input shape', (dir) => editManifest(dir, (m) => { m.input.shape = [3, 28, 28]; m.input.channels = 'rgb'; m.input.mean = [0, 0, 0]; m.input.std = [1, 1, 1]; }), /golden.json images\[0\].input: expected 2352 numbers|input shape is/],
    ['unknown kind', (dir) => editManifest(dir, (m) => { m.kind = 'forest'; }), /kind: expected 'ensemble' or 'ps-red', got "forest"/],
  ];
  for (const [name, breakIt, message] of cases) {
    const dir = await copyPackage();
    await breakIt(dir);
    await t.rejects(startApp({ modelDir: dir }), message, name);
    await rm(dir, { recursive: true, force: true });
  }
});

t.test('a member that misses its golden logits is refused, naming the member', async (t) => {
  const dir = await copyPackage();
  const goldenFile = path.join(dir, 'golden.json');
  const golden = JSON.parse(await readFile(goldenFile, 'utf8'));
  golden.images[1].logits[2][4] += 0.01;
  await writeFile(goldenFile, JSON.stringify(golden));
  const digest = await sha(goldenFile);
  await editManifest(dir, (m) => { m.golden.sha256 = digest; });
  await t.rejects(startApp({ modelDir: dir }), /member 2: logits on golden image 1 differ/);
  await rm(dir, { recursive: true, force: true });
});

t.test('cuda refuses to start without the CUDA execution provider', async (t) => {
  await t.rejects(startApp({ device: { kind: 'cuda', id: 0 } }), /cannot create a cuda session/);
});

t.test('/models: a kind ensemble stores its members, so parameters and memberParameters agree', async (t) => {
  const app = await startApp();
  t.teardown(() => app.close());
  const info = (await app.server.inject({ url: '/models' })).json();
  const sum = (await manifestOf(TINY)).members.reduce((s, m) => s + m.parameters, 0);
  t.same([info.parameters, info.memberParameters], [sum, sum]);
});

t.test('auto falls back to the CPU and reports it', async (t) => {
  const app = await startApp({ device: { kind: 'auto' } });
  t.equal((await app.server.inject({ url: '/models' })).json().provider, 'cpu');
  await app.close();
});

t.test('a package of random weights loads without an evaluation, and the service warns that it is no classifier', async (t) => {
  const RANDOM_WEIGHTS = 'serving random weights: benchmark package, not a classifier';
  const dir = await copyPackage();
  await editManifest(dir, (m) => {
    delete m.evaluation;
    m.benchmark = { randomWeights: true, arch: 'cnn-small', seed: 0 };
  });
  const warningsOf = async (modelDir: string) => {
    const lines: { level: number; msg: string; benchmark?: unknown }[] = [];
    const stream = { write: (line: string) => { lines.push(JSON.parse(line)); } };
    const app = buildApp(embeddedConfig({ modelDir, device: { kind: 'cpu' } }), { logger: { level: 'warn', stream } });
    await app.modelReady;
    const models = (await app.server.inject({ url: '/models' })).json();
    await app.close();
    return { warnings: lines.filter((l) => l.level === 40), models };
  };
  const bench = await warningsOf(dir);
  t.same(bench.warnings.map((l) => [l.msg, l.benchmark]), [[RANDOM_WEIGHTS, { randomWeights: true, arch: 'cnn-small', seed: 0 }]]);
  t.equal(bench.models.evaluation, undefined, '/models has no evaluation to show');
  t.same(bench.models.benchmark, { randomWeights: true, arch: 'cnn-small', seed: 0 }, '/models says the weights are random');
  const trained = await warningsOf(TINY);
  t.notOk(trained.warnings.some((l) => l.msg === RANDOM_WEIGHTS), 'a trained package: no such warning');
  t.equal(trained.models.benchmark, undefined, 'a trained package: no benchmark field');
  await rm(dir, { recursive: true, force: true });
});
