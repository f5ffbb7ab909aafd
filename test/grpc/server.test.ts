/**
 * The gRPC server against the tiny fixture package: each RPC, FP32 input as raw bytes and as typed
 * contents, errors and their status codes (the REST message text), retry info on overload, API
 * keys in metadata, per-image draws, limits, deadlines, readiness and draining.
 */
import { createHash } from 'node:crypto';
import { Metadata } from '@grpc/grpc-js';
import { loadSync, type MessageTypeDefinition } from '@grpc/proto-loader';
import t from 'tap';
import { buildApp, createServer, servingParts } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { repositoryBackend } from '../../src/grpc/repository-backend.js';
import { LOAD_OPTIONS, STATUS_PROTO } from '../../src/grpc/proto.js';
import { GrpcServer, peerAddress } from '../../src/grpc/server.js';
import { ERROR_DOMAIN, RETRY_PUSHBACK, STATUS_DETAILS } from '../../src/grpc/status.js';
import { unstartedRepository } from '../../src/repository.js';
import { CHI2_CRIT_0_001, chiSquare, embeddedConfig, goldenOf, manifestOf, softmax, TINY } from '../helpers.js';
import { f32Bytes, fromF32Bytes, startGrpc, TestClient, type Failure } from './client.js';

const manifest = await manifestOf(TINY);
const golden = await goldenOf(TINY);
const memberProbs = golden[0].logits.map(softmax);
const NAME = manifest.name;
const image: number[] = [...golden[0].input];

const rawRequest = (images: number[][], extra: object = {}) => ({
  model_name: NAME, inputs: [{ name: 'input', datatype: 'FP32', shape: [images.length, 1, 28, 28] }],
  raw_input_contents: [f32Bytes(images.flat())], ...extra,
});
const typedRequest = (images: number[][], extra: object = {}) => ({
  model_name: NAME, inputs: [{ name: 'input', datatype: 'FP32', shape: [images.length, 1, 28, 28], contents: { fp32_contents: images.flat() } }], ...extra,
});

const rpcMessages = loadSync(STATUS_PROTO, LOAD_OPTIONS);
const decode = (name: string, b: Buffer) => (rpcMessages[`google.rpc.${name}`] as MessageTypeDefinition<object, any>).deserialize(b);
/** google.rpc.Status from the trailers: its ErrorInfo reason and RetryInfo delay (seconds). */
function richStatus(f: Failure): { code: number; reason: string; domain: string; retrySeconds: number | null } {
  const status = decode('Status', f.status.metadata.get(STATUS_DETAILS)[0] as Buffer);
  const info = status.details.find((d: any) => d.type_url.endsWith('ErrorInfo'));
  const retry = status.details.find((d: any) => d.type_url.endsWith('RetryInfo'));
  const error = decode('ErrorInfo', info.value);
  return { code: status.code, reason: error.reason, domain: error.domain, retrySeconds: retry ? decode('RetryInfo', retry.value).retry_delay.seconds : null };
}

const near = (a: ArrayLike<number>, b: ArrayLike<number>, atol: number) => a.length === b.length && Array.from(a).every((v, i) => Math.abs(v - b[i]) <= atol);

t.test('--grpc-port: off by default, a port when given, bound on --host', async (t) => {
  t.equal(loadConfig([], {}).grpcPort, null);
  t.equal(loadConfig(['--grpc-port', '8081'], {}).grpcPort, 8081);
  t.equal(loadConfig([], { REDSERVE_GRPC_PORT: '9001' }).grpcPort, 9001);
  t.equal(loadConfig(['--grpc-port', 'off'], { REDSERVE_GRPC_PORT: '9001' }).grpcPort, null, 'the flag wins');
  t.throws(() => loadConfig(['--grpc-port', '70000'], {}), /--grpc-port: 70000 is out of range \[0, 65535\]/);
  const off = buildApp(embeddedConfig({ modelDir: TINY }));
  t.equal(off.grpcServer, null, 'no gRPC server when off');
  await off.modelReady;
  await off.close();
  t.equal(peerAddress('10.1.2.3:5000'), '10.1.2.3');
  t.equal(peerAddress('::ffff:127.0.0.1:443'), '::ffff:127.0.0.1');
});

t.test('metadata and readiness RPCs', async (t) => {
  const { app, client } = await startGrpc();
  t.teardown(async () => { client.close(); await app.close(); });
  t.same((await client.ok('ServerLive', {})).response, { live: true });
  t.same((await client.ok('ServerReady', {})).response, { ready: true });
  t.same((await client.ok('ServerMetadata', {})).response, { name: 'redserve', version: '0.1.0', extensions: ['classification'] });
  const meta = (await client.ok('ModelMetadata', { name: NAME })).response;
  t.same(meta, {
    name: NAME, versions: [manifest.version], platform: 'redserve',
    inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, 1, 28, 28] }], outputs: [{ name: 'probabilities', datatype: 'FP32', shape: [-1, 10] }],
  });
  t.same((await client.ok('ModelMetadata', { name: NAME, version: manifest.version })).response, meta, 'with its version');
  t.same((await client.ok('ModelReady', { name: NAME })).response, { ready: true });
  const unknown = await client.fails('ModelReady', { name: 'nope' });
  t.same([unknown.error.code, unknown.error.details], [5, `unknown model 'nope'; this server serves '${NAME}'`], 'NOT_FOUND, REST\'s message');
  t.equal((await client.fails('ModelMetadata', { name: NAME, version: '7' })).error.code, 5, 'unknown version: NOT_FOUND');
});

t.test('FP32 as raw bytes and as typed contents: member 0\'s softmax (fixed:0), raw outputs', async (t) => {
  const { app, client } = await startGrpc({ sampling: { mode: 'fixed', member: 0 }, workers: 1 });
  t.teardown(async () => { client.close(); await app.close(); });
  for (const [form, request] of [['raw_input_contents', rawRequest([image, image], { id: 'g-1' })], ['fp32_contents', typedRequest([image, image], { id: 'g-1' })]] as const) {
    const res = (await client.ok('ModelInfer', request)).response;
    t.same([res.model_name, res.model_version, res.id], [NAME, manifest.version, 'g-1'], `${form}: model and id`);
    t.same(res.outputs.map((o: any) => [o.name, o.datatype, o.shape, o.contents]), [['probabilities', 'FP32', [2, 10], null]], `${form}: output`);
    t.equal(res.raw_output_contents.length, 1, `${form}: one raw output`);
    const probs = fromF32Bytes(res.raw_output_contents[0]);
    t.ok(near(probs.slice(0, 10), memberProbs[0], 1e-5) && near(probs.slice(10), memberProbs[0], 1e-5), `${form}: within 1e-5`);
  }
  const top = (await client.ok('ModelInfer', rawRequest([image], { outputs: [{ name: 'probabilities', parameters: { classification: { int64_param: 2 } } }] }))).response;
  t.same(top.outputs[0].shape, [1, 2]);
  t.equal(top.outputs[0].datatype, 'BYTES');
  const best = memberProbs[0].indexOf(Math.max(...memberProbs[0]));
  t.match(top.raw_output_contents[0].subarray(4).toString(), new RegExp(`^[0-9.]+:${best}:${manifest.labels[best]}`), 'BYTES: length-prefixed "p:index:label"');
});

t.test('errors: INVALID_ARGUMENT with the message REST gives, NOT_FOUND, UNIMPLEMENTED for other RPCs', async (t) => {
  const { app, client } = await startGrpc({ maxImagesPerRequest: 2 });
  t.teardown(async () => { client.close(); await app.close(); });
  const rest = async (body: object) => (await app.server.inject({ method: 'POST', url: `/v2/models/${NAME}/infer`, payload: body })).json().error;
  const bad = async (request: object, pattern: RegExp, label: string) => {
    const f = await client.fails('ModelInfer', request);
    t.equal(f.error.code, 3, `${label}: INVALID_ARGUMENT`);
    t.match(f.error.details, pattern, `${label}: ${f.error.details}`);
    const rich = richStatus(f);
    t.same([rich.code, rich.domain, rich.retrySeconds], [3, ERROR_DOMAIN, null], `${label}: google.rpc.Status, no retry`);
    return f;
  };
  const shape = { model_name: NAME, inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 1, 14, 14] }], raw_input_contents: [f32Bytes(new Array(196).fill(0))] };
  const f = await bad(shape, /^inputs\[0\]\.shape: \[1,1,14,14\] does not match/, 'bad shape');
  t.equal(f.error.details, await rest({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 1, 14, 14], data: new Array(196).fill(0) }] }), 'the REST message, word for word');
  t.equal(richStatus(f).reason, 'bad_tensor');
  await bad({ ...typedRequest([image]), inputs: [{ ...typedRequest([image]).inputs[0], datatype: 'FP64' }] }, /'FP64' is not accepted; 'input' is FP32/, 'wrong datatype');
  await bad({ ...typedRequest([image]), inputs: [{ ...typedRequest([image]).inputs[0], name: 'x' }] }, /'x' is not an input of this model/, 'wrong input name');
  const three = await bad(rawRequest([image, image, image]), /batch 3 is out of range \[1, 2\]/, 'too many images');
  t.equal(richStatus(three).reason, 'too_many_images');
  const nan = [...image];
  nan[5] = Number.NaN;
  await bad(typedRequest([nan]), /^inputs\[0\]: element 5 is NaN; every element must be a finite number$/, 'NaN in fp32_contents');
  const inf = [...image];
  inf[7] = Number.POSITIVE_INFINITY;
  await bad(rawRequest([inf]), /element 7 is Infinity/, 'Infinity in raw bytes');
  const high = [...image];
  high[9] = 5;
  await bad(rawRequest([high]), /element 9/, 'out of the input range');
  await bad({ ...rawRequest([image]), raw_input_contents: [f32Bytes(image).subarray(4)] }, /^raw_input_contents\[0\]: 3132 bytes; the shape \[1,1,28,28\] of FP32 needs 3136$/, 'raw size');
  await bad(typedRequest([image.slice(1)]), /^inputs\[0\]\.contents\.fp32_contents: 783 elements; the shape \[1,1,28,28\] holds 784$/, 'typed count');
  await bad({ ...rawRequest([image]), raw_input_contents: [f32Bytes(image), f32Bytes(image)] }, /raw_input_contents: 2 entries for 1 inputs/, 'raw entries');
  await bad({ ...typedRequest([image]), raw_input_contents: [f32Bytes(image)] }, /set together with raw_input_contents/, 'both forms');
  await bad({ model_name: NAME }, /inputs: expected exactly one input tensor/, 'no input');
  await bad(rawRequest([image], { outputs: [{ name: 'logits', parameters: {} }] }), /'logits' is not an output of this model/, 'unknown output');
  await bad(rawRequest([image], { outputs: [{ name: 'probabilities', parameters: { classification: { int64_param: 11 } } }] }), /classification: 11 is out of range \[0, 10\]/, 'classification k');
  const unknown = await client.fails('ModelInfer', { ...rawRequest([image]), model_name: 'nope' });
  t.same([unknown.error.code, richStatus(unknown).reason], [5, 'unknown_model']);
  const other = await new Promise<any>((resolve) => (client.client as any).makeUnaryRequest('/inference.GRPCInferenceService/ModelConfig',
    (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), (err: any) => resolve(err)));
  t.equal(other.code, 12, 'ModelConfig: UNIMPLEMENTED');
});

t.test('a message over --max-body-bytes is refused by grpc-js as it arrives (RESOURCE_EXHAUSTED, no retry info)', async (t) => {
  const { app, client } = await startGrpc({ maxBodyBytes: 4096 });
  t.teardown(async () => { client.close(); await app.close(); });
  t.ok((await client.call('ModelInfer', rawRequest([image]))).status.code === 0, 'one image (3.2 KB) fits');
  const f = await client.fails('ModelInfer', rawRequest([image, image]));
  t.equal(f.error.code, 8);
  t.match(f.error.details, /larger than max \(\d+ vs 4096\)/);
  t.equal(f.status.metadata.get(RETRY_PUSHBACK).length, 0, 'no pushback: resending the same message cannot succeed');
});

t.test('overload: RESOURCE_EXHAUSTED with grpc-retry-pushback-ms and google.rpc.RetryInfo; one limit for both APIs', async (t) => {
  const { app, client } = await startGrpc({ workers: 1, maxQueue: 1 });
  t.teardown(async () => { client.close(); await app.close(); });
  const results = await Promise.all(Array.from({ length: 12 }, () => client.call('ModelInfer', rawRequest([image, image]))));
  const refused = results.filter((r): r is Failure => 'error' in r);
  t.ok(refused.length > 0 && refused.length < 12, `${refused.length} of 12 refused`);
  for (const f of refused) {
    t.equal(f.error.code, 8, 'RESOURCE_EXHAUSTED');
    t.match(f.error.details, /inference requests in flight \(the limit is 1\)|inference queue is full/);
    t.equal(f.status.metadata.get(RETRY_PUSHBACK)[0], '1000');
    t.same(richStatus(f), { code: 8, reason: 'overloaded', domain: ERROR_DOMAIN, retrySeconds: 1 });
  }
  // A REST request holding the one slot refuses gRPC calls too.
  const rest = app.server.inject({ method: 'POST', url: `/v2/models/${NAME}/infer`, payload: { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 1, 28, 28], data: image }] } });
  const during = await client.call('ModelInfer', rawRequest([image]));
  t.equal((await rest).statusCode, 200);
  t.ok('error' in during && during.error.code === 8, 'the REST request\'s slot counts for gRPC');
  t.equal(app.server.inflightRequests(), 0, 'every slot released');
  t.equal((await client.call('ModelInfer', rawRequest([image]))).status.code, 0, 'served again');
});

t.test('API keys in metadata, like REST headers; probes need none', async (t) => {
  const key = 'grpc-test-key-0123456789';
  const { app, client } = await startGrpc({ apiKeySha256: [createHash('sha256').update(key).digest('hex')] });
  t.teardown(async () => { client.close(); await app.close(); });
  t.equal((await client.call('ServerLive', {})).status.code, 0, 'ServerLive: public');
  t.equal((await client.call('ServerReady', {})).status.code, 0, 'ServerReady: public');
  const none = await client.fails('ModelInfer', rawRequest([image]));
  t.same([none.error.code, none.error.details], [16, 'an API key is required: send Authorization: Bearer <key> or X-API-Key: <key>'], 'UNAUTHENTICATED');
  t.equal(richStatus(none).reason, 'unauthorized');
  t.equal((await client.fails('ModelMetadata', { name: NAME }, { 'x-api-key': 'wrong-key-0123456789' })).error.details, 'the API key is not valid');
  t.equal((await client.fails('ServerMetadata', {})).error.code, 16, 'ServerMetadata needs the key');
  t.equal((await client.call('ModelInfer', rawRequest([image]), { authorization: `Bearer ${key}` })).status.code, 0, 'Bearer');
  t.equal((await client.call('ModelInfer', rawRequest([image]), { 'x-api-key': key })).status.code, 0, 'x-api-key');
});

t.test('one client, one rate limit and one detection history across REST and gRPC', async (t) => {
  const { app, client } = await startGrpc({
    rateLimit: { perSecond: 0.01, burst: 3 }, detect: { ...loadConfig([], {}).detect, mode: 'reject', repeats: 1 },
  });
  t.teardown(async () => { client.close(); await app.close(); });
  const rest = await app.server.inject({ method: 'POST', url: `/v2/models/${NAME}/infer`, payload: { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 1, 28, 28], data: image }] } });
  t.equal(rest.statusCode, 200, 'REST from 127.0.0.1');
  t.equal((await client.call('ModelInfer', rawRequest([image]))).status.code, 0, 'gRPC from 127.0.0.1: the one repeat allowed');
  const repeated = await client.fails('ModelInfer', rawRequest([image]));
  t.same([repeated.error.code, richStatus(repeated).reason], [8, 'query_attack_suspected'], 'the REST query counts in the gRPC caller\'s history');
  const limited = await client.fails('ModelInfer', rawRequest([image]));
  t.same([limited.error.code, richStatus(limited).reason], [8, 'rate_limited'], 'the REST request took a token of the same bucket');
  t.match(limited.error.details, /rate limit of 0.01 requests\/s \(burst 3\) per client exceeded/);
});

t.test('random sampling: each image of a batch draws its own member, uniformly; nothing tells which', async (t) => {
  const { app, client } = await startGrpc({ sampling: { mode: 'random' } });
  t.teardown(async () => { client.close(); await app.close(); });
  const counts = new Array(memberProbs.length).fill(0);
  const seen = new Set<string>();
  for (let r = 0; r < 30; r++) {
    const answer = await client.ok('ModelInfer', rawRequest(Array(16).fill(image)));
    const probs = fromF32Bytes(answer.response.raw_output_contents[0]);
    for (let i = 0; i < 16; i++) {
      const row = probs.slice(i * 10, i * 10 + 10);
      const hits = memberProbs.map((p, m) => [m, near(p, row, 1e-4)] as const).filter(([, hit]) => hit);
      t.equal(hits.length, 1, 'each row is exactly one member\'s softmax');
      counts[hits[0][0]]++;
    }
    const { raw_output_contents: _, ...rest } = answer.response;
    seen.add(JSON.stringify([rest, answer.headers.getMap(), answer.status.metadata.getMap()].map((m) => { const { date: _d, ...k } = m as any; return k; })));
  }
  const stat = chiSquare(counts);
  t.ok(stat < CHI2_CRIT_0_001[counts.length - 1], `chi2 = ${stat.toFixed(2)} (counts ${counts})`);
  t.equal(seen.size, 1, 'the response fields, headers and trailers are the same whichever members answered');
});

t.test('query detection in reject mode: RESOURCE_EXHAUSTED with the cool-down as retry info', async (t) => {
  const { app, client } = await startGrpc({ detect: { ...loadConfig([], {}).detect, mode: 'reject', repeats: 1 } });
  t.teardown(async () => { client.close(); await app.close(); });
  t.equal((await client.call('ModelInfer', rawRequest([image]))).status.code, 0);
  t.equal((await client.call('ModelInfer', rawRequest([image]))).status.code, 0, 'one repeat allowed');
  const f = await client.fails('ModelInfer', rawRequest([image]));
  t.equal(f.error.code, 8);
  t.match(f.error.details, /too similar to its earlier ones/);
  const rich = richStatus(f);
  t.equal(rich.reason, 'query_attack_suspected');
  t.ok(rich.retrySeconds! > 0 && f.status.metadata.get(RETRY_PUSHBACK)[0] === String(rich.retrySeconds! * 1000), 'the cool-down left');
});

t.test('while the model loads, and while draining: UNAVAILABLE with retry info; ServerReady false', async (t) => {
  const config = embeddedConfig({ modelDir: TINY, grpcPort: 0 });
  const repository = unstartedRepository(config);
  const parts = servingParts(config, repository);
  const server = createServer(config, repository, { logger: false, parts });
  const grpc = new GrpcServer(repositoryBackend({ repository, ...parts, maxImagesPerRequest: 64, log: server.log }),
    { host: '127.0.0.1', port: 0, maxMessageBytes: config.maxBodyBytes }, { log: server.log, metrics: null });
  const client = new TestClient(await grpc.listen());
  t.teardown(async () => { client.close(); await grpc.close(); await server.close(); });
  t.same((await client.ok('ServerLive', {})).response, { live: true });
  t.same((await client.ok('ServerReady', {})).response, { ready: false });
  for (const rpc of ['ModelInfer', 'ModelMetadata', 'ModelReady']) {
    const f = await client.fails(rpc, rpc === 'ModelInfer' ? rawRequest([image]) : { name: NAME });
    t.same([f.error.code, f.error.details, richStatus(f).retrySeconds], [14, 'the model is still loading', 1], `${rpc}: UNAVAILABLE`);
  }
});

t.test('deadlines: an expired call is DEADLINE_EXCEEDED and frees its slot; close drains calls in flight', async (t) => {
  const { app, client } = await startGrpc({ workers: 1 });
  const late = await client.call('ModelInfer', rawRequest(Array(64).fill(image)), {}, { deadlineMs: 1 });
  t.ok('error' in late && late.error.code === 4, 'DEADLINE_EXCEEDED');
  await new Promise((r) => setTimeout(r, 200));
  t.equal(app.server.inflightRequests(), 0, 'the slot is released');
  const inflight = client.call('ModelInfer', rawRequest(Array(64).fill(image)));
  while (app.server.inflightRequests() === 0) await new Promise((r) => setImmediate(r));
  const closing = app.close();
  const answered = await inflight;
  await closing;
  t.equal(answered.status.code, 0, 'the call in flight when close began was answered');
  const after = await client.call('ServerLive', {}, {}, { deadlineMs: 2000 });
  t.equal(after.status.code, 14, 'after close: UNAVAILABLE (nothing listens)');
  client.close();
});

t.test('the detection notice of log mode rides in initial metadata', async (t) => {
  const { app, client } = await startGrpc({ detect: { ...loadConfig([], {}).detect, mode: 'log', header: true, repeats: 0 } });
  t.teardown(async () => { client.close(); await app.close(); });
  await client.ok('ModelInfer', rawRequest([image]));
  const flagged = await client.ok('ModelInfer', rawRequest([image]));
  t.match(String(flagged.headers.get('x-redserve-detection')[0]), /^flagged; reason=repeated_input/);
  t.ok(flagged.headers instanceof Metadata);
});
