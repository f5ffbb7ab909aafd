/**
 * Dynamic batching through HTTP on the tiny fixture: under concurrency, requests that drew the same
 * member share member runs, and every request still gets its own independent, uniform draw.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { CHI2_CRIT_0_001, chiSquare, goldenOf, parseMetrics, sample, softmax, startApp, TINY } from '../helpers.js';

const golden = await goldenOf(TINY);
const png = await readFile(path.join(TINY, golden[0].file));
const memberProbs = golden[0].logits.map(softmax);
const M = memberProbs.length;

function whichMember(predictions: { index: number; probability: number }[]): number {
  const hits = memberProbs.map((p, m) => ({ m, err: Math.max(...predictions.map((q) => Math.abs(p[q.index] - q.probability))) }))
    .filter((x) => x.err < 1e-4);
  if (hits.length !== 1) throw new Error(`prediction matches ${hits.length} members`);
  return hits[0].m;
}

t.test('concurrent single-image requests are batched; draws stay independent and uniform', async (t) => {
  const app = await startApp({ workers: 1, maxBatchImages: 64, queueDelayUs: 2000 });
  t.teardown(() => app.close());
  const members: number[][] = [];
  for (let burst = 0; burst < 20; burst++) {
    const responses = await Promise.all(Array.from({ length: 30 }, () => app.server.inject({
      method: 'POST', url: '/classify?topK=all', headers: { 'content-type': 'image/png' }, payload: png,
    })));
    t.ok(responses.every((r) => r.statusCode === 200), `burst ${burst}: all 200`);
    members.push(responses.map((r) => whichMember(r.json().predictions)));
  }
  const m = parseMetrics((await app.metricsServer!.inject({ url: '/metrics' })).body);
  const runs = sample(m, 'redserve_inference_batch_requests_count');
  const alone = sample(m, 'redserve_inference_batch_requests_bucket', { le: '1' });
  t.ok(runs < 600, `600 requests ran in ${runs} member runs`);
  t.ok(runs - alone > 0, `${runs - alone} runs held more than one request`);
  t.equal(sample(m, 'redserve_inference_batch_requests_sum'), 600, 'every request ran exactly once');

  const counts = new Array(M).fill(0);
  for (const b of members) for (const x of b) counts[x]++;
  const stat = chiSquare(counts);
  t.ok(stat < CHI2_CRIT_0_001[M - 1], `uniform: chi2 = ${stat.toFixed(2)} (counts ${counts})`);
  // Requests sent together are the ones batching could couple: the member of request i and of
  // request i+1 in the same burst must be independent (uniform over M x M pairs).
  const pairs = new Array(M * M).fill(0);
  for (const b of members) for (let i = 0; i + 1 < b.length; i++) pairs[b[i] * M + b[i + 1]]++;
  const pairStat = chiSquare(pairs);
  t.ok(pairStat < CHI2_CRIT_0_001[M * M - 1], `independent: chi2 over ${M * M} pairs = ${pairStat.toFixed(2)} (counts ${pairs})`);
});

t.test('/models reports the batching settings', async (t) => {
  const app = await startApp({ maxBatchImages: 16, queueDelayUs: 250 });
  t.teardown(() => app.close());
  t.same((await app.server.inject({ url: '/models' })).json().batching, { maxBatchImages: 16, queueDelayUs: 250 });
});
