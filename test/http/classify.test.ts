import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import sharp from 'sharp';
import { goldenOf, manifestOf, png, softmax, startApp, TINY } from '../helpers.js';

const app = await startApp({ maxImagesPerRequest: 4, maxBodyBytes: 256 * 1024, maxInputPixels: 1_000_000 });
t.teardown(() => app.close());
const inject = app.server.inject.bind(app.server);
const manifest = await manifestOf(TINY);
const golden = await goldenOf(TINY);
const goldenPng = await readFile(path.join(TINY, golden[0].file));


function isErr(t: Test, res: { statusCode: number; json(): any }, status: number, code: string) {
  t.equal(res.statusCode, status, `status ${status}`);
  const body = res.json();
  t.equal(body.error, code, `error code ${code}`);
  t.type(body.message, 'string');
  t.notMatch(body.message, /at .*\.js:\d+/, 'no stack trace');
}

t.test('health, readiness and model metadata', async (t) => {
  t.same((await inject({ url: '/healthz' })).json(), { status: 'ok' });
  t.same((await inject({ url: '/readyz' })).json(), { status: 'ready' });
  const m = (await inject({ url: '/models' })).json();
  t.equal(m.name, manifest.name);
  t.equal(m.members, manifest.members.length);
  t.same(m.labels, manifest.labels);
  t.same(m.input.shape, [1, 28, 28]);
  t.equal(m.provider, 'cpu');
  t.equal(m.sampling, 'random');
  const docs = await inject({ url: '/docs/json' });
  t.equal(docs.statusCode, 200, 'OpenAPI document served');
  t.ok(docs.json().paths['/classify'], 'documents /classify');
  t.ok([200, 302].includes((await inject({ url: '/docs' })).statusCode), 'Swagger UI at /docs');
});

t.test('one PNG body -> top-5 predictions by default, probabilities of one member', async (t) => {
  const res = await inject({ method: 'POST', url: '/classify', headers: { 'content-type': 'image/png' }, payload: goldenPng });
  t.equal(res.statusCode, 200);
  const body = res.json();
  t.equal(body.model, manifest.name);
  t.equal(body.predictions.length, 5);
  const probs = body.predictions.map((p: any) => p.probability);
  t.same([...probs].sort((a: number, b: number) => b - a), probs, 'most probable first');
  const members = golden[0].logits.map(softmax);
  const answered = members.filter((p) => body.predictions.every((q: any) => Math.abs(p[q.index] - q.probability) < 1e-4));
  t.equal(answered.length >= 1, true, 'the answer is exactly one member\'s softmax');
  t.notOk('member' in body, 'the member is not revealed');
  t.notOk(Object.keys(res.headers).some((h) => /member/i.test(h)), 'no header reveals the member');
});

t.test('topK all and topK bounds', async (t) => {
  const all = await inject({ method: 'POST', url: '/classify?topK=all', headers: { 'content-type': 'image/png' }, payload: goldenPng });
  t.equal(all.json().predictions.length, 10);
  const sum = all.json().predictions.reduce((s: number, p: any) => s + p.probability, 0);
  t.ok(Math.abs(sum - 1) < 1e-5, 'probabilities sum to 1');
  isErr(t, await inject({ method: 'POST', url: '/classify?topK=11', headers: { 'content-type': 'image/png' }, payload: goldenPng }), 400, 'bad_top_k');
  isErr(t, await inject({ method: 'POST', url: '/classify?topK=0', headers: { 'content-type': 'image/png' }, payload: goldenPng }), 400, 'bad_request');
});

t.test('other image formats and colour images are converted by the manifest', async (t) => {
  const rgb = await sharp(goldenPng).toColourspace('srgb').jpeg().toBuffer();
  for (const [type, bytes] of [
    ['image/jpeg', rgb],
    ['image/webp', await sharp(goldenPng).webp({ lossless: true }).toBuffer()],
    ['image/gif', await sharp(goldenPng).gif().toBuffer()],
    ['image/tiff', await sharp(goldenPng).tiff().toBuffer()],
    ['image/png', await png(300, 200, 4)],
  ] as const) {
    const res = await inject({ method: 'POST', url: '/classify', headers: { 'content-type': type }, payload: bytes });
    t.equal(res.statusCode, 200, type);
  }
});

t.test('JSON base64 images, JSON tensors and multipart give results per image', async (t) => {
  const b64 = goldenPng.toString('base64');
  const res = await inject({ method: 'POST', url: '/classify?topK=2', payload: { images: [b64, b64] } });
  t.equal(res.statusCode, 200);
  t.equal(res.json().results.length, 2);
  t.equal(res.json().results[0].predictions.length, 2);

  const tensor = [Array.from({ length: 28 }, (_, y) => golden[0].input.slice(y * 28, y * 28 + 28))];
  const tres = await inject({ method: 'POST', url: '/classify?topK=all', payload: { tensors: [tensor] } });
  t.equal(tres.statusCode, 200);
  const preds = tres.json().results[0].predictions;
  const members = golden[0].logits.map(softmax);
  t.ok(members.some((p) => preds.every((q: any) => Math.abs(p[q.index] - q.probability) < 1e-4)), 'tensor path matches a member');

  const boundary = 'XBOUNDARYX';
  const part = (name: string, bytes: Buffer) => Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"; filename="${name}.png"\r\nContent-Type: image/png\r\n\r\n`),
    bytes, Buffer.from('\r\n')]);
  const body = Buffer.concat([part('a', goldenPng), part('b', goldenPng), Buffer.from(`--${boundary}--\r\n`)]);
  const mres = await inject({ method: 'POST', url: '/classify', headers: { 'content-type': `multipart/form-data; boundary=${boundary}` }, payload: body });
  t.equal(mres.statusCode, 200);
  t.equal(mres.json().results.length, 2);
});

t.test('bad input gets a 4xx that names the problem, and the service keeps serving', async (t) => {
  const post = (headers: Record<string, string>, payload: any, url = '/classify') => inject({ method: 'POST', url, headers, payload });
  isErr(t, await post({ 'content-type': 'image/png' }, Buffer.alloc(0)), 400, 'empty_body');
  isErr(t, await post({ 'content-type': 'image/png' }, Buffer.from('definitely not an image')), 400, 'not_an_image');
  isErr(t, await post({ 'content-type': 'image/png' }, goldenPng.subarray(0, goldenPng.length - 30)), 400, 'truncated_image');
  const jpeg = await sharp(await png(64, 64, 3, 90)).jpeg().toBuffer();
  isErr(t, await post({ 'content-type': 'image/jpeg' }, jpeg.subarray(0, Math.floor(jpeg.length / 2))), 400, 'truncated_image');
  // A pixel bomb: a few KB of PNG that decodes to 2000x2000 = 4 M pixels (limit here: 1 M).
  const bomb = await png(2000, 2000, 1, 0);
  t.ok(bomb.length < 50_000, 'the bomb is small on the wire');
  const bombRes = await post({ 'content-type': 'image/png' }, bomb);
  isErr(t, bombRes, 413, 'image_too_large');
  t.match(bombRes.json().message, /2000x2000 = 4000000 pixels exceeds the limit of 1000000/);
  isErr(t, await post({ 'content-type': 'text/plain' }, 'hello'), 415, 'unsupported_media_type');
  const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"><rect width="28" height="28"/></svg>');
  isErr(t, await post({ 'content-type': 'image/png' }, svg), 415, 'unsupported_media_type');
  isErr(t, await post({ 'content-type': 'image/png' }, Buffer.alloc(300 * 1024, 1)), 413, 'body_too_large');
  isErr(t, await post({ 'content-type': 'application/json' }, { tensors: [[[1, 2, 3]]] }), 400, 'bad_tensor');
  const nanTensor = [Array.from({ length: 28 }, () => new Array(28).fill(0))];
  nanTensor[0][3][4] = 'NaN' as unknown as number;
  const nanRes = await post({ 'content-type': 'application/json' }, { tensors: [nanTensor] });
  isErr(t, nanRes, 400, 'bad_tensor');
  t.match(nanRes.json().message, /finite number/);
  const inf = JSON.stringify({ tensors: [nanTensor] }).replace('"NaN"', '1e999');
  isErr(t, await post({ 'content-type': 'application/json' }, inf), 400, 'bad_tensor');
  isErr(t, await post({ 'content-type': 'application/json' }, { images: Array(5).fill(goldenPng.toString('base64')) }), 400, 'too_many_images');
  isErr(t, await post({ 'content-type': 'application/json' }, { images: ['%%%'] }), 400, 'bad_base64');
  isErr(t, await post({ 'content-type': 'application/json' }, { pictures: [] }), 400, 'bad_request');
  isErr(t, await post({ 'content-type': 'application/json' }, '{"images": ['), 400, 'bad_request');
  const filePart = (i: number) => Buffer.concat([
    Buffer.from(`--B\r\nContent-Disposition: form-data; name="f${i}"; filename="f${i}.png"\r\nContent-Type: image/png\r\n\r\n`),
    goldenPng, Buffer.from('\r\n')]);
  const many = Buffer.concat([...[0, 1, 2, 3, 4].map(filePart), Buffer.from('--B--\r\n')]);
  const manyRes = await post({ 'content-type': 'multipart/form-data; boundary=B' }, many);
  isErr(t, manyRes, 400, 'too_many_images');
  isErr(t, await inject({ method: 'GET', url: '/nope' }), 404, 'not_found');
  // still serving
  const ok = await post({ 'content-type': 'image/png' }, goldenPng);
  t.equal(ok.statusCode, 200);
});
