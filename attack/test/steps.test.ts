import t from 'tap';
import { argmax, linfDistance, Oracle, StopAttack } from '../oracle.js';
import { deriveSeed, Rng } from '../rng.js';
import { marginLoss, projectLinf, pSchedule, squareAttack, squareSide } from '../square.js';
import { linear, linearScore } from './toy.js';

t.test('the seeded RNG is reproducible and covers its range', async (t) => {
  const a = new Rng(42);
  const b = new Rng(42);
  const seqA = Array.from({ length: 5 }, () => a.u32());
  t.same(seqA, Array.from({ length: 5 }, () => b.u32()), 'same seed, same stream');
  t.not(new Rng(43).u32(), new Rng(42).u32(), 'another seed, another stream');
  t.not(deriveSeed(1, 2, 3), deriveSeed(1, 3, 2), 'derived seeds depend on the order');
  const r = new Rng(7);
  const u = Array.from({ length: 20000 }, () => r.uniform());
  t.ok(u.every((v) => v >= 0 && v < 1), 'uniform in [0, 1)');
  const mean = u.reduce((s, v) => s + v, 0) / u.length;
  t.ok(Math.abs(mean - 0.5) < 0.01, `mean ${mean.toFixed(4)} near 0.5`);
  const ints = new Set(Array.from({ length: 1000 }, () => r.int(7)));
  t.same([...ints].sort(), [0, 1, 2, 3, 4, 5, 6], 'int(7) hits exactly 0..6');
  const n = Array.from({ length: 20000 }, () => r.normal());
  const nm = n.reduce((s, v) => s + v, 0) / n.length;
  const nv = n.reduce((s, v) => s + (v - nm) ** 2, 0) / n.length;
  t.ok(Math.abs(nm) < 0.03 && Math.abs(nv - 1) < 0.05, `normal: mean ${nm.toFixed(3)}, variance ${nv.toFixed(3)}`);
});

t.test('margin loss on known probabilities', async (t) => {
  t.equal(marginLoss([0.7, 0.2, 0.1], 0), 0.7 - 0.2);
  t.equal(marginLoss([0.7, 0.2, 0.1], 1), 0.2 - 0.7);
  t.equal(marginLoss([0.1, 0.3, 0.6], 2), 0.6 - 0.3);
  t.equal(marginLoss([0.5, 0.5], 0), 0, 'a tie is not yet a success (margin 0)');
  t.ok(marginLoss([0.4, 0.35, 0.25], 2) < 0, 'negative when the label is not the top class');
});

t.test("Square's p schedule: p_init halves at the paper's fractions, rescaled to the budget", async (t) => {
  const p = 0.8;
  // 10 000 iterations: the paper's breakpoints exactly.
  const at = (i: number) => pSchedule(p, i, 10000);
  t.equal(at(0), p);
  t.equal(at(10), p, 'still p_init at iteration 10');
  t.equal(at(11), p / 2);
  t.equal(at(50), p / 2);
  t.equal(at(51), p / 4);
  t.equal(at(200), p / 4);
  t.equal(at(201), p / 8);
  t.equal(at(501), p / 16);
  t.equal(at(1001), p / 32);
  t.equal(at(2001), p / 64);
  t.equal(at(4001), p / 128);
  t.equal(at(6001), p / 256);
  t.equal(at(8001), p / 512);
  t.equal(at(9999), p / 512);
  // 500 iterations: the same fractions of the run.
  t.equal(pSchedule(p, 0, 500), p);
  t.equal(pSchedule(p, 1, 500), p / 2, 'iteration 1 of 500 is 20/10000');
  t.equal(pSchedule(p, 10, 500), p / 4, '200/10000: still the third step');
  t.equal(pSchedule(p, 11, 500), p / 8);
  t.equal(pSchedule(p, 250, 500), p / 128, '5000/10000 lies in (4000, 6000]');
  t.equal(pSchedule(p, 499, 500), p / 512);
  // Window sides on a 28 x 28 plane.
  t.equal(squareSide(0.8, 28, 28), 25, 'round(sqrt(0.8 * 784)) = 25');
  t.equal(squareSide(0.05, 28, 28), 6, 'round(sqrt(39.2)) = 6');
  t.equal(squareSide(1, 28, 28), 27, 'never the whole side');
  t.equal(squareSide(0.8 / 512, 28, 28), 1, 'never below 1');
});

t.test('projection stays in the eps ball and the pixel range', async (t) => {
  const rng = new Rng(3);
  for (let trial = 0; trial < 200; trial++) {
    const eps = 0.01 + 0.3 * rng.uniform();
    const n = 50;
    const x0 = Float64Array.from({ length: n }, () => rng.uniform());
    const x = Float64Array.from({ length: n }, () => 3 * rng.uniform() - 1); // far outside both
    const p = projectLinf(x, x0, eps, 0, 1);
    t.ok(linfDistance(p, x0) <= eps + 1e-12, 'inside the ball');
    t.ok(p.every((v) => v >= 0 && v <= 1), 'inside [0, 1]');
    // A point already inside is unchanged.
    const inside = projectLinf(p, x0, eps, 0, 1);
    t.same(Array.from(inside), Array.from(p), 'idempotent');
  }
  t.same(Array.from(projectLinf([0.5, -1, 2], [0.5, 0.05, 0.98], 0.1, 0, 1)), [0.5, 0, 1], 'clipped to the range before the ball');
  t.same(Array.from(projectLinf([0.9, 0.1], [0.5, 0.5], 0.1, 0, 1)), [0.6, 0.4], 'clipped to the ball');
});

t.test('the oracle counts every query, enforces the budget and records the first in-ball hit', async (t) => {
  const w = new Float64Array(4).fill(1);
  const x0 = new Float64Array(4).fill(0.2);
  const oracle = new Oracle(linear(w, -1), { budget: 5, deadlineMs: Infinity, x0, label: 0, eps: 0.1 });
  t.equal(argmax(await oracle.probs(x0)), 0);
  t.equal(oracle.firstHit, null);
  t.equal(argmax(await oracle.probs(new Float64Array(4).fill(0.9))), 1, 'wrong, but outside the ball');
  t.equal(oracle.firstHit, null, 'a wrong answer outside the ball is no hit');
  t.equal(await oracle.isAdversarial(new Float64Array(4).fill(0.3), 1), true, 'score 0.2 > 0: wrong inside the ball');
  t.equal(oracle.firstHit, 3);
  await oracle.meanProbs(x0, 2);
  t.equal(oracle.queries, 5);
  await t.rejects(oracle.probs(x0), StopAttack, 'the sixth query is refused');
  t.equal(oracle.queries, 5, 'a refused query is not sent');
  const late = new Oracle(linear(w, -1), { budget: 5, deadlineMs: Date.now() - 1, x0, label: 0, eps: 0.1 });
  await t.rejects(late.probs(x0), new StopAttack('time'), 'past the deadline nothing is sent');
});

t.test('Square on a linear model: every query inside the ball and range, succeeds, stops on success', async (t) => {
  const d = 3 * 8 * 8;
  const rng = new Rng(11);
  const w = Float64Array.from({ length: d }, () => rng.uniform() - 0.5);
  const x0 = Float64Array.from({ length: d }, () => rng.uniform());
  const l1 = w.reduce((s, v) => s + Math.abs(v), 0);
  // Put x0 at Linf distance 0.05 from the boundary on the class-0 side; eps 0.1 suffices.
  const b = -linearScore(w, 0, x0) - 0.05 * l1;
  const queried: Float64Array[] = [];
  const inner = linear(w, b);
  const oracle = new Oracle(async (x) => {
    queried.push(Float64Array.from(x));
    return inner(x);
  }, { budget: 300, deadlineMs: Infinity, x0, label: 0, eps: 0.1 });
  const res = await squareAttack(oracle, x0, 0, { shape: [3, 8, 8], eps: 0.1, lo: 0, hi: 1, eot: 1, pInit: 0.8, rng: new Rng(1) });
  t.equal(res.stop, 'success');
  t.ok(linearScore(w, b, res.x) > 0, 'the final image is adversarial');
  t.ok(res.loss < 0, 'its margin is negative');
  t.equal(oracle.firstHit, oracle.queries, 'stopped at the first wrong answer');
  t.ok(queried.every((x) => linfDistance(x, x0) <= 0.1 + 1e-12 && x.every((v) => v >= 0 && v <= 1)),
    `all ${queried.length} queried images in the ball and the range`);
  // Vertical stripes: the first query shifts whole columns by the same sign (where not clipped).
  const first = queried[0];
  const col = (ch: number, c: number) => Array.from({ length: 8 }, (_, r) => Math.sign(first[ch * 64 + r * 8 + c] - x0[ch * 64 + r * 8 + c]));
  for (let ch = 0; ch < 3; ch++) {
    for (let c = 0; c < 8; c++) {
      const signs = new Set(col(ch, c).filter((s) => s !== 0));
      t.ok(signs.size <= 1, `channel ${ch} column ${c} shifted one way`);
    }
  }
});

t.test('Square gives up at the budget when eps is too small, and EOT spends m queries per candidate', async (t) => {
  const d = 16;
  const w = new Float64Array(d).fill(1);
  const x0 = new Float64Array(d).fill(0.5);
  const b = -linearScore(w, 0, x0) - 0.2 * d; // needs Linf 0.2
  const oracle = new Oracle(linear(w, b), { budget: 40, deadlineMs: Infinity, x0, label: 0, eps: 0.1 });
  const res = await squareAttack(oracle, x0, 0, { shape: [1, 4, 4], eps: 0.1, lo: 0, hi: 1, eot: 1, pInit: 0.8, rng: new Rng(2) });
  t.equal(res.stop, 'budget');
  t.equal(oracle.queries, 40, 'the whole budget, not one more');
  t.equal(oracle.firstHit, null);
  t.ok(linfDistance(res.x, x0) <= 0.1 + 1e-12);

  const seen: number[] = [];
  const counting = new Oracle(async (x) => {
    seen.push(x.reduce((s, v) => s + v, 0));
    return linear(w, b)(x);
  }, { budget: 42, deadlineMs: Infinity, x0, label: 0, eps: 0.1 });
  const eot = await squareAttack(counting, x0, 0, { shape: [1, 4, 4], eps: 0.1, lo: 0, hi: 1, eot: 4, pInit: 0.8, rng: new Rng(2) });
  t.equal(eot.stop, 'budget');
  t.equal(counting.queries, 40, '10 candidates of 4 queries; the 2 left over cannot score an 11th');
  for (let k = 0; k < seen.length; k += 4) t.ok(seen.slice(k, k + 4).every((v) => v === seen[k]), `candidate ${k / 4} queried 4 times`);
});
