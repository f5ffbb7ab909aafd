import t from 'tap';
import type { DetectSettings } from '../../src/config.js';
import { Detector } from '../../src/detect/detector.js';
import type { Normalisation } from '../../src/detect/fingerprint.js';

const NORM: Normalisation = { channels: 1, plane: 28 * 28, scale: 1 / 255, mean: [0], std: [1] };
const KEY = { base: 12345, mix: 678, digest: 9 };
const SETTINGS: DetectSettings = {
  mode: 'log', quantStep: 50, window: 20, hashes: 50, threshold: 25, history: 8, clients: 4,
  globalSize: 100, repeats: 2, cooldownS: 60, header: false, globalOwners: 2, globalQuota: 64,
};

/** Fingerprints in the detector's global store (its private index, read for this test only). */
const globalStored = (d: Detector) => d['global']?.size ?? 0;

/** A seeded textured 28x28 image (a pixel tensor in [0, 1]). */
function image(seed: number): Float32Array {
  let s = seed * 7919 + 17;
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  return Float32Array.from({ length: 784 }, (_, i) => {
    const row = Math.floor(i / 28);
    const col = i % 28;
    return row > 3 && row < 24 && col > 5 && col < 22 ? 0.3 + 0.7 * next() : 0.1 * next();
  });
}

/** x with a few pixels moved: what one step of a query attack sends. */
function nudge(x: Float32Array, seed: number, pixels = 6): Float32Array {
  const y = Float32Array.from(x);
  for (let k = 0; k < pixels; k++) {
    const i = (seed * 131 + k * 97) % 784;
    y[i] = Math.min(1, Math.max(0, y[i] + (k % 2 === 0 ? 0.3 : -0.3)));
  }
  return y;
}

function detector(overrides: Partial<DetectSettings> = {}) {
  let now = 0;
  const d = new Detector({ ...SETTINGS, ...overrides }, NORM, { key: KEY, nowMs: () => now });
  return { d, advance: (ms: number) => { now += ms; } };
}

t.test('distinct images are not flagged; a near duplicate is, and starts a cool-down', async (t) => {
  const { d, advance } = detector();
  for (let i = 0; i < 6; i++) t.equal(d.screen('a', image(i)).flagged, false, `image ${i}`);
  const v = d.screen('a', nudge(image(3), 1));
  t.match(v, { flagged: true, reason: 'near_duplicate', scope: 'client', detection: true, query: 7, detectedAtQuery: 7, retryAfterS: 60 });
  t.ok(v.seen!.ownShared >= 25, `shared ${v.seen!.ownShared}`);

  const during = d.screen('a', image(50));
  t.match(during, { flagged: true, reason: 'cooldown', detection: false, detectedAtQuery: 7 }, 'the cool-down flags everything');
  advance(30_000);
  t.equal((d.screen('a', image(51)) as { retryAfterS: number }).retryAfterS, 30, 'Retry-After counts down');
  advance(30_000);
  t.equal(d.screen('a', image(52)).flagged, false, 'after the cool-down, distinct images pass again');
  t.equal(d.screen('b', image(60)).flagged, false, 'other clients are not affected');
});

t.test('a query attack is caught within a few queries', async (t) => {
  const { d } = detector();
  let x = image(100);
  let first: number | null = null;
  for (let q = 1; q <= 20 && first === null; q++) {
    const v = d.screen('attacker', x);
    if (v.flagged) first = q;
    x = nudge(x, q, 8);
  }
  t.ok(first !== null && first <= 3, `flagged at query ${first}`);
});

t.test('exact re-uploads: allowed up to the limit, then flagged as repeated input', async (t) => {
  const { d } = detector({ repeats: 2 });
  const x = image(7);
  t.equal(d.screen('a', x).flagged, false, 'first upload');
  t.equal(d.screen('a', x).flagged, false, 're-upload 1');
  t.equal(d.screen('a', x).flagged, false, 're-upload 2');
  t.match(d.screen('a', x), { flagged: true, reason: 'repeated_input', scope: 'client', detection: true }, 're-upload 3');
  const { d: d0 } = detector({ repeats: 0 });
  d0.screen('a', x);
  t.match(d0.screen('a', x), { flagged: true, reason: 'repeated_input' }, 'repeats 0: the first re-upload is flagged');
});

t.test('global scope: a near duplicate of another client\'s query; the same image is not', async (t) => {
  const { d } = detector();
  d.screen('a', image(1));
  t.equal(d.screen('b', image(1)).flagged, false, 'the same image from another client (a popular photo) is not flagged');
  t.match(d.screen('c', nudge(image(1), 5)), { flagged: true, reason: 'near_duplicate', scope: 'global' }, 'a near duplicate of it is');
  const { d: local } = detector({ globalSize: 0 });
  local.screen('a', image(1));
  t.equal(local.screen('c', nudge(image(1), 5)).flagged, false, 'without a global store, clients are independent');
});

t.test('cool-down 0: each flagged query is flagged on its own (reject mode refuses only those)', async (t) => {
  const { d } = detector({ cooldownS: 0, mode: 'reject' });
  d.screen('a', image(1));
  t.match(d.screen('a', nudge(image(1), 2)), { flagged: true, detection: true });
  t.equal(d.screen('a', image(2)).flagged, false, 'the next distinct query passes');
  t.equal(d.coolingDown('a'), null, 'no cool-down to refuse in');
});

t.test('coolingDown: refuses without fingerprinting, only while the cool-down runs', async (t) => {
  const { d, advance } = detector();
  t.equal(d.coolingDown('nobody'), null, 'unknown client');
  d.screen('a', image(1));
  t.equal(d.coolingDown('a'), null, 'not flagged');
  d.screen('a', nudge(image(1), 3));
  t.match(d.coolingDown('a'), { flagged: true, reason: 'cooldown', seen: null, query: 3 });
  advance(60_000);
  t.equal(d.coolingDown('a'), null, 'over');
});

t.test('memory: clients past the limit are forgotten, least recently seen first', async (t) => {
  const { d } = detector({ clients: 4, globalOwners: 1 });
  for (let c = 0; c < 10; c++) d.screen(`c${c}`, image(c));
  t.equal(d.trackedClients, 4);
  t.ok(globalStored(d) <= 100);
  // c0 was forgotten: its near duplicate is now only seen by the global store (another owner).
  t.match(d.screen('c0', nudge(image(0), 4)), { flagged: true, scope: 'global' });
});

t.test('poisoning: images planted by one client never get the clients who later send copies flagged', async (t) => {
  const { d } = detector({ mode: 'reject', globalSize: 1000, clients: 100, globalQuota: 64 });
  for (let i = 0; i < 20; i++) t.equal(d.screen('planter', image(100 + i)).flagged, false);
  for (let i = 0; i < 20; i++) {
    const v = d.screen(`benign-${i}`, nudge(image(100 + i), i + 1)); // a re-encoded copy
    t.equal(v.flagged, false, `benign-${i}: one match across clients is suspicion, not a flag`);
    t.match(v.seen, { globalOwners: 1 });
    t.equal(d.screen(`benign-${i}`, image(500 + i)).flagged, false, `benign-${i}: its next, unrelated query is answered`);
  }
  const { d: fresh } = detector({ mode: 'reject', globalSize: 1000, clients: 100 });
  for (let i = 0; i < 20; i++) fresh.screen('planter', image(100 + i));
  const all = Array.from({ length: 20 }, (_, i) => fresh.screen('collector', nudge(image(100 + i), 40 + i)));
  t.notOk(all.some((v) => v.flagged), 'even copies of every planted image: the one planter is one owner');
});

t.test('a query attack spread over identities is flagged once it matches two of them', async (t) => {
  const { d } = detector({ globalSize: 1000, clients: 100 });
  t.equal(d.screen('sybil-0', nudge(image(7), 1)).flagged, false);
  t.equal(d.screen('sybil-1', nudge(image(7), 2)).flagged, false, 'one other identity matched: suspicion');
  t.match(d.screen('sybil-2', nudge(image(7), 3)), { flagged: true, reason: 'near_duplicate', scope: 'global', seen: { globalOwners: 2 } },
    'two other identities matched by one query');
  const { d: strict } = detector({ globalSize: 1000, clients: 100, globalOwners: 3 });
  for (let k = 0; k < 3; k++) t.equal(strict.screen(`sybil-${k}`, nudge(image(7), k + 1)).flagged, false);
  t.match(strict.screen('sybil-3', nudge(image(7), 4)), { flagged: true, scope: 'global' }, '--detect-global-owners 3: at the fourth');
});

t.test('one identity holds at most --detect-global-quota of the global store', async (t) => {
  const { d } = detector({ globalSize: 100, globalQuota: 5, history: 8 });
  for (let i = 0; i < 50; i++) d.screen('flooder', image(1000 + i));
  t.equal(globalStored(d), 5, 'the flood stored 5');
  d.screen('a', image(1));
  d.screen('b', image(1));
  t.match(d.screen('c', nudge(image(1), 5)), { flagged: true, scope: 'global' }, "others' queries were not flushed out");
});
