/**
 * The gRPC exchanges recorded between redserve and Triton's gRPC client (test/fixtures/grpc/record.py)
 * and KServe's SDK (record_kserve.py), replayed offline: each recorded request message is sent as
 * the same bytes, and the answer must match what the client read at recording time: the status
 * code and message, the metadata kept, and the response message decoded field by field, floats
 * within 1e-6 (member 0's softmax under fixed:0).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Metadata, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { loadSync, type MessageTypeDefinition } from '@grpc/proto-loader';
import t, { type Test } from 'tap';
import { LOAD_OPTIONS, PREDICT_PROTO } from '../../src/grpc/proto.js';
import { RETRY_PUSHBACK, STATUS_DETAILS } from '../../src/grpc/status.js';
import { FIXTURES } from '../helpers.js';
import { fromF32Bytes, startGrpc } from './client.js';

interface Recorded {
  name: string;
  method: string;
  metadata: Record<string, string>;
  request_base64: string;
  answer: { code: string; details?: string; response_base64?: string; headers: Record<string, string>; trailers: Record<string, string> };
}

const recordings = await Promise.all(['tritonclient-grpc.json', 'kserve-grpc.json'].map(async (file) =>
  ({ file, ...JSON.parse(await readFile(path.join(FIXTURES, 'grpc', file), 'utf8')) as { recorded_with: string; server: string; exchanges: Recorded[] } })));

const messages = loadSync(PREDICT_PROTO, LOAD_OPTIONS);
const responseType = (method: string) => messages[`inference.${method.split('/').pop()!}Response`] as MessageTypeDefinition<object, object> | undefined;
const STATUS_NAMES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];

/** Compare decoded messages; raw_output_contents are compared as float32 (FP32) or as bytes. */
function sameMessage(t: Test, actual: any, expected: any, where: string): void {
  if (Buffer.isBuffer(expected)) {
    t.ok(Buffer.isBuffer(actual) && actual.length === expected.length, `${where}: ${expected.length} bytes`);
    return;
  }
  if (Array.isArray(expected)) {
    t.equal(actual?.length, expected.length, `${where}: ${expected.length} entries`);
    expected.forEach((e, i) => sameMessage(t, actual?.[i], e, `${where}[${i}]`));
    return;
  }
  if (expected && typeof expected === 'object') {
    t.same(Object.keys(actual ?? {}).sort(), Object.keys(expected).sort(), `${where}: fields`);
    for (const [k, v] of Object.entries(expected)) {
      if (k !== 'raw_output_contents') sameMessage(t, actual?.[k], v, `${where}.${k}`);
    }
    return;
  }
  t.equal(actual, expected, where);
}

function unary(client: any, method: string, request: Buffer, metadata: Record<string, string>):
  Promise<{ error: ServiceError | null; response: Buffer | undefined; headers: Metadata; status: StatusObject }> {
  const md = new Metadata();
  for (const [k, v] of Object.entries(metadata)) md.set(k, v);
  return new Promise((resolve) => {
    let headers = new Metadata();
    let error: ServiceError | null = null;
    let response: Buffer | undefined;
    const call = client.makeUnaryRequest(method, (b: Buffer) => b, (b: Buffer) => b, request, md, (err: ServiceError | null, res?: Buffer) => {
      error = err;
      response = res;
    });
    call.on('metadata', (m: Metadata) => { headers = m; });
    call.on('status', (status: StatusObject) => setImmediate(() => resolve({ error, response, headers, status })));
  });
}

const text = (md: Metadata, key: string) => {
  const v = md.get(key)[0];
  return v === undefined ? undefined : Buffer.isBuffer(v) ? v.toString('base64') : String(v);
};

for (const recording of recordings) {
  t.test(`gRPC exchanges recorded with ${recording.recorded_with} replay exactly`, async (t) => {
    const overloadRecorded = recording.server.includes('--max-queue 1');
    const { app, client } = await startGrpc({ sampling: { mode: 'fixed', member: 0 }, workers: 1, ...(overloadRecorded ? { maxQueue: 1 } : {}) });
    t.teardown(async () => { client.close(); await app.close(); });
    t.ok(recording.exchanges.length >= 8, `${recording.file}: ${recording.exchanges.length} exchanges`);
    for (const ex of recording.exchanges) {
      await t.test(ex.name, async (t) => {
        const request = Buffer.from(ex.request_base64, 'base64');
        if (ex.answer.code === 'RESOURCE_EXHAUSTED') {
          // The recorded overload came from a burst; here the one slot is held by a call in flight.
          const slot = unary(client.client, ex.method, request, ex.metadata);
          const refused = await unary(client.client, ex.method, request, ex.metadata);
          await slot;
          t.equal(refused.error?.code, 8, 'RESOURCE_EXHAUSTED');
          t.equal(refused.error?.details, ex.answer.details, 'details');
          t.equal(text(refused.status.metadata, RETRY_PUSHBACK), ex.answer.trailers[RETRY_PUSHBACK], RETRY_PUSHBACK);
          t.equal(text(refused.status.metadata, STATUS_DETAILS), ex.answer.trailers[STATUS_DETAILS], STATUS_DETAILS);
          return;
        }
        const res = await unary(client.client, ex.method, request, ex.metadata);
        t.equal(STATUS_NAMES[res.status.code], ex.answer.code, 'status code');
        for (const key of Object.keys({ ...ex.answer.trailers, [RETRY_PUSHBACK]: 1, [STATUS_DETAILS]: 1 })) {
          t.equal(text(res.status.metadata, key), ex.answer.trailers[key], `trailer ${key}`);
        }
        for (const key of Object.keys(ex.answer.headers)) t.equal(text(res.headers, key), ex.answer.headers[key], `header ${key}`);
        if (ex.answer.code !== 'OK') {
          t.equal(res.status.details, ex.answer.details, 'details');
          return;
        }
        const type = responseType(ex.method)!;
        const expected = type.deserialize(Buffer.from(ex.answer.response_base64!, 'base64')) as any;
        const actual = type.deserialize(res.response!) as any;
        sameMessage(t, actual, expected, 'response');
        (expected.raw_output_contents ?? []).forEach((raw: Buffer, i: number) => {
          const got: Buffer = actual.raw_output_contents[i];
          if (expected.outputs[i].datatype === 'FP32') {
            const [a, e] = [fromF32Bytes(got), fromF32Bytes(raw)];
            t.ok(a.length === e.length && a.every((v, k) => Math.abs(v - e[k]) <= 1e-6), `raw_output_contents[${i}]: FP32 within 1e-6`);
          } else {
            t.ok(got.equals(raw), `raw_output_contents[${i}]: the same BYTES`);
          }
        });
      });
    }
  });
}
