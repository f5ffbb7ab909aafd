import { randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { drawMembers, exactWeights, memberSampler, WeightedDraw } from '../../src/ensemble/sampling.js';
import { CHI2_CRIT_0_001, chiSquare, copyPackage, editManifest, goldenOf, softmax, startApp, TINY } from '../helpers.js';

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

t.test('mean weighs each member\'s softmax by its sampling probability', async (t) => {
  const probabilities = [0.6, 0.1, 0.3];
  const dir = await withProbabilities(probabilities);
  const app = await startApp({ modelDir: dir, sampling: { mode: 'mean' } });
  t.teardown(async () => { await app.close(); await rm(dir, { recursive: true }); });
  const res = await app.server.inject({ method: 'POST', url: '/classify?topK=all', headers: { 'content-type': 'image/png' }, payload: goldenPng });
  let worst = 0;
  for (const q of res.json().predictions) {
    const expected = memberProbs.reduce((s, p, m) => s + probabilities[m] * p[q.index], 0);
    worst = Math.max(worst, Math.abs(q.probability - expected));
  }
  t.ok(worst < 1e-5, `max error against sum_m p_m softmax_m: ${worst.toExponential(2)} (atol 1e-5)`);
  const uniform = memberProbs.reduce((s, p) => s + p[0], 0) / memberProbs.length;
  const weighted = memberProbs.reduce((s, p, m) => s + probabilities[m] * p[0], 0);
  t.ok(Math.abs(uniform - weighted) > 1e-3, `the fixture tells the weighted mean from the plain one (class 0: ${weighted} vs ${uniform})`);
});

t.test('fixed:K out of range stops start-up with a clear message', async (t) => {
  await t.rejects(startApp({ sampling: { mode: 'fixed', member: 3 } }), /fixed:3: member index out of range \[0, 3\)/);
});

/** A copy of the tiny ensemble whose manifest carries sampling.probabilities. */
async function withProbabilities(probabilities: number[]): Promise<string> {
  const dir = await copyPackage(TINY);
  await editManifest(dir, (m) => { m.sampling = { probabilities }; });
  return dir;
}

/** Pearson's statistic of `counts` against `probabilities` (normalised here), over the cells of probability > 0. */
function chiSquareAgainst(counts: readonly number[], probabilities: readonly number[]): number {
  const n = counts.reduce((a, b) => a + b, 0);
  const sum = probabilities.reduce((a, b) => a + b, 0);
  return probabilities.reduce((s, p, i) => (p > 0 ? s + (counts[i] - (n * p) / sum) ** 2 / ((n * p) / sum) : s), 0);
}

/**
 * Upper 1e-6 critical values of chi-square for 1..9 degrees of freedom (mpmath, regularised upper
 * incomplete gamma solved to 40 digits). A correct sampler fails a test at this threshold once in a
 * million runs; a million draws still reject any departure of noncentrality
 * N * sum((q - p)^2 / p) above about 100 with near certainty.
 */
const CHI2_CRIT_1E_6 = [0, 23.93, 27.63, 30.66, 33.38, 35.89, 38.26, 40.52, 42.70, 44.81];

const countsOf = (draws: readonly number[], members: number) => {
  const counts = new Array<number>(members).fill(0);
  for (const m of draws) counts[m]++;
  return counts;
};

// Decimal fractions (not binary ones, so the weights need 55 bits) and a member of probability 0.
const P = [0.4, 0.25, 0.15, 0.1, 0.06, 0.04, 0];
const DF = P.filter((p) => p > 0).length - 1;
const DRAWS = 1_000_000;

t.test('exactWeights: integer weights exactly proportional to the float64 probabilities', async (t) => {
  t.same(exactWeights([0.5, 0.25, 0.25]), [2n, 1n, 1n], 'binary fractions: the smallest integers');
  t.same(exactWeights([0.375, 0, 0.625]), [3n, 0n, 5n], 'probability 0: weight 0');
  t.same(exactWeights([5e-324, 1e-323]), [1n, 2n], 'subnormals: 2^-1074 and 2^-1073');
  t.same(exactWeights([1, 2 ** -1074]), [2n ** 1074n, 1n], 'the widest range a float64 allows');
  // Each p below is an integer multiple of 2^-60 and below 2^53 of them, so p * 2^60 is exact.
  const q = P.map((p) => BigInt(p * 2 ** 60));
  const w = exactWeights(P);
  const proportional = w.every((wi, i) => w.every((wj, j) => wi * q[j] === wj * q[i]));
  t.ok(proportional, `w[i] * p[j] == w[j] * p[i] exactly for every pair (weights ${w.join(', ')})`);
  t.throws(() => exactWeights([0.5, -0.5]), /probabilities\[1\]: -0.5 is not a finite number >= 0/);
  t.throws(() => exactWeights([0, 0]), /every value is 0/);
});

t.test('WeightedDraw.memberAt: every integer in [0, total) lies in its member\'s cumulative range', async (t) => {
  const draw = new WeightedDraw([3n, 0n, 5n, 1n]);
  t.equal(draw.total, 9n);
  t.same(Array.from({ length: 9 }, (_, r) => draw.memberAt(BigInt(r))), [0, 0, 0, 2, 2, 2, 2, 2, 3]);
  t.throws(() => draw.memberAt(9n), /r: 9 is out of range \[0, 9\)/);
  t.same(new WeightedDraw([0n, 7n, 0n]).draw(20), new Array(20).fill(1), 'one member holds all the weight');
  t.throws(() => new WeightedDraw([1n], 49), /headBits: 49 is out of range \[1, 48\]/);
});

t.test(`weighted draws follow the probabilities: chi-square on ${DRAWS} draws, p-value threshold 1e-6`, async (t) => {
  const sampler = memberSampler(P.length, P);
  const counts = countsOf(sampler.draw(DRAWS), P.length);
  const stat = chiSquareAgainst(counts, P);
  t.ok(stat < CHI2_CRIT_1E_6[DF], `chi2 = ${stat.toFixed(2)} < ${CHI2_CRIT_1E_6[DF]} (df ${DF}; counts ${counts}; expected ${P.map((p) => p * DRAWS)})`);
  t.equal(counts[P.length - 1], 0, 'the member of probability 0 is never drawn');
});

t.test('the same criterion rejects biased draws', async (t) => {
  // A draw a careless implementation might ship: one random byte against 8-bit cumulative
  // thresholds floor(256 * cumsum(p)), off by at most 1/256 per member.
  let cum = 0;
  const thresholds = P.map((p) => Math.floor(256 * (cum += p)));
  const q = thresholds.map((th, i) => (th - (i ? thresholds[i - 1] : 0)) / 256);
  const noncentrality = DRAWS * P.reduce((s, p, i) => (p > 0 ? s + (q[i] - p) ** 2 / p : s), 0);
  const bytes = randomBytes(DRAWS);
  const biased = Array.from(bytes, (b) => thresholds.findIndex((th) => b < th));
  const stat8 = chiSquareAgainst(countsOf(biased, P.length), P);
  t.ok(stat8 > CHI2_CRIT_1E_6[DF], `8-bit thresholds (q = ${q.map((x) => x.toFixed(4))}, noncentrality ${noncentrality.toFixed(0)}): chi2 = ${stat8.toFixed(1)} > ${CHI2_CRIT_1E_6[DF]}`);
  // Probabilities ignored: a uniform draw over the members that may be drawn.
  const uniform = drawMembers(DRAWS, P.length - 1);
  const statU = chiSquareAgainst(countsOf(uniform, P.length), P);
  t.ok(statU > CHI2_CRIT_1E_6[DF], `uniform instead of p: chi2 = ${statU.toFixed(0)} > ${CHI2_CRIT_1E_6[DF]}`);
});

t.test('ties with a boundary, settled by the tail bits, keep the distribution (2 head bits)', async (t) => {
  // With 2 head bits almost every draw ties with a boundary and is decided by the 53 bits below.
  const draw = new WeightedDraw(exactWeights(P), 2);
  const n = DRAWS;
  const counts = countsOf(draw.draw(n), P.length);
  const stat = chiSquareAgainst(counts, P);
  t.ok(stat < CHI2_CRIT_1E_6[DF], `chi2 = ${stat.toFixed(2)} < ${CHI2_CRIT_1E_6[DF]} (df ${DF}; ${n} draws; counts ${counts})`);
  t.equal(counts[P.length - 1], 0, 'the member of probability 0 is never drawn');
});

t.test('memberSampler: uniform without probabilities, mean weights normalised by their sum', async (t) => {
  t.same(memberSampler(4).probabilities, [0.25, 0.25, 0.25, 0.25]);
  t.same(memberSampler(3, [0.5, 0.3, 0.2]).probabilities, [0.5, 0.3, 0.2]);
  const offBy = memberSampler(2, [0.5000004, 0.5000004]).probabilities;
  t.same(offBy, [0.5, 0.5], 'within the tolerance the sum is still divided out');
  t.throws(() => memberSampler(3, [0.5, 0.5]), /probabilities: 2 values for 3 members/);
});

t.test('random sampling over HTTP follows the manifest\'s probabilities (chi-square, alpha 0.001)', async (t) => {
  const probabilities = [0.7, 0, 0.3];
  const dir = await withProbabilities(probabilities);
  const app = await startApp({ modelDir: dir });
  t.teardown(async () => { await app.close(); await rm(dir, { recursive: true }); });
  const counts = new Array(memberProbs.length).fill(0);
  const b64 = goldenPng.toString('base64');
  for (let r = 0; r < 40; r++) {
    const res = await app.server.inject({ method: 'POST', url: '/classify?topK=all', payload: { images: Array(16).fill(b64) } });
    for (const result of res.json().results) counts[whichMember(result.predictions)]++;
  }
  t.equal(counts[1], 0, 'member 1 (probability 0) never answers');
  const stat = chiSquareAgainst(counts, probabilities);
  t.ok(stat < CHI2_CRIT_0_001[1], `chi2 = ${stat.toFixed(2)} < ${CHI2_CRIT_0_001[1]} (counts ${counts})`);
});

t.test('probabilities that break the format stop start-up, naming the field', async (t) => {
  const dir = await withProbabilities([0.7, 0.2]);
  t.teardown(() => rm(dir, { recursive: true }));
  await t.rejects(startApp({ modelDir: dir }), /sampling\.probabilities: 2 values for 3 members/);
});
