/**
 * The Open Inference Protocol (v2) routes. First, the exchanges recorded between redserve and
 * Triton's own HTTP client (test/fixtures/v2/record.py) and KServe's Python SDK
 * (record_kserve.py) are replayed; at recording time the clients parsed every answer. Then the
 * protocol's JSON forms, the errors, and random sampling.
 */
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { createServer } from '../../src/app.js';
import { unstartedRepository } from '../../src/repository.js';
import { CHI2_CRIT_0_001, chiSquare, FIXTURES, goldenOf, manifestOf, softmax, startApp, embeddedConfig, TINY } from '../helpers.js';

interface Recorded {
  name: string;
  request: { method: 'GET' | 'POST'; path: string; headers: Record<string, string>; text?: string; binary_base64?: string };
  response: { status: number; headers: Record<string, string>; text?: string; binary_base64?: string };
}

/** A recording; `repository` (folder in the repository -> fixture package) when it was made on a --model-repository server. */
interface Recording { file: string; recorded_with: string; repository?: Record<string, string>; exchanges: Recorded[] }
const recordings = await Promise.all(['tritonclient-http.json', 'kserve-rest.json', 'tritonclient-repository.json'].map(async (file) =>
  ({ file, ...JSON.parse(await readFile(path.join(FIXTURES, 'v2', file), 'utf8')) }) as Recording));

/** The server a recording was made on: tiny-ensemble alone, or the repository it names, built from the fixtures. */
async function serverOf(t: Test, recording: Recording) {
  const sampling = { mode: 'fixed', member: 0 } as const;
  if (!recording.repository) return startApp({ sampling, workers: 1 });
  const root = await mkdtemp(path.join(os.tmpdir(), 'redserve-replay-'));
  t.teardown(() => rm(root, { recursive: true }));
  for (const [folder, fixture] of Object.entries(recording.repository)) {
    await cp(path.join(FIXTURES, fixture), path.join(root, folder), { recursive: true });
  }
  return startApp({ sampling, workers: 1, modelRepository: root, modelControl: 'explicit' });
}
const manifest = await manifestOf(TINY);
const golden = await goldenOf(TINY);
const memberProbs = golden[0].logits.map(softmax);
const NAME = manifest.name;
const INFER = `/v2/models/${NAME}/infer`;

/** Compare JSON values; numbers within atol. */
function near(t: Test, actual: unknown, expected: unknown, atol: number, where: string): void {
  if (typeof expected === 'number') {
    t.ok(typeof actual === 'number' && Math.abs(actual - expected) <= atol, `${where}: ${actual} vs ${expected}`);
  } else if (Array.isArray(expected)) {
    t.ok(Array.isArray(actual) && actual.length === expected.length, `${where}: array of ${expected.length}`);
    if (!Array.isArray(actual)) return;
    const bad = expected.findIndex((e, i) => typeof e === 'number' ? Math.abs((actual[i] as number) - e) > atol : false);
    t.equal(bad, -1, `${where}: numbers within ${atol}`);
    expected.forEach((e, i) => { if (typeof e !== 'number') near(t, actual[i], e, atol, `${where}[${i}]`); });
  } else if (expected && typeof expected === 'object') {
    t.same(Object.keys(actual as object).sort(), Object.keys(expected).sort(), `${where}: keys`);
    for (const [k, v] of Object.entries(expected)) near(t, (actual as Record<string, unknown>)[k], v, atol, `${where}.${k}`);
  } else {
    t.equal(actual, expected, where);
  }
}

/** BYTES tensor in binary form -> strings. */
function readBytesTensor(buf: Buffer): string[] {
  const out: string[] = [];
  for (let at = 0; at < buf.length;) {
    const n = buf.readUInt32LE(at);
    out.push(buf.subarray(at + 4, at + 4 + n).toString('utf8'));
    at += 4 + n;
  }
  return out;
}

function splitBody(headers: Record<string, unknown>, body: Buffer): { json: any; binary: Buffer | null } {
  const raw = headers['inference-header-content-length'];
  if (raw === undefined) return { json: body.length ? JSON.parse(body.toString('utf8')) : null, binary: null };
  const n = Number(raw);
  return { json: JSON.parse(body.subarray(0, n).toString('utf8')), binary: body.subarray(n) };
}

/** Same keys, recursively, and the same JSON types: for answers whose values depend on traffic. */
function sameShape(t: Test, actual: unknown, expected: unknown, where: string): void {
  if (Array.isArray(expected)) {
    t.ok(Array.isArray(actual), `${where}: an array`);
    expected.forEach((e, i) => sameShape(t, (actual as unknown[])[i], e, `${where}[${i}]`));
  } else if (expected && typeof expected === 'object') {
    t.same(Object.keys(actual as object).sort(), Object.keys(expected).sort(), `${where}: keys`);
    for (const [k, v] of Object.entries(expected)) sameShape(t, (actual as Record<string, unknown>)[k], v, `${where}.${k}`);
  } else {
    t.equal(typeof actual, typeof expected, `${where}: ${typeof expected}`);
  }
}

for (const recording of recordings) {
t.test(`exchanges recorded with ${recording.recorded_with} replay exactly (fixed:0, tolerance 1e-6)`, async (t) => {
  const app = await serverOf(t, recording);
  t.teardown(() => app.close());
  t.ok(recording.exchanges.length >= 8, `${recording.file}: ${recording.exchanges.length} exchanges`);
  for (const ex of recording.exchanges) {
    await t.test(ex.name, async (t) => {
      const { request, response } = ex;
      const payload = request.text === undefined ? undefined
        : Buffer.concat([Buffer.from(request.text, 'utf8'), Buffer.from(request.binary_base64 ?? '', 'base64')]);
      const res = await app.server.inject({ method: request.method, url: request.path, headers: request.headers, payload });
      t.equal(res.statusCode, response.status, 'status');
      for (const h of ['content-type', 'inference-header-content-length']) {
        t.equal(res.headers[h] === undefined ? undefined : String(res.headers[h]), response.headers[h], `header ${h}`);
      }
      const { json, binary } = splitBody(res.headers, res.rawPayload);
      if (response.text === undefined) {
        t.equal(res.rawPayload.length, 0, 'empty body');
        return;
      }
      // Statistics count this process's traffic: their shape is compared, not their values.
      if (request.path.endsWith('/stats')) return sameShape(t, json, JSON.parse(response.text), 'body');
      near(t, json, JSON.parse(response.text), 1e-6, 'body');
      if (response.binary_base64 === undefined) return;
      const expected = Buffer.from(response.binary_base64, 'base64');
      t.equal(binary?.length, expected.length, 'binary part length');
      const output = (JSON.parse(response.text) as { outputs: { datatype: string }[] }).outputs[0];
      if (output.datatype === 'FP32') {
        const f = (b: Buffer) => Array.from(new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length)));
        near(t, f(binary!), f(expected), 1e-6, 'FP32 binary output');
      } else {
        const parse = (s: string) => { const [p, i, l] = s.split(':'); return { p: Number(p), i: Number(i), l }; };
        near(t, readBytesTensor(binary!).map(parse), readBytesTensor(expected).map(parse), 1e-5, 'classification strings');
      }
    });
  }
});
}

t.test('protocol JSON forms, served by member 0 (fixed:0)', async (t) => {
  const app = await startApp({ sampling: { mode: 'fixed', member: 0 }, workers: 1, maxImagesPerRequest: 4 });
  t.teardown(() => app.close());
  const expected = memberProbs[0];
  const flat = golden[0].input;
  const nested = [[Array.from({ length: 28 }, (_, y) => flat.slice(y * 28, y * 28 + 28))]];

  for (const [label, data] of [['flat data', flat], ['nested row-major data', nested]] as const) {
    const res = await app.server.inject({
      method: 'POST', url: INFER,
      payload: { id: 'req-1', inputs: [{ name: 'input', shape: [1, 1, 28, 28], datatype: 'FP32', data }] },
    });
    t.equal(res.statusCode, 200, label);
    const body = res.json();
    t.equal(body.model_name, NAME);
    t.equal(body.model_version, manifest.version);
    t.equal(body.id, 'req-1', 'the request id is echoed');
    t.same(body.outputs.map((o: any) => [o.name, o.datatype, o.shape]), [['probabilities', 'FP32', [1, 10]]]);
    near(t, body.outputs[0].data, expected, 1e-5, `${label}: member 0's softmax`);
  }

  // Request-level binary_data_output with JSON input: the output comes back as binary.
  const res = await app.server.inject({
    method: 'POST', url: INFER, headers: { 'content-type': 'application/json' },
    payload: { parameters: { binary_data_output: true }, inputs: [{ name: 'input', shape: [1, 1, 28, 28], datatype: 'FP32', data: flat }] },
  });
  t.equal(res.statusCode, 200);
  const { json, binary } = splitBody(res.headers, res.rawPayload);
  t.same(json.outputs[0].parameters, { binary_data_size: 40 });
  t.notOk('data' in json.outputs[0], 'no JSON data for a binary output');
  near(t, Array.from(new Float32Array(binary!.buffer.slice(binary!.byteOffset, binary!.byteOffset + 40))), expected, 1e-5, 'binary probabilities');

  // Classification as JSON strings.
  const cls = await app.server.inject({
    method: 'POST', url: INFER,
    payload: { inputs: [{ name: 'input', shape: [1, 1, 28, 28], datatype: 'FP32', data: flat }], outputs: [{ name: 'probabilities', parameters: { classification: 2 } }] },
  });
  const out = cls.json().outputs[0];
  t.same([out.datatype, out.shape], ['BYTES', [1, 2]]);
  const best = expected.indexOf(Math.max(...expected));
  t.match(out.data[0], new RegExp(`^0\\.\\d+:${best}:${manifest.labels[best]}$`), 'probability:index:label, most probable first');
});

t.test('bad requests get 4xx { error, code } naming the field; the service keeps serving', async (t) => {
  const app = await startApp({ workers: 1, maxImagesPerRequest: 4 });
  t.teardown(() => app.close());
  const zeros = new Array(784).fill(0);
  const input = (over: Record<string, unknown> = {}) => ({ name: 'input', shape: [1, 1, 28, 28], datatype: 'FP32', data: zeros, ...over });
  const post = (payload: unknown, headers: Record<string, string> = {}, url = INFER) =>
    app.server.inject({ method: 'POST', url, headers: { 'content-type': 'application/json', ...headers }, payload: payload as string });
  const cases: [string, Promise<any>, number, string, RegExp][] = [
    ['no inputs', post({ inputs: [] }), 400, 'bad_request', /inputs/],
    ['two inputs', post({ inputs: [input(), input()] }), 400, 'bad_request', /exactly one input tensor, 'input'/],
    ['wrong input name', post({ inputs: [input({ name: 'x' })] }), 400, 'bad_request', /'x' is not an input of this model; its input is 'input'/],
    ['unknown top-level key', post({ inputs: [input()], extra: 1 }), 400, 'bad_request', /extra|additional/],
    ['FP16', post({ inputs: [input({ datatype: 'FP16' })] }), 400, 'bad_tensor', /'FP16' is not accepted; 'input' is FP32/],
    ['wrong shape', post({ inputs: [input({ shape: [1, 3, 28, 28] })] }), 400, 'bad_tensor', /\[N, 1, 28, 28\] with N in \[1, 4\]/],
    ['too many images', post({ inputs: [input({ shape: [5, 1, 28, 28] })] }), 400, 'too_many_images', /batch 5 is out of range \[1, 4\]/],
    ['too few elements', post({ inputs: [input({ data: zeros.slice(1) })] }), 400, 'bad_tensor', /783 elements, the shape holds 784/],
    ['a string element', post({ inputs: [input({ data: ['a', ...zeros.slice(1)] })] }), 400, 'bad_tensor', /element 0 is "a"/],
    ['too deep', post({ inputs: [input({ data: [[[[[0]]]]] })] }), 400, 'bad_tensor', /nested deeper/],
    // JSON that never reaches the decoder: a key that could poison prototypes, plain or escaped
    // (routes.ts parses bodies without either word or any escape directly, the rest with Fastify's
    // guarded parser), and a body cut short.
    ['a __proto__ key', post('{"inputs":[],"__proto__":{"x":1}}'), 400, 'bad_request', /not valid JSON/],
    ['an escaped __proto__ key', post('{"inputs":[],"\\u005f_proto__":{"x":1}}'), 400, 'bad_request', /not valid JSON/],
    ['constructor.prototype', post('{"inputs":[],"constructor":{"prototype":{"x":1}}}'), 400, 'bad_request', /not valid JSON/],
    ['JSON cut short', post('{"inputs":[{"name":"input"'), 400, 'bad_request', /not valid JSON/],
    ['duplicate output', post({ inputs: [input()], outputs: [{ name: 'probabilities' }, { name: 'probabilities' }] }), 400, 'duplicate_output', /outputs\[1\]\.name: 'probabilities' is requested twice/],
    ['model_name of another model', post({ model_name: 'other', inputs: [input()] }), 400, 'bad_request', /model_name: 'other' is not the model of this path, 'tiny-ensemble'/],
    ['JSON 1e38', post({ inputs: [input({ data: [1e38, ...zeros.slice(1)] })] }), 400, 'tensor_out_of_range', /element 0 \(channel 0\) is 1e\+38; channel 0 of the pre-processed input lies in \[-0\.001, 1\.001\]/],
    ['JSON -1e38', post({ inputs: [input({ data: [...zeros.slice(1), -1e38] })] }), 400, 'tensor_out_of_range', /element 783 \(channel 0\) is -1e\+38/],
    ['JSON 1e39 (finite, Infinity as float32)', post(`{"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"FP32","data":[1e39${',0'.repeat(783)}]}]}`), 400, 'tensor_out_of_range', /is 1e\+39/],
    ['unknown output', post({ inputs: [input()], outputs: [{ name: 'logits' }] }), 400, 'bad_request', /'logits' is not an output of this model; its output is 'probabilities'/],
    ['classification out of range', post({ inputs: [input()], outputs: [{ name: 'probabilities', parameters: { classification: 11 } }] }), 400, 'bad_request', /out of range \[0, 10\]/],
    ['invalid JSON', post('{"inputs": ['), 400, 'bad_request', /not valid JSON/],
    ['empty body', post(''), 400, 'empty_body', /empty/],
    ['compressed body', post({ inputs: [input()] }, { 'content-encoding': 'gzip' }), 415, 'unsupported_media_type', /Content-Encoding 'gzip'/],
    ['unknown model', post({ inputs: [input()] }, {}, '/v2/models/nope/infer'), 404, 'unknown_model', /unknown model 'nope'; this server serves 'tiny-ensemble'/],
    ['unknown version', post({ inputs: [input()] }, {}, `/v2/models/${NAME}/versions/9/infer`), 404, 'unknown_version', /no version '9'/],
  ];
  // Binary extension errors.
  const header = (binarySize: number) => Buffer.from(JSON.stringify({ inputs: [{ name: 'input', shape: [1, 1, 28, 28], datatype: 'FP32', parameters: { binary_data_size: binarySize } }] }));
  const nan = new Float32Array(784);
  nan[5] = Number.NaN;
  const binaryBody = (h: Buffer, bytes: Uint8Array) => Buffer.concat([h, Buffer.from(bytes)]);
  const h = header(3136);
  // The check reads each float's exponent bits: both infinities are refused as well as NaN.
  const infinite = (k: number, v: number) => { const a = new Float32Array(784); a[k] = v; return new Uint8Array(a.buffer); };
  cases.push(
    ['binary NaN', post(binaryBody(h, new Uint8Array(nan.buffer)), { 'inference-header-content-length': String(h.length), 'content-type': 'application/octet-stream' }), 400, 'bad_tensor', /element 5 is NaN/],
    ['binary +Infinity', post(binaryBody(h, infinite(783, Infinity)), { 'inference-header-content-length': String(h.length) }), 400, 'bad_tensor', /element 783 is Infinity/],
    ['binary -Infinity', post(binaryBody(h, infinite(0, -Infinity)), { 'inference-header-content-length': String(h.length) }), 400, 'bad_tensor', /element 0 is -Infinity/],
    ['binary too short', post(binaryBody(h, new Uint8Array(100)), { 'inference-header-content-length': String(h.length) }), 400, 'bad_request', /binary part has 100 bytes; the inputs declare 3136/],
    ['declared size wrong', post(binaryBody(header(8), new Uint8Array(8)), { 'inference-header-content-length': String(header(8).length) }), 400, 'bad_tensor', /8 bytes, the shape needs 3136/],
    ['header length past the body', post(h, { 'inference-header-content-length': '99999' }), 400, 'bad_request', /Inference-Header-Content-Length: '99999' is out of range/],
    ['binary size without binary part', post(h), 400, 'bad_request', /no binary part/],
    ['binary near the float32 maximum', post(binaryBody(h, infinite(7, 3.4028234663852886e38)), { 'inference-header-content-length': String(h.length) }), 400, 'tensor_out_of_range', /inputs\[0\]: element 7 \(channel 0\) is 3\.40282346\d*e\+38/],
    ['binary just past the range', post(binaryBody(h, infinite(9, 1.01)), { 'inference-header-content-length': String(h.length) }), 400, 'tensor_out_of_range', /element 9 \(channel 0\) is 1\.0099999\d*/],
  );
  for (const [label, pending, status, code, message] of cases) {
    const res = await pending;
    t.equal(res.statusCode, status, `${label}: status ${status}`);
    const body = res.json();
    t.equal(body.code, code, `${label}: code ${code}`);
    t.match(body.error, message, `${label}: ${body.error}`);
    t.notMatch(body.error, /at .*\.js:\d+/, `${label}: no stack trace`);
  }
  const ok = await post({ inputs: [input()] });
  t.equal(ok.statusCode, 200, 'still serving');
  // The range's ends and a subnormal are accepted (the tiny package's input lies in [0, 1]).
  const edges = new Float32Array(784);
  edges[0] = 1;
  edges[1] = -1e-45;
  edges[2] = 0;
  const finite = await post(binaryBody(h, new Uint8Array(edges.buffer)), { 'inference-header-content-length': String(h.length) });
  t.equal(finite.statusCode, 200, 'values at the ends of the input range are accepted');
  const missing = await app.server.inject({ url: '/v2/models/nope/ready' });
  t.same([missing.statusCode, missing.json().code], [404, 'unknown_model']);
});

t.test('random sampling applies to v2: each image of a batch draws its own member, uniformly', async (t) => {
  const app = await startApp({ sampling: { mode: 'random' } });
  t.teardown(() => app.close());
  const counts = new Array(memberProbs.length).fill(0);
  const data = Array.from({ length: 16 }, () => golden[0].input).flat();
  for (let r = 0; r < 30; r++) {
    const res = await app.server.inject({ method: 'POST', url: INFER, payload: { inputs: [{ name: 'input', shape: [16, 1, 28, 28], datatype: 'FP32', data }] } });
    const probs = res.json().outputs[0].data as number[];
    for (let i = 0; i < 16; i++) {
      const row = probs.slice(i * 10, i * 10 + 10);
      const hits = memberProbs.map((p, m) => [m, Math.max(...p.map((v, k) => Math.abs(v - row[k])))]).filter(([, e]) => e < 1e-4);
      t.equal(hits.length, 1, 'each row is exactly one member\'s softmax');
      counts[hits[0][0]]++;
    }
  }
  const stat = chiSquare(counts);
  t.ok(stat < CHI2_CRIT_0_001[counts.length - 1], `chi2 = ${stat.toFixed(2)} (counts ${counts})`);
  const res = await app.server.inject({ method: 'POST', url: INFER, payload: { inputs: [{ name: 'input', shape: [1, 1, 28, 28], datatype: 'FP32', data: golden[0].input }] } });
  t.notOk(JSON.stringify(res.json()).includes('member'), 'the member is not revealed');
});

t.test('while the model loads: live 200, ready and model routes 503 with Retry-After', async (t) => {
  const server = createServer(embeddedConfig({ modelDir: TINY }), unstartedRepository(embeddedConfig({ modelDir: TINY })), { logger: false });
  t.teardown(() => server.close());
  const live = await server.inject({ url: '/v2/health/live' });
  t.same([live.statusCode, live.json()], [200, { live: true }]);
  for (const url of ['/v2/health/ready', `/v2/models/${NAME}`, `/v2/models/${NAME}/ready`]) {
    const res = await server.inject({ url });
    t.equal(res.statusCode, 503, url);
    t.equal(res.json().code, 'not_ready');
    t.equal(res.headers['retry-after'], '1');
  }
  const meta = (await server.inject({ url: '/v2' })).json();
  t.same(meta.extensions, ['binary_tensor_data', 'classification', 'model_configuration', 'statistics', 'model_repository']);
});
