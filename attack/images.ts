/**
 * Where the attacked images come from, always with their true labels:
 * - a folder of PNGs, labels from `labels.json` ({ "file.png": label }) or from the file name
 *   (`...label7.png`);
 * - the Fashion-MNIST test split (IDX files, gzip or not), read directly or written into such a
 *   folder by `writeFashionMnist`.
 * Images become pixel-space tensors by the pre-processing that docs/model-format.md publishes, driven
 * by the input contract the target reports (GET /models), so the attacker sees the pixels the model
 * sees without sharing code with the service.
 */
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import sharp from 'sharp';
import { AttackError, type InputSpec } from './client.js';

export interface LabeledImage {
  /** File name (or a synthetic name for dataset images), for the report. */
  readonly name: string;
  readonly label: number;
  /** Encoded image bytes (PNG). */
  readonly bytes: Buffer;
}

export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';
const TEST_IMAGES = 't10k-images-idx3-ubyte';
const TEST_LABELS = 't10k-labels-idx1-ubyte';

/** Read an IDX file, plain or gzip (by its magic bytes); checks the type and dimension count. */
export async function readIdx(file: string, expectDims: number): Promise<{ dims: number[]; data: Uint8Array }> {
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch (err) {
    throw new AttackError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) buf = gunzipSync(buf);
  if (buf.length < 4 || buf[0] !== 0 || buf[1] !== 0 || buf[2] !== 0x08 || buf[3] !== expectDims) {
    throw new AttackError(`${file}: not an unsigned-byte IDX file with ${expectDims} dimension(s)`);
  }
  const offset = 4 + 4 * expectDims;
  if (buf.length < offset) throw new AttackError(`${file}: the IDX header is truncated`);
  const dims = Array.from({ length: expectDims }, (_, k) => buf.readUInt32BE(4 + 4 * k));
  const size = dims.reduce((a, b) => a * b, 1);
  if (buf.length !== offset + size) {
    throw new AttackError(`${file}: ${buf.length - offset} data bytes, the header promises ${size}`);
  }
  return { dims, data: buf.subarray(offset) };
}

async function findIdx(dir: string, base: string): Promise<string> {
  const names = await readdir(dir).catch(() => {
    throw new AttackError(`--fmnist: cannot read the folder ${dir}`);
  });
  const hit = [`${base}.gz`, base].find((n) => names.includes(n));
  if (!hit) throw new AttackError(`--fmnist: ${dir} has neither ${base}.gz nor ${base}`);
  return path.join(dir, hit);
}

/** Test images [offset, offset + count) of Fashion-MNIST as gray PNGs with their labels. */
export async function fashionMnistImages(dir: string, count: number, offset = 0): Promise<LabeledImage[]> {
  const images = await readIdx(await findIdx(dir, TEST_IMAGES), 3);
  const labels = await readIdx(await findIdx(dir, TEST_LABELS), 1);
  const [n, rows, cols] = images.dims;
  if (labels.dims[0] !== n) throw new AttackError(`--fmnist: ${n} images but ${labels.dims[0]} labels in ${dir}`);
  if (offset + count > n) {
    throw new AttackError(`--images/--offset: images ${offset}..${offset + count - 1} requested; the test split has ${n} (0..${n - 1})`);
  }
  const size = rows * cols;
  return Promise.all(Array.from({ length: count }, async (_, k) => {
    const index = offset + k;
    const label = labels.data[index];
    const raw = Buffer.from(images.data.subarray(index * size, (index + 1) * size));
    const bytes = await sharp(raw, { raw: { width: cols, height: rows, channels: 1 } }).toColourspace('b-w').png().toBuffer();
    return { name: `fmnist-test-${String(index).padStart(5, '0')}-label${label}.png`, label, bytes };
  }));
}

/** Write test images into a folder of PNGs plus labels.json; returns the file names. */
export async function writeFashionMnist(dir: string, outDir: string, count: number, offset = 0): Promise<string[]> {
  const images = await fashionMnistImages(dir, count, offset);
  await mkdir(outDir, { recursive: true });
  await Promise.all(images.map((img) => writeFile(path.join(outDir, img.name), img.bytes)));
  const labels = Object.fromEntries(images.map((img) => [img.name, img.label]));
  await writeFile(path.join(outDir, 'labels.json'), `${JSON.stringify(labels, null, 2)}\n`);
  return images.map((img) => img.name);
}

const byName = new Intl.Collator('en', { numeric: true }).compare;

/** The first `limit` PNGs of a folder in natural name order, with labels. */
export async function readImageDir(dir: string, limit: number): Promise<LabeledImage[]> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.toLowerCase().endsWith('.png')).sort(byName);
  } catch {
    throw new AttackError(`--images-dir: cannot read the folder ${dir}`);
  }
  if (names.length === 0) throw new AttackError(`--images-dir: ${dir} holds no .png files`);
  let labels: Record<string, unknown> = {};
  const labelsFile = path.join(dir, 'labels.json');
  const text = await readFile(labelsFile, 'utf8').catch(() => null);
  if (text !== null) {
    try {
      labels = JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new AttackError(`${labelsFile}: not valid JSON (expected { "file.png": label, ... })`);
    }
  }
  return Promise.all(names.slice(0, limit).map(async (name) => {
    const fromJson = labels[name];
    const fromName = /label[-_]?(\d+)\.png$/i.exec(name)?.[1];
    const label = fromJson !== undefined ? fromJson : fromName !== undefined ? Number(fromName) : undefined;
    if (typeof label !== 'number' || !Number.isInteger(label) || label < 0) {
      throw new AttackError(`${path.join(dir, name)}: no label (add it to labels.json or end the name with label<N>.png)`);
    }
    return { name, label, bytes: await readFile(path.join(dir, name)) };
  }));
}

/** Larger images are refused: the attacker reads its own files, but a bomb should not stall a run. */
const MAX_INPUT_PIXELS = 4096 * 4096;

/**
 * The image as the model sees it, in pixel space (pixel * scale, CHW, before mean/std), by the
 * published pre-processing: decode, EXIF-rotate, flatten alpha onto the background, convert to the
 * model's channels, resize by the contract's fit and kernel (a no-op at the model's size).
 */
export async function toPixels(image: LabeledImage, spec: InputSpec): Promise<Float64Array> {
  const [c, h, w] = spec.shape;
  const bg = spec.resize.background;
  const background = { r: bg, g: bg, b: bg, alpha: 1 };
  const pipeline = sharp(image.bytes, { limitInputPixels: MAX_INPUT_PIXELS, failOn: 'truncated', animated: false })
    .rotate().flatten({ background });
  (spec.channels === 'gray' ? pipeline.grayscale() : pipeline.toColourspace('srgb'))
    .resize(w, h, { fit: spec.resize.fit, kernel: spec.resize.kernel, background });
  let raw: { data: Buffer; info: { width: number; height: number; channels: number } };
  try {
    raw = await pipeline.raw().toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw new AttackError(`${image.name}: cannot decode the image (${(err as Error).message.split('\n')[0]})`);
  }
  const { data, info } = raw;
  if (info.width !== w || info.height !== h || info.channels < c) {
    throw new AttackError(`${image.name}: decoded to ${info.width}x${info.height}x${info.channels}, the model takes ${w}x${h}x${c}`);
  }
  const out = new Float64Array(c * h * w);
  for (let ch = 0; ch < c; ch++) {
    for (let p = 0; p < h * w; p++) out[ch * h * w + p] = Math.fround(data[p * info.channels + ch] * spec.scale);
  }
  return out;
}
