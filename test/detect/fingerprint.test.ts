import t from 'tap';
import { Fingerprinter, type FingerprintKey, type FingerprintParams, type Normalisation } from '../../src/detect/fingerprint.js';

const KEY: FingerprintKey = { base: 0x9e3779b1, mix: 0x1234abcd, digest: 0x0badf00d };
const GRAY: Normalisation = { channels: 1, plane: 64, scale: 1 / 255, mean: [0], std: [1] };

/** Hashes two fingerprints share. */
function sharedHashes(a: Uint32Array, b: Uint32Array): number {
  const set = new Set(a);
  return b.filter((h) => set.has(h)).length;
}

function mix32(x: number): number {
  let z = x >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/**
 * The fingerprint written the slow, obvious way (every window hashed from scratch, BigInt
 * arithmetic, full sort): the reference the rolling implementation must match exactly.
 */
function reference(levels: readonly number[], p: FingerprintParams, key: FingerprintKey): number[] {
  const maxBucket = Math.floor(255 / p.quantStep);
  const q = levels.map((v) => Math.min(maxBucket, Math.max(0, Math.floor(v / p.quantStep))));
  const base = BigInt((key.base | 1) >>> 0);
  const all = new Set<number>();
  for (let start = 0; start + p.window <= q.length; start++) {
    const win = q.slice(start, start + p.window);
    if (win.every((v) => v === win[0])) continue;
    let h = 0n;
    for (const v of win) h = (h * base + BigInt(v + 1)) % 2n ** 32n;
    all.add(mix32(Number(h) ^ key.mix));
  }
  return [...all].sort((a, b) => b - a).slice(0, p.hashes).sort((a, b) => a - b);
}

/** A seeded 8-bit image: a bright blob on a dark background, with texture. */
function image(seed: number, n = 64): number[] {
  let s = seed >>> 0;
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  return Array.from({ length: n }, (_, i) => ((i % 8) > 1 && (i % 8) < 6 && i > 16 && i < 48 ? 120 + Math.floor(next() * 135) : Math.floor(next() * 40)));
}

const tensorOf = (levels: readonly number[], norm: Normalisation = GRAY) =>
  Float32Array.from(levels, (v, i) => (v * norm.scale - norm.mean[Math.floor(i / norm.plane)]) / norm.std[Math.floor(i / norm.plane)]);

t.test('golden fingerprints for fixed inputs (fixed key)', async (t) => {
  const params = { quantStep: 50, window: 4, hashes: 6 };
  const fp = new Fingerprinter(params, GRAY, KEY);
  const a = fp.compute(tensorOf(image(1)));
  // Pinned values: a change to the quantisation, the hash or the selection shows up here.
  t.same(Array.from(a.hashes), [3204071904, 3249938616, 3717178239, 3828468832, 4116814121, 4177515488]);
  t.equal(a.digest, 6286991453000367);
  const ramp = fp.compute(tensorOf(Array.from({ length: 64 }, (_, i) => i * 4)));
  t.same(Array.from(ramp.hashes), [1783050563, 2263554248, 2562029555, 2773595898, 3585311279, 3911434355]);
});

t.test('the rolling implementation equals the from-scratch reference', async (t) => {
  for (const params of [{ quantStep: 50, window: 4, hashes: 6 }, { quantStep: 20, window: 9, hashes: 20 }, { quantStep: 1, window: 1, hashes: 64 }]) {
    const fp = new Fingerprinter(params, GRAY, KEY);
    for (let seed = 0; seed < 20; seed++) {
      const levels = image(seed);
      t.same(Array.from(fp.compute(tensorOf(levels)).hashes), reference(levels, params, KEY),
        `seed ${seed}, step ${params.quantStep}, window ${params.window}`);
    }
  }
  // Larger than the scratch size and many windows: the cutoff path and the full-sort path agree.
  const big: Normalisation = { channels: 3, plane: 48 * 48, scale: 1 / 255, mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3] };
  const levels = image(7, 3 * 48 * 48);
  const params = { quantStep: 30, window: 12, hashes: 40 };
  t.same(Array.from(new Fingerprinter(params, big, KEY).compute(tensorOf(levels, big)).hashes), reference(levels, params, KEY), 'RGB, mean/std undone');
});

t.test('properties the detector relies on', async (t) => {
  const params = { quantStep: 50, window: 8, hashes: 20 };
  const fp = new Fingerprinter(params, GRAY, KEY);
  const levels = image(3);
  const base = fp.compute(tensorOf(levels));
  t.equal(base.hashes.length, 20, 'keeps the requested number of hashes');
  t.ok(base.hashes.every((h, i) => i === 0 || h > base.hashes[i - 1]), 'ascending and distinct');

  // Same pixels, another normalisation: the same buckets, so the same hashes (not the same bytes).
  const other: Normalisation = { ...GRAY, mean: [0.5], std: [0.25] };
  const renormalised = new Fingerprinter(params, other, KEY).compute(tensorOf(levels, other));
  t.same(renormalised.hashes, base.hashes, 'fingerprints are of pixels, not of the normalised floats');
  t.not(renormalised.digest, base.digest, 'the digest is of the exact tensor');

  // A perturbation that keeps every pixel in its bucket changes the digest, not the hashes.
  const nudged = levels.map((v) => (Math.floor(v / 50) * 50) + Math.min(49, (v % 50) + 0.3));
  const n = fp.compute(tensorOf(nudged));
  t.equal(sharedHashes(n.hashes, base.hashes), 20, 'in-bucket noise keeps every hash');
  t.not(n.digest, base.digest);

  // A one-pixel change alters only the windows that contain it.
  const one = [...levels];
  one[30] = 255 - one[30];
  t.ok(sharedHashes(fp.compute(tensorOf(one)).hashes, base.hashes) >= 12, 'one changed pixel keeps most hashes');

  // A shifted copy (by one element along the flattened tensor) keeps most window contents.
  const shifted = [levels[63], ...levels.slice(0, 63)];
  t.ok(sharedHashes(fp.compute(tensorOf(shifted)).hashes, base.hashes) >= 15, 'shift keeps most hashes');

  // Unrelated images share few kept hashes.
  const unrelated = sharedHashes(fp.compute(tensorOf(image(99))).hashes, base.hashes);
  t.ok(unrelated <= 5, `unrelated images share ${unrelated} of 20`);

  // Flat windows say nothing: a blank image has no fingerprint at all.
  t.equal(fp.compute(new Float32Array(64)).hashes.length, 0, 'blank image: no hashes');

  // Another key keeps other windows.
  const rekeyed = new Fingerprinter(params, GRAY, { ...KEY, mix: KEY.mix ^ 1 }).compute(tensorOf(levels));
  t.ok(sharedHashes(rekeyed.hashes, base.hashes) < 20, 'the key decides which windows are kept');

  t.throws(() => fp.compute(new Float32Array(10)), /tensor: 10 elements, expected 64/);
});

t.test('out-of-range values clamp to the end buckets', async (t) => {
  const params = { quantStep: 64, window: 3, hashes: 10 };
  const fp = new Fingerprinter(params, GRAY, KEY);
  const wild = Array.from({ length: 64 }, (_, i) => (i % 3 === 0 ? -1000 : i % 3 === 1 ? 1000 : 100));
  const clamped = wild.map((v) => Math.min(255, Math.max(0, v)));
  t.same(fp.compute(tensorOf(wild)).hashes, fp.compute(tensorOf(clamped)).hashes);
});
