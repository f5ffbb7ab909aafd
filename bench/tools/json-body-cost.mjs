// CPU per 3x32x32 v2 JSON body of the main thread's request-side steps before the model: the
// nesting bound and the parse together, and reading the tensor, in two builds of src/ (default:
// dist-prev, dist), 5 interleaved rounds of 2000 calls. A build with src/http/json-body.ts is timed
// through its boundedJsonParser (the parser both scopes use); an older one as it parsed: its
// nesting bound, then Fastify's guarded parser (secure-json-parse, which scans the body for
// __proto__ and constructor with two regular expressions).
//   npm run build && node bench/tools/json-body-cost.mjs [OLD_DIST NEW_DIST]
import path from 'node:path';
import sjson from 'secure-json-parse';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
const [oldDist = 'dist-prev', newDist = 'dist'] = process.argv.slice(2);
const guarded = (text) => sjson.parse(text, { protoAction: 'error', constructorAction: 'error' });
const guardedParser = (_req, text, done) => { let body; try { body = guarded(text); } catch (err) { return done(err); } done(null, body); };
const load = async (dist) => {
  const depth = (await import(path.join(root, dist, 'src/http/json-depth.js'))).checkJsonDepth;
  const bounded = await import(path.join(root, dist, 'src/http/json-body.js')).then((m) => m.boundedJsonParser(guardedParser), () => null);
  const parse = bounded
    ? (text) => { let out; bounded({}, text, (err, body) => { if (err) throw err; out = body; }); return out; }
    : (text) => { depth(text); return guarded(text); };
  return { parse, codec: await import(path.join(root, dist, 'src/http/v2-codec.js')) };
};
const [before, after] = [await load(oldDist), await load(newDist)];

const spec = {
  input: { name: 'input', shape: [3, 32, 32], channels: 'rgb', scale: 1 / 255, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] },
  maxImages: 64, classes: 10,
};
// Pixels as a client sends them after normalising: 17-digit decimals, in range.
const data = Array.from({ length: 3072 }, (_, i) => (((i * 37) % 255) / 255 - 0.5) / 0.25);
const body = JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', data }] });
const tensorSpec = (codec) => codec.tensorSpec({ input: spec.input, output: { classes: 10 }, labels: [] }, 64);

const steps = (m) => {
  const ts = tensorSpec(m.codec);
  return {
    'depth+parse': () => m.parse(body),
    tensor: (() => { const parsed = JSON.parse(body); return () => m.codec.decodeInferRequest(parsed, null, ts); })(),
  };
};
const arms = { before: steps(before), now: steps(after) };
for (const a of Object.values(arms)) {
  const decoded = a.tensor();
  if (decoded.n !== 1 || decoded.data[5] !== Math.fround(data[5])) throw new Error('the tensor step did not decode the body');
  if (a['depth+parse']().inputs[0].data.length !== 3072) throw new Error('the parse step did not parse the body');
}
const time = (f, n) => { const t = process.cpuUsage(); for (let i = 0; i < n; i++) f(); const d = process.cpuUsage(t); return (d.user + d.system) / n; };
for (const a of Object.values(arms)) for (const f of Object.values(a)) time(f, 300);
const results = {};
for (let r = 0; r < 5; r++) {
  for (const [arm, fs] of Object.entries(arms)) {
    for (const [step, f] of Object.entries(fs)) (results[`${step}, ${arm}`] ??= []).push(time(f, 2000));
  }
}
console.log(`body ${body.length} chars; us per call, 5 interleaved rounds of 2000`);
for (const [k, v] of Object.entries(results)) console.log(`${k.padEnd(20)} ${v.map((x) => x.toFixed(1)).join(' ')}`);
