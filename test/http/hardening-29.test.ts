/**
 * Regressions for issue 29's defects and weaknesses on the HTTP routes, each failing on the code
 * before the fix: an SVGZ sent as an image (never handed to a decoder), the decoded pixels of one
 * request, deeply nested JSON, unknown methods with a body, and what the schema admits that the
 * server refused. Statistics are in v2-statistics.test.ts, connections in connections.test.ts.
 */
import { gzipSync } from 'node:zlib';
import sharp from 'sharp';
import t from 'tap';
import { png, startApp } from '../helpers.js';

const app = await startApp({ workers: 1, maxImagesPerRequest: 8, maxRequestPixels: 3_000_000 });
t.teardown(() => app.close());

/** An SVG document of `rects` elements, gzip-compressed (an SVGZ; a small bomb at 200,000). */
const svgz = (rects: number) => gzipSync(Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">${
  '<rect width="1" height="1"/>'.repeat(rects)}</svg>`), { level: 9 });

t.test('an SVGZ is refused by its signature, as png, in multipart and in JSON base64, without being decoded', async (t) => {
  const bomb = svgz(200_000);
  t.ok(bomb.length < 100_000, `${bomb.length} bytes inflating to ${200_000 * 28} bytes of SVG`);
  const check = (res: { statusCode: number; json(): any }, what: string) => {
    t.equal(res.statusCode, 415, `${what}: 415`);
    t.equal(res.json().error, 'unsupported_media_type');
    // The format is named from the bytes' signature: 'svg' would mean a decoder parsed them.
    t.match(res.json().message, /'gzip-compressed data/, `${what}: named by its gzip signature`);
  };
  check(await app.server.inject({ method: 'POST', url: '/classify', headers: { 'content-type': 'image/png' }, payload: bomb }), 'image/png');
  check(await app.server.inject({ method: 'POST', url: '/classify', payload: { images: [bomb.toString('base64')] } }), 'JSON');
  const boundary = 'b0undary';
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n`),
    bomb, Buffer.from(`\r\n--${boundary}--\r\n`)]);
  check(await app.server.inject({ method: 'POST', url: '/classify', headers: { 'content-type': `multipart/form-data; boundary=${boundary}` }, payload: body }), 'multipart');
  const plain = await app.server.inject({ method: 'POST', url: '/classify', headers: { 'content-type': 'image/png' }, payload: Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>') });
  t.same([plain.statusCode, plain.json().message], [415, "image: image format 'svg' is not accepted (png, jpeg, webp, gif, tiff)"]);
});

t.test('the images of one request are bounded in decoded pixels together (--max-request-pixels)', async (t) => {
  const big = await sharp({ create: { width: 1000, height: 1000, channels: 3, background: '#808080' } }).jpeg().toBuffer();
  const b64 = big.toString('base64');
  const two = await app.server.inject({ method: 'POST', url: '/classify', payload: { images: [b64, b64] } });
  t.equal(two.statusCode, 200, '2 Mpx together: served');
  const four = await app.server.inject({ method: 'POST', url: '/classify', payload: { images: [b64, b64, b64, b64] } });
  t.equal(four.statusCode, 413, '4 Mpx together: 413');
  t.equal(four.json().error, 'too_many_pixels');
  t.match(four.json().message, /4000000 pixels together; the limit per request is 3000000 \(--max-request-pixels\)/);
});

t.test('JSON nested past the limit is refused before it is parsed', async (t) => {
  const deep = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;
  const v2 = await app.server.inject({ method: 'POST', url: '/v2/models/tiny-ensemble/infer', headers: { 'content-type': 'application/json' },
    payload: `{"inputs":[],"parameters":{"x":${deep(100_000)}}}` });
  t.equal(v2.statusCode, 400);
  t.same([v2.json().code, v2.json().error], ['too_deep', 'the JSON body nests deeper than 64 levels (arrays and objects)']);
  const root = await app.server.inject({ method: 'POST', url: '/classify', headers: { 'content-type': 'application/json' },
    payload: `{"tensors":${deep(100_000)}}` });
  t.same([root.statusCode, root.json().error], [400, 'too_deep']);
  // Strings may hold brackets: only structure counts.
  const quoted = await app.server.inject({ method: 'POST', url: '/v2/models/tiny-ensemble/infer', headers: { 'content-type': 'application/json' },
    payload: `{"inputs":[],"parameters":{"x":"${'['.repeat(1000)}\\""}}` });
  t.not(quoted.json().code, 'too_deep', 'brackets inside strings are not nesting');
});

t.test('unknown methods get 405 even with a body the route would not parse', async (t) => {
  const cases: [string, string, Record<string, string>, string][] = [
    ['PATCH', '/v2/models/tiny-ensemble/infer', { 'content-type': 'text/plain' }, 'x'],
    ['PUT', '/classify', { 'content-type': 'application/json' }, '{'],
    ['DELETE', '/v2/models/tiny-ensemble', { 'content-type': 'application/json' }, '{"a":'],
    ['PUT', '/v2/repository/index', { 'content-type': 'application/octet-stream' }, 'zz'],
  ];
  for (const [method, url, headers, payload] of cases) {
    const res = await app.server.inject({ method: method as 'PUT', url, headers, payload });
    t.equal(res.statusCode, 405, `${method} ${url}: 405`);
    t.ok(res.headers.allow, 'with Allow');
  }
});

t.test('what the schema admits, the server serves or refuses as documented (schemathesis cases)', async (t) => {
  const infer = (shape: number[]) => app.server.inject({ method: 'POST', url: '/v2/models/tiny-ensemble/infer',
    payload: { inputs: [{ name: 'input', datatype: 'FP32', shape, data: [] }] } });
  const negative = await infer([-1, 1, 28, 28]);
  t.equal(negative.statusCode, 400, 'a negative dimension: 400 from the schema');
  t.match(negative.json().error, /shape/);
  const empty = await app.server.inject({ method: 'POST', url: '/classify', payload: { images: ['', ''] } });
  t.equal(empty.statusCode, 400, 'empty base64 strings: 400 from the schema');
  t.equal(empty.json().error, 'bad_request');
  t.match(empty.json().message, /images/);
});
