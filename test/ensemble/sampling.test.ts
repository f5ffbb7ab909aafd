import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { drawMembers } from '../../src/ensemble/ensemble.js';
import { CHI2_CRIT_0_001, chiSquare, goldenOf, softmax, startApp, TINY } from '../helpers.js';

const golden = await goldenOf(TINY);
const goldenPng = await readFile(path.join(TINY, golden[0].file));
const memberProbs = golden[0].logits.map(softmax);

/** Which member produced these top-all predictions (by matching its softmax on the golden image). */
function whichMember(predictions: { index: number; probability: number }[]): number {
  const hits = memberProbs
    .map((p, m) => ({ m, err: Math.max(...predictions.map((q) => Math.abs(p[q.index] - q.probability))) }))
    .filter((x) => x.err < 1e-4);
  if (hits.length !== 1) throw new Error(`prediction matches ${hits.length} members`);
  return hits[0].m;
}

t.test('drawMembers is uniform (chi-square, 60 000 draws over 5 members, alpha 0.001)', async (t) => {
  const counts = new Array(5).fill(0);
  for (const m of drawMembers(60_000, 5)) counts[m]++;
  const stat = chiSquare(counts);
  t.ok(stat < CHI2_CRIT_0_001[4], `chi2 = ${stat.toFixed(2)} < ${CHI2_CRIT_0_001[4]} (counts ${counts})`);
  t.ok(drawMembers(1000, 3).every((m) => Number.isInteger(m) && m >= 0 && m < 3), 'draws are valid member indices');
});

t.test('drawMembers stays uniform where 256 is not a multiple of the member count, and past 256 members', async (t) => {
  // 7 members: bytes 252..255 must be rejected, or members 0..3 would be drawn 37/256 of the time
  // and 4..6 36/256. Over 280 000 draws that bias gives chi2 of about 51 (the limit is 22.46).
  const counts = new Array(7).fill(0);
  for (const m of drawMembers(280_000, 7)) counts[m]++;
  const stat = chiSquare(counts);
  t.ok(stat < CHI2_CRIT_0_001[6], `7 members: chi2 = ${stat.toFixed(2)} < ${CHI2_CRIT_0_001[6]} (counts ${counts})`);
  t.same(drawMembers(50, 1), new Array(50).fill(0), 'one member: always member 0');
  t.equal(drawMembers(0, 5).length, 0, 'no images, no draws');
  const many = drawMembers(5000, 300);
  t.ok(many.every((m) => Number.isInteger(m) && m >= 0 && m < 300) && new Set(many).size > 250, '300 members: valid and spread');
  t.throws(() => drawMembers(1, 0), /members: 0 is not an integer >= 1/);
});

t.test('random sampling over HTTP: every member answers, uniformly (chi-square)', async (t) => {
  t.equal(new Set(memberProbs.map((p) => p.join())).size, memberProbs.length, 'fixture members differ');
  const app = await startApp({ sampling: { mode: 'random' } });
  t.teardown(() => app.close());
  const counts = new Array(memberProbs.length).fill(0);
  // 40 requests of 16 images, each image drawn independently: 640 draws.
  const b64 = goldenPng.toString('base64');
  for (let r = 0; r < 40; r++) {
    const res = await app.server.inject({ method: 'POST', url: '/classify?topK=all', payload: { images: Array(16).fill(b64) } });
    for (const result of res.json().results) counts[whichMember(result.predictions)]++;
  }
  const stat = chiSquare(counts);
  t.ok(stat < CHI2_CRIT_0_001[counts.length - 1], `chi2 = ${stat.toFixed(2)} (counts ${counts})`);
});

t.test('fixed:K serves member K, for every K', async (t) => {
  for (let k = 0; k < memberProbs.length; k++) {
    const app = await startApp({ sampling: { mode: 'fixed', member: k }, workers: 1 });
    for (let i = 0; i < 5; i++) {
      const res = await app.server.inject({ method: 'POST', url: '/classify?topK=all', headers: { 'content-type': 'image/png' }, payload: goldenPng });
      t.equal(whichMember(res.json().predictions), k, `request ${i} answered by member ${k}`);
    }
    t.equal((await app.server.inject({ url: '/models' })).json().sampling, `fixed:${k}`);
    await app.close();
  }
});

t.test('mean averages the softmax of every member', async (t) => {
  const app = await startApp({ sampling: { mode: 'mean' } });
  t.teardown(() => app.close());
  const res = await app.server.inject({ method: 'POST', url: '/classify?topK=all', headers: { 'content-type': 'image/png' }, payload: goldenPng });
  for (const q of res.json().predictions) {
    const expected = memberProbs.reduce((s, p) => s + p[q.index], 0) / memberProbs.length;
    t.ok(Math.abs(q.probability - expected) < 1e-5, `class ${q.index}: ${q.probability} vs ${expected}`);
  }
});

t.test('fixed:K out of range stops start-up with a clear message', async (t) => {
  await t.rejects(startApp({ sampling: { mode: 'fixed', member: 3 } }), /fixed:3: member index out of range \[0, 3\)/);
});
