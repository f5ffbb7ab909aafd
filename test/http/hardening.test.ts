/**
 * Regressions for issue 15's defects on the root routes, each failing on the code before the fix:
 * a PNG whose data inflates past its header (1), tensor values outside the input range (3),
 * malformed multipart (4), undeclared methods (405), a non-string in `images`, decoder words in
 * 4xx messages, and failed API keys against the rate limit. The v2 ones are in v2.test.ts, slow
 * bodies in slow-body.test.ts.
 */
import { readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { crc32, deflateSync } from 'node:zlib';
import t, { type Test } from 'tap';
import { goldenOf, png, startApp, TINY } from '../helpers.js';

const golden = await goldenOf(TINY);
const goldenPng = await readFile(path.join(TINY, golden[0].file));

function isErr(t: Test, res: { statusCode: number; json(): any }, status: number, code: string, message?: RegExp) {
  t.equal(res.statusCode, status, `status ${status}`);
  const body = res.json();
  t.equal(body.error, code, `error code ${code}`);
  if (message) t.match(body.message, message);
  t.notMatch(body.message, /vips|libpng|busboy|Multipart:|at .*\.js:\d+/, 'no library words or stack');
}

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([Buffer.from(type, 'latin1'), data])));
  return Buffer.concat([head, data, crc]);
}

/** A PNG of `width`x`height` grey whose IDAT inflates to `inflatedBytes` (a bomb when far more than needed). */
function greyPng(width: number, height: number, inflatedBytes: number, extra: Buffer[] = []): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth; colour type 0 (grey), no interlace
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), ...extra,
    chunk('IDAT', deflateSync(Buffer.alloc(inflatedBytes), { level: 9 })), chunk('IEND', Buffer.alloc(0))]);
}

const app = await startApp({ maxImagesPerRequest: 4, maxBodyBytes: 256 * 1024, workers: 1 });
t.teardown(() => app.close());
const post = (headers: Record<string, string>, payload: unknown, url = '/classify') =>
  app.server.inject({ method: 'POST', url, headers, payload: payload as string });

t.test('1: a 28x28 grey PNG whose data inflates to 16 MiB is refused as image_data_mismatch, not decoded', async (t) => {
  const exact = greyPng(28, 28, 28 * 29);
  t.equal((await post({ 'content-type': 'image/png' }, exact)).statusCode, 200, 'the same PNG with exactly its data is served');
  const bomb = greyPng(28, 28, 16 * 1024 * 1024);
  t.ok(bomb.length < 64 * 1024, `the bomb is ${bomb.length} bytes on the wire`);
  isErr(t, await post({ 'content-type': 'image/png' }, bomb), 400, 'image_data_mismatch',
    /^image: the PNG's image data inflates to more than the 812 bytes its 28x28 grey header needs$/);
  const multi = await post({ 'content-type': 'application/json' }, { images: [goldenPng.toString('base64'), bomb.toString('base64')] });
  isErr(t, multi, 400, 'image_data_mismatch', /^images\[1\]: /);
});

t.test('3: JSON tensors outside the input range are refused; no answer carries a non-finite probability', async (t) => {
  const tensor = (v: number | string) => [Array.from({ length: 28 }, (_, y) => Array.from({ length: 28 }, (_, x) => (y === 3 && x === 4 ? v : 0.5)))];
  for (const v of ['1e38', '-1e38', '1e39', '1.01', '-0.01']) {
    const res = await post({ 'content-type': 'application/json' }, JSON.stringify({ tensors: [tensor(0.5), tensor('X')] }).replace('"X"', v));
    isErr(t, res, 400, 'tensor_out_of_range', new RegExp(`^tensors\\[1\\]: element 88 \\(channel 0\\) is ${v.replace('+', '').replace('.', '\\.').replace('e', 'e\\+?')}; channel 0 of the pre-processed input lies in \\[-0\\.001, 1\\.001\\]`));
  }
  for (const v of [0, 1, 1.0005, -0.0005]) {
    const res = await post({ 'content-type': 'application/json' }, { tensors: [tensor(v)] });
    t.equal(res.statusCode, 200, `${v} is inside the range (with its rounding slack)`);
    t.ok(res.json().results[0].predictions.every((p: { probability: number }) => Number.isFinite(p.probability)), 'finite probabilities');
  }
});

t.test('4: malformed multipart bodies get 400 bad_multipart; too many fields 413 too_many_fields', async (t) => {
  const part = (name: string) => `--B\r\nContent-Disposition: form-data; name="${name}"; filename="${name}.png"\r\nContent-Type: image/png\r\n\r\n`;
  const whole = Buffer.concat([Buffer.from(part('a')), goldenPng, Buffer.from('\r\n--B--\r\n')]);
  t.equal((await post({ 'content-type': 'multipart/form-data; boundary=B' }, whole)).statusCode, 200, 'a well-formed body is served');
  isErr(t, await post({ 'content-type': 'multipart/form-data' }, whole), 400, 'bad_multipart', /no boundary parameter/);
  isErr(t, await post({ 'content-type': 'multipart/form-data; boundary=NEVER' }, whole), 400, 'bad_multipart', /ends before its closing boundary/);
  isErr(t, await post({ 'content-type': 'multipart/form-data; boundary=B' }, whole.subarray(0, 200)), 400, 'bad_multipart', /ends before its closing boundary/);
  const fields = Array.from({ length: 1000 }, (_, i) => `--B\r\nContent-Disposition: form-data; name="f${i}"\r\n\r\nv\r\n`).join('') + '--B--\r\n';
  isErr(t, await post({ 'content-type': 'multipart/form-data; boundary=B' }, fields), 413, 'too_many_fields', /more than 16 non-file fields/);
  t.equal((await post({ 'content-type': 'image/png' }, goldenPng)).statusCode, 200, 'still serving');
});

t.test('undeclared methods on known paths get 405 with Allow; unknown paths 404', async (t) => {
  const cases: [string, string, string][] = [
    ['GET', '/classify', 'POST'],
    ['PUT', '/classify', 'POST'],
    ['POST', '/healthz', 'GET, HEAD'],
    ['DELETE', '/v2/health/live', 'GET, HEAD'],
    ['GET', '/v2/models/tiny-ensemble/infer', 'POST'],
    ['PATCH', '/v2/models/any-name/versions/3/infer', 'POST'],
  ];
  for (const [method, url, allow] of cases) {
    const res = await app.server.inject({ method: method as 'GET', url });
    t.equal(res.statusCode, 405, `${method} ${url}: 405`);
    t.equal(res.headers.allow, allow, `${method} ${url}: Allow ${allow}`);
    const body = res.json();
    t.equal(body.error === 'method_not_allowed' || body.code === 'method_not_allowed', true, 'code method_not_allowed');
  }
  const nope = await app.server.inject({ method: 'GET', url: '/nope' });
  t.same([nope.statusCode, nope.json().error], [404, 'not_found']);
});

t.test('a POST without body or Content-Type is empty_body; a body without Content-Type is 415 naming what is accepted', async (t) => {
  isErr(t, await app.server.inject({ method: 'POST', url: '/classify' }), 400, 'empty_body', /no body/);
  const res = await app.server.inject({ method: 'POST', url: '/classify', payload: goldenPng, headers: { 'content-type': '' } });
  isErr(t, res, 415, 'unsupported_media_type', /^Content-Type '\(none\)' is not accepted; send one of /);
  for (const type of ['image/png', 'multipart/form-data', 'application/json']) t.match(res.json().message, type, `names ${type}`);
});

t.test('a non-string in images is named as such (was reported as empty_body)', async (t) => {
  isErr(t, await post({ 'content-type': 'application/json' }, { images: [5] }), 400, 'bad_request', /images\/0 must be string/);
  isErr(t, await post({ 'content-type': 'application/json' }, { images: [true] }), 400, 'bad_request', /images\/0 must be string/);
});

t.test('4xx messages carry no decoder words (they are logged instead)', async (t) => {
  // A 64x64 PNG (so sharp decodes it) with its compressed data damaged in the middle.
  const good = await png(64, 64, 3, 0);
  const bad = Buffer.from(good);
  const idat = bad.indexOf('IDAT');
  for (let i = idat + 8; i < idat + 30 && i < bad.length - 12; i++) bad[i] ^= 0x5a;
  const res = await post({ 'content-type': 'image/png' }, bad);
  t.ok(res.statusCode === 400, `status ${res.statusCode}`);
  isErr(t, res, 400, res.json().error, /^image: the PNG (image )?data is truncated or corrupt$/);
});

t.test('failed API key attempts count against the client\'s rate limit', async (t) => {
  const dir = await import('node:fs/promises').then((fs) => fs.mkdtemp(path.join(os.tmpdir(), 'redserve-keys-')));
  const file = path.join(dir, 'keys');
  await writeFile(file, 'the-right-key-0123456789\n');
  const { loadConfig } = await import('../../src/config.js');
  const keys = loadConfig(['--api-key-file', file], {}).apiKeySha256;
  for (const [label, extra, burst] of [['with --rate-limit 2 (burst 3)', { rateLimit: { perSecond: 2, burst: 3 } }, 3], ['without --rate-limit', {}, 10]] as const) {
    const keyed = await startApp({ apiKeySha256: keys, workers: 1, ...extra });
    const guess = (i: number) => keyed.server.inject({ method: 'POST', url: '/classify', headers: { 'content-type': 'image/png', 'x-api-key': `guess-${i}-0123456789abcdef` }, payload: goldenPng });
    // Sent together, so that the bucket cannot refill between them however slow the machine is.
    const codes = (await Promise.all(Array.from({ length: burst + 6 }, (_, i) => guess(i)))).map((r) => r.statusCode);
    const unauthorized = codes.filter((c) => c === 401).length;
    t.ok(unauthorized >= burst && unauthorized <= burst + 1, `${label}: about ${burst} wrong keys get 401 (${codes.join(',')})`);
    t.ok(codes.filter((c) => c === 429).length >= 5, `${label}: the rest get 429`);
    const right = await keyed.server.inject({ method: 'POST', url: '/classify', headers: { 'content-type': 'image/png', 'x-api-key': 'the-right-key-0123456789' }, payload: goldenPng });
    t.equal(right.statusCode, 200, `${label}: the right key still works (its own bucket)`);
    await keyed.close();
  }
});
