import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { crashBusyWorker } from '../ensemble/worker-spy.js';
import { goldenOf, startApp, TINY } from '../helpers.js';

t.test('health answers while inference saturates every worker', async (t) => {
  const app = await startApp({ workers: 2, maxQueue: 10_000, maxImagesPerRequest: 64 });
  t.teardown(() => app.close());
  const golden = await goldenOf(TINY);
  const b64 = (await readFile(path.join(TINY, golden[0].file))).toString('base64');
  let finished = 0;
  const load = Array.from({ length: 40 }, () => app.server
    .inject({ method: 'POST', url: '/classify', payload: { images: Array(64).fill(b64) } })
    .then((res) => { finished++; return res.statusCode; }));
  const ens = await app.modelReady;
  // Wait until every worker is busy and jobs are queued behind them.
  while (!(ens.statistics().busyWorkers === ens.statistics().workers && ens.statistics().queuedJobs > 0)) await new Promise((r) => setTimeout(r, 1));
  const health = await app.server.inject({ url: '/healthz' });
  const pendingAtHealth = 40 - finished;
  t.equal(health.statusCode, 200);
  t.ok(pendingAtHealth > 0, `healthz answered while ${pendingAtHealth} of 40 classify requests were still running`);
  t.same(new Set(await Promise.all(load)), new Set([200]), 'every classify request succeeded');
});

t.test('past the queue bound, requests get 503 with Retry-After at once, and the server recovers', async (t) => {
  const app = await startApp({ workers: 1, maxQueue: 2 });
  t.teardown(() => app.close());
  const golden = await goldenOf(TINY);
  const b64 = (await readFile(path.join(TINY, golden[0].file))).toString('base64');
  const results = await Promise.all(Array.from({ length: 30 }, () =>
    app.server.inject({ method: 'POST', url: '/classify', payload: { images: Array(32).fill(b64) } })));
  const shed = results.filter((r) => r.statusCode === 503);
  t.ok(shed.length > 0, `${shed.length} of 30 requests were shed`);
  t.equal(shed[0].json().error, 'overloaded');
  t.equal(shed[0].headers['retry-after'], '1');
  t.ok(results.some((r) => r.statusCode === 200), 'the rest were served');
  const after = await app.server.inject({ method: 'POST', url: '/classify', payload: { images: [b64] } });
  t.equal(after.statusCode, 200, 'serving again after the burst');
});

t.test('past --max-queue inference requests in flight, a POST is shed once its body is complete, before pre-processing', async (t) => {
  const app = await startApp({ workers: 1, maxQueue: 3 });
  t.teardown(() => app.close());
  const golden = await goldenOf(TINY);
  const b64 = (await readFile(path.join(TINY, golden[0].file))).toString('base64');
  const results = await Promise.all(Array.from({ length: 12 }, () =>
    app.server.inject({ method: 'POST', url: '/classify', payload: { images: [b64] } })));
  const codes = results.map((r) => r.statusCode);
  t.ok(codes.filter((c) => c === 200).length >= 1 && codes.filter((c) => c === 200).length <= 3, `at most 3 served at once (${codes})`);
  const shed = results.filter((r) => r.statusCode === 503);
  t.ok(shed.every((r) => r.json().error === 'overloaded' && r.headers['retry-after'] === '1'), 'every 503 is overloaded + Retry-After');
  // Most are refused at the HTTP layer; an admitted request may still find the pool's job queue
  // full, which says so in its own words.
  const messages = shed.map((r) => r.json().message as string);
  t.ok(messages.some((m) => /inference requests in flight \(the limit is 3\)/.test(m)), 'shed at the HTTP edge');
  t.ok(messages.every((m) => /inference requests in flight \(the limit is 3\)|inference queue is full/.test(m)), messages.join(' | '));
  t.equal((await app.server.inject({ url: '/readyz' })).statusCode, 200, 'probes are not counted');
  const after = await app.server.inject({ method: 'POST', url: '/classify', payload: { images: [b64] } });
  t.equal(after.statusCode, 200, 'the count returns to zero: serving again');
});

t.test('a killed worker fails its request with 503, never hangs, and is replaced', async (t) => {
  const app = await startApp({ workers: 1 });
  t.teardown(() => app.close());
  const ens = await app.modelReady;
  const golden = await goldenOf(TINY);
  const b64 = (await readFile(path.join(TINY, golden[0].file))).toString('base64');
  const inflight = app.server.inject({ method: 'POST', url: '/classify', payload: { images: Array(64).fill(b64) } });
  while (ens.statistics().busyWorkers === 0) await new Promise((r) => setTimeout(r, 1));
  crashBusyWorker();
  const res = await inflight;
  t.equal(res.statusCode, 503);
  t.equal(res.json().error, 'worker_failed');
  while (ens.statistics().workers === 0) await new Promise((r) => setTimeout(r, 10));
  const again = await app.server.inject({ method: 'POST', url: '/classify', payload: { images: [b64] } });
  t.equal(again.statusCode, 200, 'the replacement worker serves');
});

t.test('mean sampling (a job per member): a full job queue refuses whole requests at admission, before decoding', async (t) => {
  // tiny-ensemble has 3 members: a mean request is 3 jobs, so 6 queued jobs hold two requests.
  const app = await startApp({ workers: 1, maxQueue: 6, sampling: { mode: 'mean' } });
  t.teardown(() => app.close());
  const golden = await goldenOf(TINY);
  const b64 = (await readFile(path.join(TINY, golden[0].file))).toString('base64');
  const ens = await app.modelReady;
  let maxQueued = 0;
  const watch = setInterval(() => { maxQueued = Math.max(maxQueued, ens.statistics().queuedJobs); }, 0);
  const results = await Promise.all(Array.from({ length: 40 }, () =>
    app.server.inject({ method: 'POST', url: '/classify', payload: { images: [b64, b64, b64, b64] } })));
  clearInterval(watch);
  const codes = results.map((r) => r.statusCode);
  t.ok(codes.every((c) => c === 200 || c === 503), `200 or 503 only (${codes})`);
  t.ok(codes.filter((c) => c === 200).length >= 2, 'the requests the queue holds are served');
  const messages = results.filter((r) => r.statusCode === 503).map((r) => r.json().message as string);
  t.ok(messages.length > 0, `${messages.length} of 40 refused`);
  t.ok(messages.some((m) => m === 'the inference queue is full; retry shortly'), 'refused at admission, before pre-processing');
  t.ok(maxQueued <= 6 + 3, `the job queue stayed at its bound (at most ${maxQueued} jobs seen)`);
  const after = await app.server.inject({ method: 'POST', url: '/classify', payload: { images: [b64] } });
  t.equal(after.statusCode, 200, 'serving again after the burst');
});
