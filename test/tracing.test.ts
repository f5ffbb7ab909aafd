import http from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { f32Bytes, startGrpc } from './grpc/client.js';
import { goldenOf, png, startApp, TINY } from './helpers.js';

interface Exported { name: string; traceId: string; spanId: string; parentSpanId?: string; attributes: { key: string; value: Record<string, unknown> }[] }

/** A stand-in OTLP/HTTP collector: keeps every span POSTed to /v1/traces (the JSON encoding). */
async function collector() {
  const spans: Exported[] = [];
  const types: string[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      types.push(String(req.headers['content-type']));
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      for (const rs of body.resourceSpans ?? []) for (const ss of rs.scopeSpans ?? []) spans.push(...ss.spans);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { spans, types, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`, close: () => server.close() };
}

const value = (s: Exported, key: string) => {
  const v = s.attributes.find((a) => a.key === key)?.value;
  return v === undefined ? undefined : Object.values(v)[0];
};

t.test('traces reach an OTLP collector: one span per request with its steps, a child of the caller\'s traceparent, no member', async (t) => {
  const c = await collector();
  t.teardown(c.close);
  const app = await startApp({ otlpEndpoint: c.url, workers: 2 });
  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
  const parent = '00f067aa0ba902b7';
  const res = await app.server.inject({
    method: 'POST', url: '/classify', payload: await png(28, 28, 1),
    headers: { 'content-type': 'image/png', traceparent: `00-${traceId}-${parent}-01` },
  });
  t.equal(res.statusCode, 200);
  const golden = await goldenOf(TINY);
  const inputs = [{ name: 'input', shape: [4, 1, 28, 28], datatype: 'FP32', data: [0, 1, 2, 3].flatMap((i) => golden[i].input) }];
  t.equal((await app.server.inject({ method: 'POST', url: '/v2/models/tiny-ensemble/infer', payload: { inputs } })).statusCode, 200);
  t.equal((await app.server.inject({ method: 'POST', url: '/classify', headers: { 'content-type': 'image/png' }, payload: Buffer.from('nope') })).statusCode, 400);
  await app.close(); // flushes the batch processor

  t.ok(c.types.every((ct) => ct.startsWith('application/json')), `OTLP/HTTP JSON (${c.types})`);
  const roots = c.spans.filter((s) => s.name === 'redserve.infer');
  t.equal(roots.length, 3, 'one span per inference request');
  const first = roots.find((s) => s.traceId === traceId);
  t.ok(first, 'the traceparent\'s trace');
  t.equal(first!.parentSpanId, parent, 'a child of the caller\'s span');
  t.equal(value(first!, 'redserve.model'), 'tiny-ensemble');
  t.equal(value(first!, 'redserve.images'), 1);
  t.equal(value(first!, 'http.response.status_code'), 200);
  const steps = c.spans.filter((s) => s.traceId === traceId && s.name !== 'redserve.infer');
  t.same(steps.map((s) => s.name).sort(), ['decode', 'encode', 'members', 'queue', 'screen']);
  t.ok(steps.every((s) => s.parentSpanId === first!.spanId), 'the steps are children of the request span');
  const batch = roots.find((s) => value(s, 'redserve.protocol') === 'v2');
  t.equal(value(batch!, 'redserve.images'), 4);
  t.equal(c.spans.filter((s) => s.traceId === batch!.traceId && s.name === 'members').length, 1,
    'four images that may draw several members: still one members span (the number of runs would tell the draw)');
  const bad = roots.find((s) => value(s, 'http.response.status_code') === 400);
  t.equal(value(bad!, 'redserve.error'), 'not_an_image');
  for (const s of c.spans) {
    for (const a of s.attributes) t.notMatch(a.key, /member/, `${s.name}: no attribute names a member (${a.key})`);
  }
});

t.test('gRPC ModelInfer is traced like REST infer: a child of the traceparent in its metadata, status as HTTP', async (t) => {
  const c = await collector();
  t.teardown(c.close);
  const { app, client } = await startGrpc({ otlpEndpoint: c.url, workers: 1 });
  const golden = await goldenOf(TINY);
  const traceId = '0af7651916cd43dd8448eb211c80319c';
  const parent = 'b7ad6b7169203331';
  const request = (name: string) => ({
    model_name: name, inputs: [{ name: 'input', datatype: 'FP32', shape: [2, 1, 28, 28] }], raw_input_contents: [f32Bytes([...golden[0].input, ...golden[1].input])],
  });
  t.equal((await client.call('ModelInfer', request('tiny-ensemble'), { traceparent: `00-${traceId}-${parent}-01` })).status.code, 0);
  t.equal((await client.call('ModelInfer', request('nope'))).status.code, 5);
  t.equal((await client.call('ModelMetadata', { name: 'tiny-ensemble' })).status.code, 0);
  client.close();
  await app.close();

  const roots = c.spans.filter((s) => s.name === 'redserve.infer');
  t.equal(roots.length, 2, 'one span per ModelInfer call, none for the other RPCs');
  const first = roots.find((s) => s.traceId === traceId);
  t.equal(first?.parentSpanId, parent, 'a child of the caller\'s span');
  t.same([value(first!, 'redserve.protocol'), value(first!, 'redserve.model'), value(first!, 'redserve.images'), value(first!, 'http.response.status_code')],
    ['grpc', 'tiny-ensemble', 2, 200]);
  t.same(c.spans.filter((s) => s.traceId === traceId && s.name !== 'redserve.infer').map((s) => s.name).sort(), ['decode', 'encode', 'members', 'queue', 'screen']);
  const unknown = roots.find((s) => s !== first)!;
  t.same([value(unknown, 'http.response.status_code'), value(unknown, 'redserve.error')], [404, 'unknown_model']);
});
