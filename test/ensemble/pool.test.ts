/**
 * The worker pool with a scripted worker (fake-worker.ts): answers go to the right job, the queue
 * is bounded, deadlines hold, a dead worker fails its jobs and is replaced, close() refuses work.
 */
import t from 'tap';
import { UnavailableError } from '../../src/errors.js';
import { CLASSES, fakePool, images, MEMBERS, recorder, runOne } from './fake-pool.js';
import { crashBusyWorker } from './worker-spy.js';

// Starting worker threads is slow on a loaded machine; this file starts about ten.
t.setTimeout(600_000);

const rows = (logits: Float32Array) => Array.from({ length: logits.length / CLASSES }, (_, i) => Array.from(logits.subarray(i * CLASSES, i * CLASSES + 3)));
const codeOf = (p: Promise<unknown>) => p.then(() => 'ok', (e: Error & { code?: string }) => `${e instanceof UnavailableError ? 'unavailable' : e.name} ${e.code}`);

t.test('each job gets its own member and images back', async (t) => {
  const pool = await fakePool({ size: 2 });
  t.teardown(() => pool.close());
  const jobs = Array.from({ length: 30 }, (_, j) => ({ member: j % MEMBERS, tag: j * 100, n: 1 + (j % 4) }));
  const results = await Promise.all(jobs.map((j) => runOne(pool, j.member, images(j.n, j.tag), j.n)));
  results.forEach((logits, j) => {
    const r = rows(logits);
    t.equal(r.length, jobs[j].n, `job ${j}: ${jobs[j].n} rows`);
    t.ok(r.every((row, i) => row[0] === jobs[j].member && row[1] === jobs[j].tag + i), `job ${j}: member ${jobs[j].member}, its own images`);
  });
  t.equal(pool.queued, 0);
  t.equal(pool.busy, 0);
});

t.test('past maxQueue waiting jobs, run rejects at once as unavailable: overloaded, retry after 1 s; the rest are served', async (t) => {
  const pool = await fakePool({ size: 1, maxQueue: 2 });
  t.teardown(() => pool.close());
  const slow = runOne(pool, 0, images(1, 0, 150), 1);
  const queued = [runOne(pool, 1, images(1, 1), 1), runOne(pool, 2, images(1, 2), 1)];
  t.equal(pool.queued, 2);
  const started = performance.now();
  const err = await runOne(pool, 0, images(1, 3), 1).catch((e) => e);
  t.ok(performance.now() - started < 50, 'refused at once');
  t.same([err instanceof UnavailableError, err.code, err.retryAfterSeconds], [true, 'overloaded', 1]);
  await slow;
  t.same((await Promise.all(queued)).map((l) => l[0]), [1, 2], 'queued jobs served after the slow one');
  t.equal(pool.queued, 0);
});

t.test('a request\'s jobs are admitted all or none; an empty queue admits any request', async (t) => {
  const pool = await fakePool({ size: 1, maxQueue: 2 });
  t.teardown(() => pool.close());
  const part = (member: number) => ({ member, data: images(1, member), n: 1 });
  const slow = runOne(pool, 0, images(1, 0, 150), 1);
  const one = runOne(pool, 1, images(1, 1), 1);
  const err = await pool.runAll([part(0), part(1), part(2)]).catch((e) => e);
  t.equal(err.code, 'overloaded', 'three jobs do not fit beside one');
  t.equal(pool.queued, 1, 'none of them was queued');
  await Promise.all([slow, one]);
  const all = await pool.runAll([part(0), part(1), part(2)]);
  t.same(all.map((l) => l[0]), [0, 1, 2], 'with the queue empty, three jobs are admitted though maxQueue is 2');
});

t.test('a job past its deadline fails as timeout, leaves the queue, and the pool recovers', async (t) => {
  const pool = await fakePool({ size: 1, jobTimeoutMs: 100 });
  t.teardown(() => pool.close());
  const started = performance.now();
  const running = codeOf(runOne(pool, 0, images(1, 0, 400), 1));
  const waiting = codeOf(runOne(pool, 1, images(1, 1), 1));
  t.equal(pool.queued, 1);
  t.same(await Promise.all([running, waiting]), ['unavailable timeout', 'unavailable timeout']);
  const elapsed = performance.now() - started;
  t.ok(elapsed < 300, `both answered at the deadline (${elapsed.toFixed(0)} ms), not when the worker finished`);
  t.equal(pool.queued, 0, 'the expired job left the queue');
  while (pool.busy > 0) await new Promise((r) => setTimeout(r, 5));
  const after = await runOne(pool, 2, images(1, 7), 1);
  t.same(rows(after)[0].slice(0, 2), [2, 7], 'served once the worker is free again');
});

t.test('a worker that dies fails its jobs as worker_failed, never hangs, and is replaced', async (t) => {
  const { observer, seen } = recorder();
  const pool = await fakePool({ size: 1 }, observer);
  t.teardown(() => pool.close());
  const crash = codeOf(runOne(pool, 0, images(1, 0, -1), 1));
  const behind = [runOne(pool, 1, images(1, 10), 1), runOne(pool, 2, images(1, 20), 1)];
  t.equal(await crash, 'unavailable worker_failed');
  const served = await Promise.all(behind);
  t.same(served.map((l) => [l[0], l[1]]), [[1, 10], [2, 20]], 'jobs queued behind the crash are served by the replacement');
  t.equal(seen.replaced, 1, 'replacement reported');
  t.equal(pool.workers, 1);

  const killed = codeOf(runOne(pool, 0, images(1, 0, 300), 1));
  while (pool.busy === 0) await new Promise((r) => setTimeout(r, 1));
  crashBusyWorker();
  t.equal(await killed, 'unavailable worker_failed', 'a worker that exits mid-run too');
  t.same(rows(await runOne(pool, 1, images(1, 5), 1))[0].slice(0, 2), [1, 5], 'and its replacement serves');
  t.equal(seen.replaced, 2);
});

t.test('close() fails queued jobs as shutting_down and refuses new ones', async (t) => {
  const pool = await fakePool({ size: 1 });
  const running = codeOf(runOne(pool, 0, images(1, 0, 100), 1));
  const queued = codeOf(runOne(pool, 1, images(1, 1), 1));
  await pool.close();
  t.same(await Promise.all([running, queued]), ['unavailable shutting_down', 'unavailable shutting_down']);
  t.equal(await codeOf(runOne(pool, 0, images(1, 0), 1)), 'unavailable shutting_down');
});

t.test('a job the worker fails is rejected with its message; a job past the channel size is refused; both leave the pool serving', async (t) => {
  const pool = await fakePool({ size: 1, maxBatchImages: 4, maxJobImages: 8 });
  t.teardown(() => pool.close());
  const failed = await runOne(pool, 0, images(1, 0, -2), 1).catch((e: Error) => e);
  t.match(failed, { message: 'scripted failure' }, 'the worker\'s error message reaches the caller');
  const tooBig = await runOne(pool, 0, images(9, 0), 9).catch((e: Error) => e);
  t.match(tooBig, { message: /a job of 9 images exceeds the pool's maxJobImages 8/ });
  t.equal(pool.queued, 0, 'the refused job was never queued');
  // A job as large as the channel allows, then small ones, through the same shared memory.
  t.same(rows(await runOne(pool, 2, images(8, 30), 8)).map((r) => r[1]), [30, 31, 32, 33, 34, 35, 36, 37]);
  t.same(rows(await runOne(pool, 1, images(2, 50), 2)), [[1, 50, 2], [1, 51, 2]], 'earlier, larger answers do not leak into later ones');
});
