import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { buildApp, type App } from '../../src/app.js';
import { TargetClient } from '../client.js';
import { runAttacks } from '../harness.js';
import { renderMarkdown } from '../report.js';
import type { Sampling } from '../../src/config.js';
import { FIXTURES, embeddedConfig, TINY_SINGLE } from '../../test/helpers.js';

/** A service on a real port with a server-side count of every request, by route. */
async function serve(modelDir: string, sampling: Sampling): Promise<{ app: App; url: string; counts: Map<string, number> }> {
  const app = buildApp(embeddedConfig({ modelDir, sampling }), { logger: false });
  const counts = new Map<string, number>();
  app.server.addHook('onRequest', async (req) => {
    const key = `${req.method} ${req.url.split('?')[0]}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  });
  await app.modelReady;
  const address = await app.server.listen({ port: 0, host: '127.0.0.1' });
  return { app, url: address, counts };
}

const single = await serve(TINY_SINGLE, { mode: 'random' });
const ensemble = await serve(path.join(FIXTURES, 'tiny-ensemble'), { mode: 'mean' });
t.teardown(async () => {
  await single.app.close();
  await ensemble.app.close();
});

// The tiny single member (untrained) answers class 4 on the golden images: label two of them 4
// (correct at start) and one 7 (wrong at start, so it is not attacked).
const dir = await mkdtemp(path.join(os.tmpdir(), 'redserve-attack-'));
const labels = { 'a.png': 4, 'b.png': 4, 'c.png': 7 };
for (const [name, k] of [['a.png', 0], ['b.png', 1], ['c.png', 2]] as const) {
  await writeFile(path.join(dir, name), await readFile(path.join(TINY_SINGLE, 'golden', `${k}.png`)));
}
await writeFile(path.join(dir, 'labels.json'), JSON.stringify(labels));

t.test('a small run against two in-process services: report structure and exact request counts', async (t) => {
  const { readImageDir } = await import('../images.js');
  const images = await readImageDir(dir, 10);
  t.same(images.map((i) => [i.name, i.label]), [['a.png', 4], ['b.png', 4], ['c.png', 7]], 'labels from labels.json');
  const targets = [await TargetClient.connect(single.url), await TargetClient.connect(`${ensemble.url}/`)];
  const budget = 12;
  const R = 3;
  const report = await runAttacks({
    targets, images, attacks: [{ kind: 'square', eot: 1 }, { kind: 'square', eot: 2 }, { kind: 'hsj', eot: 1 }],
    eps: 0.3, queries: budget, verify: R, seed: 5, timeLimitSeconds: 600, pInit: 0.8, hsjGradQueries: 4,
    imageSource: dir, command: 'test',
  });

  t.equal(report.tool, 'redserve attack');
  t.equal(report.seed, 5);
  t.ok(!Number.isNaN(Date.parse(report.startedAt)), 'dated');
  t.equal(report.stoppedByTimeLimit, false);
  t.same(report.settings.attacks, ['square', 'square-eot2', 'hsj']);
  t.same(report.targets.map((x) => [x.models.name, x.models.sampling]), [['tiny-single', 'random'], ['tiny-ensemble', 'mean']],
    'each target recorded with its /models metadata');
  t.equal(report.results.length, 2 * 3, 'one row per (target, attack)');

  for (const [k, target] of report.targets.entries()) {
    const server = [single, ensemble][k];
    const rows = report.results.filter((r) => r.target === target.url);
    const attack = rows.reduce((s, r) => s + r.images.reduce((q, o) => q + o.queries, 0), 0);
    const verified = rows.reduce((s, r) => s + r.images.filter((o) => o.verifyWrongVotes !== null).length, 0);
    t.equal(server.counts.get('POST /classify'), target.requests.start + target.requests.attack + target.requests.verify,
      `${target.models.name}: every /classify request the server saw is in the report`);
    t.equal(server.counts.get('GET /models'), 1);
    t.equal(target.requests.total, server.counts.get('POST /classify')! + 1, 'total = classify + metadata');
    t.equal(target.requests.start, R * images.length, 'R start queries per image');
    t.equal(target.requests.attack, attack);
    t.equal(target.requests.verify, R * verified, 'R verification queries per attacked image');
    for (const row of rows) {
      t.equal(row.images.length, images.length);
      for (const o of row.images) {
        t.ok(o.queries <= budget, `${row.attack} ${o.image}: ${o.queries} <= ${budget} queries`);
        if (o.linf !== null) t.ok(o.linf <= 0.3 + 1e-9, 'final image inside the ball');
        if (o.anyHitQuery !== null) t.ok(o.anyHitQuery >= 1 && o.anyHitQuery <= o.queries);
        if (o.stop === 'budget' && row.attack !== 'square-eot2') t.equal(o.queries, budget, 'budget stops spend it all');
      }
      const s = row.summary;
      t.equal(s.attacked, row.images.filter((o) => o.correctAtStart).length);
      t.ok(s.verified.successes <= s.attacked && s.anyHit.successes <= s.attacked);
    }
  }
  const singleRows = report.results.filter((r) => r.model === 'tiny-single');
  for (const row of singleRows) {
    t.same(row.images.map((o) => o.correctAtStart), [true, true, false], `${row.attack}: c.png is wrong at start`);
    t.equal(row.images[2].stop, 'not-attacked');
    t.equal(row.images[2].queries, 0);
  }
  const md = renderMarkdown(report);
  t.match(md, /\| model \| sampling \| attack \| correct at start \| verified success \| any-hit success \|/);
  t.match(md, /\| tiny-single \| random \| square-eot2 \| 2\/3 \|/);
  t.match(md, /\| tiny-ensemble \| mean \| hsj \|/);
  t.match(md, /- command: `test`/);
});

t.test('the time limit cuts an attack short; the cut image is reported, unverified, and still counted', async (t) => {
  const { readImageDir } = await import('../images.js');
  const images = await readImageDir(dir, 10);
  const before = single.counts.get('POST /classify') ?? 0;
  const target = await TargetClient.connect(single.url);
  // eps so small that the attack cannot succeed: only the clock can end it.
  const report = await runAttacks({
    targets: [target], images, attacks: [{ kind: 'square', eot: 1 }],
    eps: 1e-6, queries: 1_000_000, verify: 3, seed: 1, timeLimitSeconds: 0.5, pInit: 0.8, hsjGradQueries: 4,
    imageSource: dir, command: 'test',
  });
  t.equal(report.stoppedByTimeLimit, true);
  const row = report.results[0];
  t.equal(row.images.length, 1, 'nothing after the cut image');
  t.equal(row.images[0].stop, 'time');
  t.equal(row.images[0].verifyWrongVotes, null, 'not verified');
  t.equal(row.summary.attacked, 0, 'left out of the rates');
  t.equal(row.summary.cutByTime, 1);
  t.ok(report.seconds < 5, `stopped promptly (${report.seconds.toFixed(2)} s)`);
  t.equal((single.counts.get('POST /classify') ?? 0) - before, 3 + row.images[0].queries, 'start check + attack queries, exactly');
});
