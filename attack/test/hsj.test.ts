import t from 'tap';
import { boundarySearch, clampAround, estimateGradient, hopSkipJump } from '../hsj.js';
import { linfDistance, Oracle } from '../oracle.js';
import { Rng } from '../rng.js';
import { linear, linearScore } from './toy.js';

t.test('clampAround keeps a point within radius r of x0 and inside the range', async (t) => {
  const x0 = Float64Array.from([0.1, 0.5, 0.9]);
  const x = Float64Array.from([1, 0, 0.95]);
  t.same(Array.from(clampAround(x, x0, 0.2)).map((v) => +v.toFixed(12)), [0.3, 0.3, 0.95]);
  t.same(Array.from(clampAround(x, x0, 1)), Array.from(x), 'a large radius leaves x');
  t.same(Array.from(clampAround(x, x0, 0)), Array.from(x0), 'radius 0 is x0');
});

t.test('the binary search finds the Linf radius of a known boundary, in log2(range / tolerance) queries', async (t) => {
  // Adversarial when some pixel moves more than 0.37 from x0: the boundary radius is 0.37 exactly.
  const x0 = new Float64Array(10).fill(0.5);
  let queries = 0;
  const decide = async (x: Float64Array) => {
    queries++;
    return linfDistance(x, x0) > 0.37;
  };
  const far = Float64Array.from({ length: 10 }, (_, i) => (i % 2 ? 0 : 1));
  const { x, radius } = await boundarySearch(decide, x0, far, 1e-4);
  t.ok(radius > 0.37 && radius - 0.37 < 1e-4, `radius ${radius} within 1e-4 above 0.37`);
  t.ok(await decide(x), 'the point returned is on the adversarial side');
  t.equal(queries - 1, Math.ceil(Math.log2(0.5 / 1e-4)), 'one query per halving');
  t.ok(Math.abs(linfDistance(x, x0) - radius) < 1e-12, 'its distance is the radius');
});

t.test('the gradient estimate points across a linear boundary', async (t) => {
  const d = 50;
  const rng = new Rng(5);
  const w = Float64Array.from({ length: d }, () => rng.normal());
  const xb = new Float64Array(d).fill(0.5);
  const b = -linearScore(w, 0, xb); // xb on the boundary
  const decide = async (x: Float64Array) => linearScore(w, b, x) > 0;
  const g = await estimateGradient(decide, xb, 0.01, 400, new Rng(9), 0, 1);
  const dot = g.reduce((s, v, i) => s + v * w[i], 0);
  const cos = dot / Math.hypot(...g) / Math.hypot(...w);
  t.ok(cos > 0.5, `cosine with the true normal ${cos.toFixed(3)} > 0.5`);
  const agree = g.filter((v, i) => Math.sign(v) === Math.sign(w[i])).length;
  t.ok(agree >= 0.8 * d, `sign agrees on ${agree}/${d} coordinates`);
});

t.test('HopSkipJump on a linear model reaches the known minimal Linf distance, within budget', async (t) => {
  const d = 64;
  const rng = new Rng(21);
  const w = Float64Array.from({ length: d }, () => rng.normal());
  const x0 = Float64Array.from({ length: d }, () => 0.3 + 0.4 * rng.uniform());
  const l1 = w.reduce((s, v) => s + Math.abs(v), 0);
  const minimal = 0.08; // the box [0, 1] does not bind: x0 is at least 0.3 from its edges
  const b = -linearScore(w, 0, x0) - minimal * l1;
  const budget = 3000;
  const make = (eps: number) => new Oracle(linear(w, b), { budget, deadlineMs: Infinity, x0, label: 0, eps });

  // eps above the minimum: success, and the final image is adversarial and inside the ball.
  const ok = make(0.1);
  const res = await hopSkipJump(ok, x0, { eps: 0.1, lo: 0, hi: 1, eot: 1, rng: new Rng(4), gradQueries: 50 });
  t.equal(res.stop, 'success', `stopped: ${res.stop} at distance ${res.loss}`);
  t.ok(res.loss <= 0.1 && res.loss >= minimal - 1e-6, `distance ${res.loss.toFixed(4)} in [${minimal}, 0.1]`);
  t.ok(linearScore(w, b, res.x) > 0, 'the final image is adversarial');
  t.ok(linfDistance(res.x, x0) <= 0.1 + 1e-12);
  t.ok(ok.queries <= budget);

  // eps below the minimum: impossible, so the budget runs out; the distance still approaches it.
  const no = make(0.05);
  const fail = await hopSkipJump(no, x0, { eps: 0.05, lo: 0, hi: 1, eot: 1, rng: new Rng(4), gradQueries: 50 });
  t.equal(fail.stop, 'budget');
  t.equal(no.queries, budget, 'exactly the budget');
  t.ok(fail.loss < 1.5 * minimal, `distance ${fail.loss.toFixed(4)} within 1.5x of the minimum ${minimal}`);
  t.ok(linfDistance(fail.x, x0) <= 0.05 + 1e-12, 'the image handed to verification is projected into the ball');
});

t.test('HopSkipJump without a misclassified starting point reports no-start', async (t) => {
  const x0 = new Float64Array(8).fill(0.5);
  const always0 = async () => Float64Array.from([1, 0]);
  const oracle = new Oracle(always0, { budget: 1000, deadlineMs: Infinity, x0, label: 0, eps: 0.1 });
  const res = await hopSkipJump(oracle, x0, { eps: 0.1, lo: 0, hi: 1, eot: 3, rng: new Rng(1), gradQueries: 10, initTries: 20 });
  t.equal(res.stop, 'no-start');
  t.equal(oracle.queries, 20 * 2, 'each decision stops after 2 of 3 agreeing answers');
});
