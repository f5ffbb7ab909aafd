import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import t from 'tap';
import type { InputSpec } from '../../src/ensemble/manifest.js';
import { imageToTensor } from '../../src/preprocess/image.js';
import { goldenOf, manifestOf, SHIPPED, TINY } from '../helpers.js';

const limits = { maxInputPixels: 10_000_000 };

/** Pre-processing of the golden PNGs reproduces the exporter's tensors (PyTorch side) to 1e-6. */
async function checkGolden(t: any, dir: string) {
  const manifest = await manifestOf(dir);
  const [c, h, w] = manifest.input.shape;
  for (const g of await goldenOf(dir)) {
    const out = new Float32Array(c * h * w);
    await imageToTensor(await readFile(path.join(dir, g.file)), manifest.input, limits, out);
    const worst = out.reduce((m, v, i) => Math.max(m, Math.abs(v - g.input[i])), 0);
    t.ok(worst <= 1e-6, `${path.basename(dir)}/${g.file}: max abs difference ${worst} <= 1e-6`);
  }
}

t.test('golden tensors of the fixture package (atol 1e-6)', (t) => checkGolden(t, TINY));
t.test('golden tensors of the shipped package (atol 1e-6)', { skip: !existsSync(SHIPPED) && 'models/fmnist-red not present' },
  (t) => checkGolden(t, SHIPPED));

const gray: InputSpec = {
  name: 'input', shape: [1, 4, 4], channels: 'gray', scale: 1 / 255, mean: [0.5], std: [0.25],
  resize: { fit: 'fill', kernel: 'nearest', background: 0 },
};

t.test('scale and normalise follow the manifest', async (t) => {
  const raw = Buffer.from(Array.from({ length: 16 }, (_, i) => i * 16));
  const bytes = await sharp(raw, { raw: { width: 4, height: 4, channels: 1 } }).png().toBuffer();
  const out = new Float32Array(16);
  await imageToTensor(bytes, gray, limits, out);
  out.forEach((v, i) => t.ok(Math.abs(v - ((i * 16) / 255 - 0.5) / 0.25) < 1e-6, `pixel ${i}`));
});

t.test('RGB is laid out channel-first (CHW)', async (t) => {
  const spec: InputSpec = { ...gray, shape: [3, 2, 2], channels: 'rgb', mean: [0, 0, 0], std: [1, 1, 1], scale: 1 };
  const raw = Buffer.from([10, 20, 30, 11, 21, 31, 12, 22, 32, 13, 23, 33]);
  const bytes = await sharp(raw, { raw: { width: 2, height: 2, channels: 3 } }).png().toBuffer();
  const out = new Float32Array(12);
  await imageToTensor(bytes, spec, limits, out);
  t.same(Array.from(out), [10, 11, 12, 13, 20, 21, 22, 23, 30, 31, 32, 33]);
});

t.test('alpha is flattened onto the background, and images are resized to the input size', async (t) => {
  const spec: InputSpec = { ...gray, mean: [0], std: [1], scale: 1, resize: { fit: 'fill', kernel: 'nearest', background: 200 } };
  const transparent = await sharp({ create: { width: 8, height: 8, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } }).png().toBuffer();
  const out = new Float32Array(16);
  await imageToTensor(transparent, spec, limits, out);
  t.ok(out.every((v) => Math.abs(v - 200) < 1), `every pixel is the background (${out[0]})`);
});

t.test('contain letterboxes with the background', async (t) => {
  const spec: InputSpec = { ...gray, mean: [0], std: [1], scale: 1, resize: { fit: 'contain', kernel: 'nearest', background: 0 } };
  const wide = await sharp({ create: { width: 40, height: 10, channels: 3, background: { r: 255, g: 255, b: 255 } } }).png().toBuffer();
  const out = new Float32Array(16);
  await imageToTensor(wide, spec, limits, out);
  t.same(Array.from(out.subarray(0, 4)), [0, 0, 0, 0], 'top row is padding');
  t.ok(out.subarray(4, 8).every((v) => v > 250), 'middle rows hold the image');
});

t.test('EXIF orientation is applied before resizing', async (t) => {
  const spec: InputSpec = { ...gray, shape: [1, 2, 4], mean: [0], std: [1], scale: 1, resize: { fit: 'fill', kernel: 'nearest', background: 0 } };
  // A 2x4 (w x h) image stored with orientation 6 (rotate 90 CW) displays as 4x2.
  const raw = Buffer.from([0, 0, 0, 0, 255, 255, 255, 255]);
  const bytes = await sharp(raw, { raw: { width: 2, height: 4, channels: 1 } }).withMetadata({ orientation: 6 }).jpeg({ quality: 100 }).toBuffer();
  const out = new Float32Array(8);
  await imageToTensor(bytes, spec, limits, out);
  // Rotating 90 degrees clockwise puts the bright bottom rows on the left.
  t.ok(out[0] > 200 && out[4] > 200, `left column bright (${out[0]}, ${out[4]})`);
  t.ok(out[3] < 55 && out[7] < 55, `right column dark (${out[3]}, ${out[7]})`);
});
