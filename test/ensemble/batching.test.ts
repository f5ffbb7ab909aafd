/**
 * Dynamic batching in the worker pool (scripted worker, fake-worker.ts): jobs that drew the same
 * member run together, up to maxBatchImages; a batch that is not full waits up to queueDelayUs for
 * the last idle worker; a full batch goes at once; each job still gets exactly its own rows.
 */
import t from 'tap';
import { CLASSES, fakePool, images, recorder, runOne } from './fake-pool.js';

t.setTimeout(600_000);

/** [member, tag, batch image count] of each row. */
const rows = (logits: Float32Array) => Array.from({ length: logits.length / CLASSES }, (_, i) => Array.from(logits.subarray(i * CLASSES, i * CLASSES + 3)));

t.test('jobs queued behind a busy worker run as one batch per member, each getting its own rows', async (t) => {
  const { observer, seen } = recorder();
  const pool = await fakePool({ size: 1, maxBatchImages: 64, queueDelayUs: 0 }, observer);
  t.teardown(() => pool.close());
  const blocker = runOne(pool, 2, images(1, 0, 150), 1);
  const jobs = [
    ...Array.from({ length: 10 }, (_, j) => ({ member: 0, n: 1 + (j % 3), tag: 1000 * (j + 1) })),
    ...Array.from({ length: 5 }, (_, j) => ({ member: 1, n: 2, tag: 100_000 + 1000 * j })),
  ];
  const pending = jobs.map((j) => runOne(pool, j.member, images(j.n, j.tag), j.n));
  t.equal(pool.queued, 15);
  await blocker;
  const results = await Promise.all(pending);
  const images0 = jobs.filter((j) => j.member === 0).reduce((s, j) => s + j.n, 0);
  results.forEach((logits, k) => {
    const r = rows(logits);
    const j = jobs[k];
    t.equal(r.length, j.n, `job ${k}: its ${j.n} rows`);
    t.ok(r.every((row, i) => row[0] === j.member && row[1] === j.tag + i), `job ${k}: member ${j.member}, its own images in order`);
    t.equal(r[0][2], j.member === 0 ? images0 : 10, `job ${k} ran in a batch of ${r[0][2]} images`);
  });
  t.same(seen.batches.slice(1), [{ member: 0, images: images0, jobs: 10 }, { member: 1, images: 10, jobs: 5 }],
    'one run per member, the oldest waiting member first');
});

t.test('a batch holds at most maxBatchImages images; a larger job runs alone', async (t) => {
  const { observer, seen } = recorder();
  const pool = await fakePool({ size: 1, maxBatchImages: 8, queueDelayUs: 0 }, observer);
  t.teardown(() => pool.close());
  const blocker = runOne(pool, 2, images(1, 0, 150), 1);
  const small = Array.from({ length: 6 }, (_, j) => runOne(pool, 0, images(3, j * 10), 3));
  const big = runOne(pool, 0, images(20, 500), 20);
  await Promise.all([blocker, ...small, big]);
  t.same(seen.batches.slice(1).map((b) => [b.images, b.jobs]), [[6, 2], [6, 2], [6, 2], [20, 1]]);
  t.ok(seen.batches.every((b) => b.images <= 8 || b.jobs === 1));
});

t.test('maxBatchImages 1 turns batching off', async (t) => {
  const { observer, seen } = recorder();
  const pool = await fakePool({ size: 1, maxBatchImages: 1, queueDelayUs: 5_000_000 }, observer);
  t.teardown(() => pool.close());
  const started = performance.now();
  await Promise.all([runOne(pool, 2, images(1, 0, 50), 1), ...Array.from({ length: 4 }, () => runOne(pool, 0, images(1, 0), 1))]);
  t.ok(performance.now() - started < 4000, 'no queue delay when batching is off');
  t.ok(seen.batches.every((b) => b.jobs === 1), 'every job ran alone');
});

t.test('queue delay: the last idle worker waits for more jobs of the member; a full batch goes at once', async (t) => {
  const { observer, seen } = recorder();
  const pool = await fakePool({ size: 1, maxBatchImages: 4, queueDelayUs: 200_000 }, observer);
  t.teardown(() => pool.close());
  const started = performance.now();
  const first = runOne(pool, 0, images(1, 10), 1);
  await new Promise((r) => setTimeout(r, 50));
  const second = runOne(pool, 0, images(1, 20), 1);
  const [a, b] = await Promise.all([first, second]);
  const waited = performance.now() - started;
  t.same([rows(a)[0], rows(b)[0]], [[0, 10, 2], [0, 20, 2]], 'a job that came 50 ms later joined the batch');
  t.ok(waited >= 190, `the batch waited for the delay (${waited.toFixed(0)} ms)`);

  const fullStarted = performance.now();
  const full = await Promise.all(Array.from({ length: 4 }, (_, j) => runOne(pool, 1, images(1, j), 1)));
  const fullMs = performance.now() - fullStarted;
  t.ok(full.every((l) => rows(l)[0][2] === 4), 'four one-image jobs filled a batch of 4');
  t.ok(fullMs < 150, `a full batch went without the 200 ms delay (${fullMs.toFixed(0)} ms)`);
  t.same(seen.batches.map((x) => x.jobs), [2, 4]);
});

t.test('while another worker is idle, a job does not wait for the delay', async (t) => {
  const pool = await fakePool({ size: 2, maxBatchImages: 64, queueDelayUs: 2_000_000 });
  t.teardown(() => pool.close());
  const started = performance.now();
  await runOne(pool, 0, images(1, 0), 1);
  const ms = performance.now() - started;
  t.ok(ms < 1000, `answered in ${ms.toFixed(0)} ms, not after the 2 s delay`);
});

t.test('the delay never starves a member: the oldest job goes first once it has waited the delay', async (t) => {
  const { observer, seen } = recorder();
  const pool = await fakePool({ size: 1, maxBatchImages: 2, queueDelayUs: 30_000 }, observer);
  t.teardown(() => pool.close());
  const blocker = runOne(pool, 2, images(1, 0, 100), 1);
  while (pool.busy === 0) await new Promise((r) => setTimeout(r, 1));
  const lonely = runOne(pool, 1, images(1, 7), 1);
  const crowd = Array.from({ length: 6 }, () => runOne(pool, 0, images(1, 0), 1));
  await Promise.all([blocker, lonely, ...crowd]);
  t.same(seen.batches[1], { member: 1, images: 1, jobs: 1 }, 'the oldest job (member 1) ran first, though member 0 had full batches');
});
