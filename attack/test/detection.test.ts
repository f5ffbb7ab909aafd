import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { adaptiveClassify, DEFAULT_TRANSFORM, transformQuery, type AdaptiveStats, type Answer } from '../adaptive.js';
import { TargetClient } from '../client.js';
import { runAttacks } from '../harness.js';
import { readImageDir } from '../images.js';
import { StopAttack } from '../oracle.js';
import { detectionTable, renderMarkdown } from '../report.js';
import { Rng } from '../rng.js';
import { buildApp, type App } from '../../src/app.js';
import { embeddedConfig, type Config, type DetectSettings } from '../../src/config.js';
import { TINY_SINGLE } from '../../test/helpers.js';

const DETECT: DetectSettings = {
  mode: 'log', quantStep: 50, window: 20, hashes: 50, threshold: 25, history: 64, clients: 1000,
  globalSize: 1000, repeats: 5, cooldownS: 600, header: true, globalOwners: 2, globalQuota: 64,
};

async function serve(detect: Partial<DetectSettings>): Promise<{ app: App; url: string; posts: () => number }> {
  const config: Config = embeddedConfig({ modelDir: TINY_SINGLE, trustProxy: true, detect: { ...DETECT, ...detect } });
  const app = buildApp(config, { logger: false });
  let posts = 0;
  app.server.addHook('onRequest', async (req) => { if (req.method === 'POST') posts++; });
  await app.modelReady;
  return { app, url: await app.server.listen({ port: 0, host: '127.0.0.1' }), posts: () => posts };
}

// The untrained tiny member answers class 4 on the golden images: label them 4 (correct at start).
const dir = await mkdtemp(path.join(os.tmpdir(), 'redserve-detect-attack-'));
for (const k of [0, 1]) await writeFile(path.join(dir, `g${k}-label4.png`), await readFile(path.join(TINY_SINGLE, 'golden', `${k}.png`)));
const images = await readImageDir(dir, 10);

t.test('transformQuery: bounded, shifted, in range; strength 0 is the identity', async (t) => {
  const x = Float64Array.from({ length: 2 * 4 * 4 }, (_, i) => (i % 7) / 7);
  const rng = new Rng(3);
  t.same(transformQuery(x, [2, 4, 4], 0, 1, 0, rng, DEFAULT_TRANSFORM), x, 'strength 0');
  for (let k = 0; k < 50; k++) {
    const y = transformQuery(x, [2, 4, 4], 0, 1, 2, rng, DEFAULT_TRANSFORM);
    t.ok(y.every((v) => v >= 0 && v <= 1), 'clipped to the pixel range');
  }
  const shiftOnly = { ...DEFAULT_TRANSFORM, brightness: 0, noise: 0 };
  const seen = new Set<string>();
  for (let k = 0; k < 50; k++) seen.add(transformQuery(x, [2, 4, 4], 0, 1, 1, rng, shiftOnly).join());
  t.ok(seen.size > 1 && seen.size <= 9, `at most 9 shifts of one pixel (${seen.size} seen)`);
});

t.test('adaptiveClassify resamples refused queries, charges each, and stops after maxResamples', async (t) => {
  let calls = 0;
  let spent = 0;
  const stats: AdaptiveStats = { sent: 0, refused: 0, gaveUp: 0 };
  const refuseTwice = async (): Promise<Answer> => (++calls % 3 === 0 ? { probs: Float64Array.from([1, 0]) } : { refused: true });
  const classify = adaptiveClassify(refuseTwice, [1, 2, 2], 0, 1, new Rng(1), DEFAULT_TRANSFORM, () => { spent++; }, stats);
  t.same(await classify(new Float64Array(4)), Float64Array.from([1, 0]));
  t.same(stats, { sent: 3, refused: 2, gaveUp: 0 });
  t.equal(spent, 2, 'every resample is charged');
  const never = adaptiveClassify(async () => ({ refused: true }), [1, 2, 2], 0, 1, new Rng(1), { ...DEFAULT_TRANSFORM, maxResamples: 3 }, () => undefined, stats);
  await t.rejects(never(new Float64Array(4)), StopAttack, 'gives up like a spent budget');
  t.equal(stats.gaveUp, 1);
});

t.test('against --detect log: every run has its own identity, and the report says when it was flagged', async (t) => {
  const s = await serve({ mode: 'log' });
  t.teardown(() => s.app.close());
  const target = await TargetClient.connect(s.url);
  const report = await runAttacks({
    targets: [target], images, attacks: [{ kind: 'square', eot: 1 }, { kind: 'hsj', eot: 1 }, { kind: 'square', eot: 1, adaptive: true }],
    eps: 0.1, queries: 40, verify: 3, seed: 2, timeLimitSeconds: 600, pInit: 0.8, hsjGradQueries: 4,
    imageSource: dir, command: 'test', detection: true,
  });
  t.equal(report.settings.detection, true);
  const square = report.results.find((r) => r.attack === 'square')!;
  t.match(square.summary.detection, { runs: 2, flagged: 2 }, 'plain Square is flagged on both images');
  for (const o of square.images) {
    t.ok(o.detectedAtQuery! >= 2 && o.detectedAtQuery! <= 10, `${o.image}: flagged at attack query ${o.detectedAtQuery}`);
    // The service counts this identity's queries from 1: the run did not inherit the start check's.
    t.match(o.detectionHeader, new RegExp(`detected-at=${o.detectedAtQuery};`), 'the identity was fresh for the run');
  }
  t.ok(report.results.every((r) => r.summary.detection!.refused === 0), 'log mode refuses nothing');
  t.equal(s.posts(), report.targets[0].requests.start + report.targets[0].requests.attack + report.targets[0].requests.verify);
  t.match(detectionTable(report.results), /\| tiny-single \| square \| 2\/2 \|/);
  t.match(renderMarkdown(report), /## Detection/);
});

t.test('the adaptive attacker against --detect reject (no cool-down): refusals are resampled and counted', async (t) => {
  const s = await serve({ mode: 'reject', header: false, cooldownS: 0 });
  const plain = await serve({ mode: 'off', header: false });
  t.teardown(async () => {
    await s.app.close();
    await plain.app.close();
  });
  const target = await TargetClient.connect(s.url);
  const verifier = await TargetClient.connect(plain.url);
  const report = await runAttacks({
    targets: [target], images, attacks: [{ kind: 'square', eot: 1, adaptive: true }],
    eps: 0.1, queries: 60, verify: 3, seed: 2, timeLimitSeconds: 600, pInit: 0.8, hsjGradQueries: 4,
    imageSource: dir, command: 'test', detection: true, verifier,
  });
  const row = report.results[0];
  t.equal(row.attack, 'square-adaptive');
  t.ok(row.images.every((o) => o.queries <= 60), 'refused requests are charged to the budget');
  t.equal(s.posts(), report.targets[0].requests.attack, 'every request the detecting server saw, refused ones included, is an attack query');
  t.equal(plain.posts(), report.targets[0].requests.start + report.targets[0].requests.verify, 'start checks and verification went to the verifier');
  t.equal(report.targets[0].verifier, verifier.url);
  t.equal(row.summary.detection!.refused, row.images.reduce((n, o) => n + (o.refused ?? 0), 0));
});

t.test('a plain attack refused by --detect reject stops with a message naming the refusal', async (t) => {
  const s = await serve({ mode: 'reject', header: false });
  t.teardown(() => s.app.close());
  const target = await TargetClient.connect(s.url);
  await t.rejects(runAttacks({
    targets: [target], images, attacks: [{ kind: 'square', eot: 1 }],
    eps: 0.1, queries: 40, verify: 3, seed: 2, timeLimitSeconds: 600, pInit: 0.8, hsjGradQueries: 4, imageSource: dir, command: 'test',
  }), /refused the query as a suspected attack \(query_attack_suspected\)/);
});
