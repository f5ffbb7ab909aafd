/** Prometheus metrics: the named series exist on the metrics server, count what happened, and stay off the public port. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { goldenOf, parseMetrics, sample, startApp, TINY } from './helpers.js';

t.test('the named series count requests, errors, draws, batches and workers', async (t) => {
  const app = await startApp({ workers: 2 });
  t.teardown(() => app.close());
  t.ok(app.metricsServer, 'a metrics server exists');
  const golden = await goldenOf(TINY);
  const b64 = (await readFile(path.join(TINY, golden[0].file))).toString('base64');
  for (let i = 0; i < 5; i++) {
    const res = await app.server.inject({ method: 'POST', url: '/classify', payload: { images: [b64, b64, b64] } });
    t.equal(res.statusCode, 200);
  }
  const infer = { inputs: [{ name: 'input', shape: [2, 1, 28, 28], datatype: 'FP32', data: [...golden[0].input, ...golden[1].input] }] };
  for (let i = 0; i < 2; i++) t.equal((await app.server.inject({ method: 'POST', url: '/v2/models/tiny-ensemble/infer', payload: infer })).statusCode, 200);
  t.equal((await app.server.inject({ method: 'POST', url: '/classify?topK=11', payload: { images: [b64] } })).statusCode, 400);
  t.equal((await app.server.inject({ url: '/no/such/route' })).statusCode, 404);

  const res = await app.metricsServer!.inject({ url: '/metrics' });
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /^text\/plain/);
  const m = parseMetrics(res.body);
  t.equal(sample(m, 'redserve_http_requests_total', { route: '/classify', status: '200', method: 'POST' }), 5);
  t.equal(sample(m, 'redserve_http_requests_total', { route: '/v2/models/:name/infer', status: '200' }), 2);
  t.equal(sample(m, 'redserve_http_requests_total', { route: '/classify', status: '400' }), 1);
  t.equal(sample(m, 'redserve_http_errors_total', { route: '/classify', status: '400', code: 'bad_top_k' }), 1);
  t.equal(sample(m, 'redserve_http_errors_total', { route: 'unmatched', status: '404', code: 'not_found' }), 1);
  t.equal(sample(m, 'redserve_http_request_duration_seconds_count', { route: '/classify' }), 6);
  const images = 5 * 3 + 2 * 2;
  t.equal(sample(m, 'redserve_member_draws_total'), images, 'one draw per image');
  t.equal(sample(m, 'redserve_inference_batch_images_sum'), images, 'every image ran once');
  t.ok(sample(m, 'redserve_inference_batch_images_count') >= 7, 'member runs counted');
  t.ok(sample(m, 'redserve_inference_batch_requests_count') >= 7);
  t.ok(sample(m, 'redserve_inference_queue_seconds_count') >= 7, 'queue waits observed');
  t.ok(sample(m, 'redserve_inference_compute_seconds_sum') > 0, 'compute time observed');
  t.ok(sample(m, 'redserve_worker_busy_seconds_total') >= sample(m, 'redserve_inference_compute_seconds_sum') * 0.99,
    'busy time includes compute');
  t.equal(sample(m, 'redserve_workers'), 2);
  t.equal(sample(m, 'redserve_workers_busy'), 0);
  t.equal(sample(m, 'redserve_inference_queue_jobs'), 0);
  t.equal(sample(m, 'redserve_ready'), 1);
  t.equal(sample(m, 'redserve_worker_restarts_total'), 0);
  t.ok(m.has('process_cpu_user_seconds_total'), 'process metrics');
  t.ok([...m.keys()].some((k) => k.startsWith('nodejs_eventloop_lag')), 'event loop metrics');

  t.equal((await app.server.inject({ url: '/metrics' })).statusCode, 404, 'not on the public port (draw counts are a side channel)');
});

t.test('--metrics-port off: no metrics server', async (t) => {
  const app = await startApp({ metricsPort: null });
  t.teardown(() => app.close());
  t.equal(app.metricsServer, null);
});
