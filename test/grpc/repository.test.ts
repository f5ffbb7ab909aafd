/**
 * gRPC over a --model-repository: the RPCs reach every model by name and version, as REST v2's
 * routes do; a call holds its model (an unload waits for it); and every call is counted where REST
 * requests are: the request counter (route grpc:<method>), the per-model counters and the
 * statistics extension.
 */
import { rm } from 'node:fs/promises';
import t, { type Test } from 'tap';
import { goldenOf, makeRepository, manifestOf, parseMetrics, sample, softmax, TINY_SINGLE } from '../helpers.js';
import { f32Bytes, fromF32Bytes, startGrpc, type TestClient } from './client.js';
import type { App } from '../../src/app.js';

const single = (await goldenOf(TINY_SINGLE))[0];
const singleProbs = softmax(single.logits[0]);
const labels = (await manifestOf(TINY_SINGLE)).labels;

const inferOn = (model: string, images = 1, version = '') => ({
  model_name: model, model_version: version, inputs: [{ name: 'input', datatype: 'FP32', shape: [images, 1, 28, 28] }],
  raw_input_contents: [f32Bytes(Array.from({ length: images }, () => single.input).flat())],
});

async function serve(t: Test): Promise<{ app: App; client: TestClient }> {
  const root = await makeRepository();
  const { app, client } = await startGrpc({ modelRepository: root, modelControl: 'explicit', workers: 1, sampling: { mode: 'fixed', member: 0 } });
  t.teardown(async () => { client.close(); await app.close(); await rm(root, { recursive: true }); });
  return { app, client };
}

const metricsOf = async (app: App) => parseMetrics(await app.metrics.registry.metrics());

t.test('ModelInfer, ModelMetadata and ModelReady reach every model of the repository, by version', async (t) => {
  const { client } = await serve(t);
  const res = (await client.ok('ModelInfer', inferOn('tiny-single', 2))).response;
  t.same([res.model_name, res.model_version], ['tiny-single', '1.0.0'], 'the second model answers');
  const probs = fromF32Bytes(res.raw_output_contents[0]);
  t.ok([0, 1].every((i) => probs.slice(i * 10, i * 10 + 10).every((p, k) => Math.abs(p - singleProbs[k]) <= 1e-5)),
    "each row is tiny-single's softmax within 1e-5");
  const versioned = (await client.ok('ModelInfer', inferOn('tiny-ensemble', 1, '1.0.0'))).response;
  t.same([versioned.model_name, versioned.model_version], ['tiny-ensemble', '1.0.0'], 'a versioned folder, by its version');

  const wrong = await client.fails('ModelInfer', inferOn('tiny-ensemble', 1, '9'));
  t.same([wrong.error.code, wrong.error.details], [5, "model 'tiny-ensemble' has no version '9'; it serves version '1.0.0'"], 'NOT_FOUND, the repository\'s message');
  const unknown = await client.fails('ModelInfer', inferOn('nope'));
  t.same([unknown.error.code, unknown.error.details], [5, "unknown model 'nope'; this server serves 'tiny-ensemble', 'tiny-single'"]);

  t.same((await client.ok('ModelMetadata', { name: 'tiny-single', version: '1.0.0' })).response, {
    name: 'tiny-single', versions: ['1.0.0'], platform: 'redserve',
    inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, 1, 28, 28] }], outputs: [{ name: 'probabilities', datatype: 'FP32', shape: [-1, labels.length] }],
  });
  t.same((await client.ok('ModelReady', { name: 'tiny-single' })).response, { ready: true });
  t.equal((await client.fails('ModelReady', { name: 'tiny-single', version: '2' })).error.code, 5, 'unknown version: NOT_FOUND');
});

t.test('unload: the calls in flight are answered by the model they hold; later ones get NOT_FOUND', async (t) => {
  const { app, client } = await serve(t);
  const inflight = Array.from({ length: 8 }, () => client.call('ModelInfer', inferOn('tiny-single', 16)));
  while (app.server.inflightRequests() === 0) await new Promise((r) => setImmediate(r));
  const admitted = app.server.inflightRequests();
  const unload = await app.server.inject({ method: 'POST', url: '/v2/repository/models/tiny-single/unload', payload: {} });
  t.equal(unload.statusCode, 200);
  const codes = (await Promise.all(inflight)).map((r) => r.status.code);
  t.ok(codes.filter((c) => c === 0).length >= admitted, `the ${admitted} admitted before the unload are answered (${codes})`);
  t.ok(codes.every((c) => c === 0 || c === 5), 'the others get NOT_FOUND, none UNAVAILABLE or INTERNAL');
  const after = await client.fails('ModelInfer', inferOn('tiny-single'));
  t.same([after.error.code, after.error.details], [5, "model 'tiny-single' is not served here: unloaded"]);
  t.same((await client.ok('ServerReady', {})).response, { ready: true }, 'an unloaded model does not take the server out of rotation');
});

t.test('every call is counted: grpc:<method> in the request counter, per model, and in the statistics extension', async (t) => {
  const { app, client } = await serve(t);
  const stats = async () => (await app.server.inject({ url: '/v2/models/tiny-single/stats' })).json().model_stats[0];
  const before = await stats();
  for (let i = 0; i < 3; i++) await client.ok('ModelInfer', inferOn('tiny-single', 2));
  await client.fails('ModelInfer', { ...inferOn('tiny-single'), inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 1, 28, 28] }] });
  await client.fails('ModelInfer', inferOn('nope'));
  await client.ok('ModelMetadata', { name: 'tiny-single' });
  await client.ok('ServerLive', {});

  const m = await metricsOf(app);
  t.equal(sample(m, 'redserve_model_requests_total', { model: 'tiny-single', status: '200' }), 3, 'redserve_model_requests_total: the answered calls');
  t.equal(sample(m, 'redserve_model_requests_total', { model: 'tiny-single', status: '400' }), 1, 'and the refused one, with its HTTP status');
  t.equal(sample(m, 'redserve_inference_images_total', { model: 'tiny-single' }), 6, 'images answered');
  t.equal(sample(m, 'redserve_http_requests_total', { method: 'POST', route: 'grpc:ModelInfer', status: '200' }), 3);
  t.equal(sample(m, 'redserve_http_requests_total', { route: 'grpc:ModelInfer', status: '404' }), 1, 'an unknown model: 404, no model label');
  t.equal(sample(m, 'redserve_http_errors_total', { route: 'grpc:ModelInfer', status: '404', code: 'unknown_model' }), 1);
  t.equal(sample(m, 'redserve_http_requests_total', { route: 'grpc:ModelMetadata', status: '200' }), 1);
  t.equal(sample(m, 'redserve_http_requests_total', { route: 'grpc:ServerLive', status: '200' }), 1);
  t.ok(sample(m, 'redserve_model_request_seconds_total', { model: 'tiny-single' }) > 0, 'seconds, per model');

  const after = await stats();
  t.equal(after.execution_count - before.execution_count, 3, 'statistics: execution_count counts gRPC calls');
  t.equal(after.inference_count - before.inference_count, 6, 'statistics: inference_count counts their images');
  t.equal(after.inference_stats.fail.count - before.inference_stats.fail.count, 2, 'statistics: the failed calls');
});
