/**
 * The attack client is its own program: it shares nothing with the service but the published HTTP
 * API and package format, so its code imports nothing from src/, and its pre-processing (written
 * from docs/model-format.md) must give the pixels the service's gives.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import t from 'tap';
import { imageToTensor } from '../../src/preprocess/image.js';
import type { InputSpec } from '../client.js';
import { toPixels } from '../images.js';
import { goldenOf, manifestOf, ROOT, TINY } from '../../test/helpers.js';

t.test('no module of the attack client imports the service', async (t) => {
  const dir = path.join(ROOT, 'attack');
  const files = (await readdir(dir)).filter((f) => f.endsWith('.ts'));
  t.ok(files.length >= 10, `${files.length} modules`);
  for (const f of files) {
    const text = await readFile(path.join(dir, f), 'utf8');
    const imports = [...text.matchAll(/from '([^']+)'/g)].map((m) => m[1]);
    t.ok(imports.every((i) => i.startsWith('node:') || i === 'sharp' || /^\.\/[\w-]+\.js$/.test(i)), `${f}: ${imports.join(', ')}`);
  }
});

/** The service's pixel space for the same image: its pre-processing with mean 0 and std 1. */
async function servicePixels(bytes: Buffer, spec: InputSpec): Promise<number[]> {
  const [c, h, w] = spec.shape;
  const out = new Float32Array(c * h * w);
  const raw = { ...spec, mean: new Array<number>(c).fill(0), std: new Array<number>(c).fill(1) };
  await imageToTensor(bytes, raw, { maxInputPixels: 1 << 24 }, out);
  return Array.from(out);
}

t.test('pixels of the golden images reproduce the package\'s golden tensors', async (t) => {
  const spec = (await manifestOf(TINY)).input as InputSpec;
  for (const g of await goldenOf(TINY)) {
    const x = await toPixels({ name: g.file, label: g.label, bytes: await readFile(path.join(TINY, g.file)) }, spec);
    const worst = Array.from(x).reduce((m, v, i) => Math.max(m, Math.abs((v - spec.mean[0]) / spec.std[0] - g.input[i])), 0);
    t.ok(worst <= 1e-6, `${g.file}: max abs difference ${worst}`);
  }
});

t.test('resize, alpha and colour conversion agree with the service bit for bit', async (t) => {
  const rgba = Buffer.from(Array.from({ length: 9 * 7 * 4 }, (_, i) => (i * 37) % 256));
  const bytes = await sharp(rgba, { raw: { width: 9, height: 7, channels: 4 } }).png().toBuffer();
  const specs: InputSpec[] = [
    { name: 'input', shape: [1, 4, 4], channels: 'gray', scale: 1 / 255, mean: [0], std: [1], resize: { fit: 'contain', kernel: 'linear', background: 30 } },
    { name: 'input', shape: [3, 5, 3], channels: 'rgb', scale: 1 / 255, mean: [0, 0, 0], std: [1, 1, 1], resize: { fit: 'cover', kernel: 'cubic', background: 200 } },
    { name: 'input', shape: [3, 9, 7], channels: 'rgb', scale: 1, mean: [0, 0, 0], std: [1, 1, 1], resize: { fit: 'fill', kernel: 'nearest', background: 0 } },
  ];
  for (const spec of specs) {
    const ours = Array.from(await toPixels({ name: 'x.png', label: 0, bytes }, spec));
    t.same(ours, await servicePixels(bytes, spec), `${spec.channels} ${spec.shape.join('x')} ${spec.resize.fit}`);
  }
});
