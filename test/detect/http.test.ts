import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import type { Config, DetectSettings } from '../../src/config.js';
import { DETECTION_HEADER } from '../../src/detect/http.js';
import { CHI2_CRIT_0_001, chiSquare, goldenOf, sha256Hex, softmax, startApp, TINY } from '../helpers.js';

const golden = await goldenOf(TINY);
const goldenPng = await readFile(path.join(TINY, golden[0].file));
const memberProbs = golden[0].logits.map(softmax);

const DETECT: DetectSettings = {
  mode: 'log', quantStep: 50, window: 20, hashes: 50, threshold: 25, history: 16, clients: 100,
  globalSize: 1000, repeats: 2, cooldownS: 120, header: true, globalOwners: 2, globalQuota: 64,
};

/** A seeded textured 28x28 image as a [1][28][28] tensor (the fixture normalises with mean 0, std 1). */
function tensor(seed: number, nudged = 0): number[][][] {
  let s = seed * 7919 + 17;
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const flat = Array.from({ length: 784 }, (_, i) => {
    const row = Math.floor(i / 28);
    const col = i % 28;
    return row > 3 && row < 24 && col > 5 && col < 22 ? 0.3 + 0.7 * next() : 0.1 * next();
  });
  for (let k = 0; k < nudged; k++) flat[(k * 97 + 300) % 784] = k % 2 === 0 ? 1 : 0;
  return [Array.from({ length: 28 }, (_, r) => flat.slice(r * 28, r * 28 + 28))];
}

const asTensor = (seed: number, nudged = 0) => ({ method: 'POST' as const, url: '/classify?topK=all', payload: { tensors: [tensor(seed, nudged)] } });

async function app(detect: Partial<DetectSettings>, more: Partial<Config> = {}) {
  const a = await startApp({ detect: { ...DETECT, ...detect }, ...more });
  return a;
}

t.test('off: repeated and near-duplicate queries are answered, no header', async (t) => {
  const a = await app({ mode: 'off', header: false });
  t.teardown(() => a.close());
  for (let i = 0; i < 6; i++) {
    const res = await a.server.inject(asTensor(1, i));
    t.equal(res.statusCode, 200);
    t.equal(res.headers[DETECTION_HEADER], undefined);
  }
});

t.test('log: flagged clients are answered; the header and the metric say so', async (t) => {
  const a = await app({ mode: 'log' });
  t.teardown(() => a.close());
  const first = await a.server.inject(asTensor(1));
  t.equal(first.statusCode, 200);
  t.equal(first.headers[DETECTION_HEADER], undefined, 'a first query is not flagged');
  const second = await a.server.inject(asTensor(1, 6));
  t.equal(second.statusCode, 200, 'log mode still answers');
  t.match(second.headers[DETECTION_HEADER], /^flagged; reason=near_duplicate; scope=client; detected-at=2; query=2$/);
  const third = await a.server.inject(asTensor(2));
  t.match(third.headers[DETECTION_HEADER], /reason=cooldown; scope=none; detected-at=2; query=3/, 'the cool-down keeps the flag');
  const metrics = await a.metrics.registry.getSingleMetricAsString('redserve_query_detections_total');
  t.match(metrics, /redserve_query_detections_total\{reason="near_duplicate",scope="client"\} 1/, 'one detection counted');

  // PNG bodies are screened as their pre-processed tensor too: the same image as PNG and as a
  // JSON tensor are the same query.
  const png = await a.server.inject({ method: 'POST', url: '/classify', headers: { 'content-type': 'image/png', 'x-forwarded-for': '10.0.0.9' }, payload: goldenPng });
  t.equal(png.statusCode, 200);
});

t.test('log without the header: nothing in the answer', async (t) => {
  const a = await app({ mode: 'log', header: false });
  t.teardown(() => a.close());
  await a.server.inject(asTensor(1));
  const res = await a.server.inject(asTensor(1, 6));
  t.equal(res.statusCode, 200);
  t.equal(res.headers[DETECTION_HEADER], undefined);
});

t.test('reject: 429 query_attack_suspected with Retry-After, for the cool-down, for that client only', async (t) => {
  const a = await app({ mode: 'reject', header: false }, { trustProxy: true });
  t.teardown(() => a.close());
  const as = (ip: string, seed: number, nudged = 0) => ({ ...asTensor(seed, nudged), headers: { 'x-forwarded-for': ip } });
  t.equal((await a.server.inject(as('10.0.0.1', 1))).statusCode, 200);
  const refused = await a.server.inject(as('10.0.0.1', 1, 6));
  t.equal(refused.statusCode, 429);
  t.equal(refused.json().error, 'query_attack_suspected');
  t.match(refused.json().message, /near duplicate.*refused for 120 s/);
  t.equal(refused.headers['retry-after'], '120');
  const later = await a.server.inject(as('10.0.0.1', 3));
  t.equal(later.statusCode, 429, 'a distinct query in the cool-down is refused too');
  t.equal((await a.server.inject(as('10.0.0.2', 4))).statusCode, 200, 'another client is served');
  // The Open Inference Protocol route is screened the same way.
  const v2 = await a.server.inject({
    method: 'POST', url: '/v2/models/tiny-ensemble/infer', headers: { 'x-forwarded-for': '10.0.0.1' },
    payload: { inputs: [{ name: 'input', shape: [1, 1, 28, 28], datatype: 'FP32', data: tensor(5).flat(2) }] },
  });
  t.equal(v2.statusCode, 429);
  t.equal(v2.json().code, 'query_attack_suspected');
  const errors = await a.metrics.registry.getSingleMetricAsString('redserve_http_errors_total');
  t.match(errors, /code="query_attack_suspected"/, 'refusals are counted by error code');
});

t.test('reject with cool-down 0: only the flagged queries are refused', async (t) => {
  const a = await app({ mode: 'reject', header: false, cooldownS: 0 });
  t.teardown(() => a.close());
  t.equal((await a.server.inject(asTensor(1))).statusCode, 200);
  const refused = await a.server.inject(asTensor(1, 6));
  t.equal(refused.statusCode, 429);
  t.equal(refused.headers['retry-after'], '1', 'Retry-After is at least 1 s');
  t.equal((await a.server.inject(asTensor(9))).statusCode, 200, 'the next distinct query is served');
});

t.test('client identity: the API key when keys are configured, not the address', async (t) => {
  const keys = ['key-number-one-0123456789', 'key-number-two-0123456789'];
  const a = await app({ mode: 'reject', header: false, globalSize: 0 }, { apiKeySha256: keys.map(sha256Hex) });
  t.teardown(() => a.close());
  const withKey = (key: string, seed: number, nudged = 0) => ({ ...asTensor(seed, nudged), headers: { authorization: `Bearer ${key}` } });
  t.equal((await a.server.inject(withKey(keys[0], 1))).statusCode, 200);
  t.equal((await a.server.inject(withKey(keys[1], 1, 6))).statusCode, 200, 'another key is another client (same address)');
  t.equal((await a.server.inject(withKey(keys[0], 1, 6))).statusCode, 429, 'the same key is the same client');
  const xKey = await a.server.inject({ ...asTensor(2), headers: { 'x-api-key': keys[0] } });
  t.equal(xKey.statusCode, 429, 'X-API-Key names the same client as Bearer');
});

t.test('the member draw stays uniform for a flagged client (log mode)', async (t) => {
  const a = await app({ mode: 'log', repeats: 0 });
  t.teardown(() => a.close());
  const whichMember = (predictions: { index: number; probability: number }[]) => memberProbs.findIndex((p) =>
    Math.max(...predictions.map((q) => Math.abs(p[q.index] - q.probability))) < 1e-4);
  const counts = new Array(memberProbs.length).fill(0);
  const b64 = goldenPng.toString('base64');
  let flagged = 0;
  for (let r = 0; r < 40; r++) {
    const res = await a.server.inject({ method: 'POST', url: '/classify?topK=all', payload: { images: Array(16).fill(b64) } });
    t.equal(res.statusCode, 200);
    if (res.headers[DETECTION_HEADER] !== undefined) flagged++;
    for (const result of res.json().results) counts[whichMember(result.predictions)]++;
  }
  t.equal(flagged, 40, 'every request of repeated images is flagged');
  const stat = chiSquare(counts);
  t.ok(stat < CHI2_CRIT_0_001[counts.length - 1], `chi2 = ${stat.toFixed(2)} (counts ${counts})`);
});
