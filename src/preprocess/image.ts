/**
 * Image bytes -> model input, driven by the package's manifest (never by constants in code):
 * decode, EXIF-rotate, flatten alpha onto the background, convert to the model's channels, resize
 * by the manifest's policy, scale, normalise, and lay out as CHW float32.
 */
import sharp, { type Metadata, type OutputInfo } from 'sharp';
import { badRequest, HttpError, tooLarge, unsupportedMediaType } from '../errors.js';
import type { InputSpec } from '../ensemble/manifest.js';
import { decodePlainPng } from './plain-png.js';

export const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/webp', 'image/gif', 'image/tiff'] as const;
/** sharp's names for the formats above. */
const FORMATS = new Set(['png', 'jpeg', 'webp', 'gif', 'tiff']);

export interface PreprocessLimits {
  readonly maxInputPixels: number;
}

/** The accepted format these bytes start like, by their magic number, or null. */
function sniffFormat(b: Uint8Array): string | null {
  const ascii = (from: number, to: number) => String.fromCharCode(...b.subarray(from, to));
  if (b.length >= 8 && b[0] === 0x89 && ascii(1, 4) === 'PNG') return 'PNG';
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'JPEG';
  if (b.length >= 6 && ascii(0, 4) === 'GIF8') return 'GIF';
  if (b.length >= 12 && ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'WebP';
  if (b.length >= 4 && (ascii(0, 4) === 'II*\0' || ascii(0, 4) === 'MM\0*')) return 'TIFF';
  return null;
}

/** Turn a failed decode into a 4xx naming the problem; reads the header only (no pixels decoded). */
async function explainDecodeFailure(bytes: Uint8Array, err: Error, limits: PreprocessLimits, what: string): Promise<HttpError> {
  let meta: Metadata | null;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch {
    meta = null;
  }
  if (meta?.format && !FORMATS.has(meta.format)) {
    return unsupportedMediaType(`${what}: image format '${meta.format}' is not accepted (png, jpeg, webp, gif, tiff)`);
  }
  if (meta === null || !meta.format || !sniffFormat(bytes)) {
    return sniffFormat(bytes)
      ? badRequest('truncated_image', `${what}: the ${sniffFormat(bytes)} data is truncated or corrupt`)
      : badRequest('not_an_image', `${what}: the bytes are not a PNG, JPEG, WebP, GIF or TIFF image`);
  }
  const pixels = (meta.width ?? 0) * (meta.height ?? 0);
  if (pixels > limits.maxInputPixels || /pixel limit/i.test(err.message)) {
    return tooLarge('image_too_large',
      `${what}: ${meta.width}x${meta.height} = ${pixels} pixels exceeds the limit of ${limits.maxInputPixels}`);
  }
  return badRequest('truncated_image', `${what}: the image data is truncated or corrupt (${err.message.split('\n')[0]})`);
}

/** Decode and pre-process one image into `out` (length C*H*W). `what` names the image in errors. */
export async function imageToTensor(bytes: Uint8Array, spec: InputSpec, limits: PreprocessLimits, out: Float32Array,
  what = 'image'): Promise<void> {
  if (bytes.length === 0) throw badRequest('empty_body', `${what}: no image bytes were sent`);
  const [c, h, w] = spec.shape;
  const plain = decodePlainPng(bytes, w, h, spec.channels === 'gray' ? 1 : 3);
  if (plain !== null) {
    normalise(plain, c, spec, out);
    return;
  }
  const bg = spec.resize.background;
  const background = { r: bg, g: bg, b: bg, alpha: 1 };
  const options = { limitInputPixels: limits.maxInputPixels, failOn: 'truncated' as const, animated: false };
  // One decode pass. Resizing to the size an image already has leaves its pixels unchanged (the
  // golden tests hold this to 1e-6). The pixel limit stops decompression bombs before decoding.
  const pipeline = sharp(bytes, options).rotate().flatten({ background });
  (spec.channels === 'gray' ? pipeline.grayscale() : pipeline.toColourspace('srgb'))
    .resize(w, h, { fit: spec.resize.fit, kernel: spec.resize.kernel, background });
  // The magic number decides the format (sharp would also decode SVG, HEIF, ...; only these are accepted).
  const format = sniffFormat(bytes);
  if (!format) throw await explainDecodeFailure(bytes, new Error('unknown format'), limits, what);
  let raw: { data: Buffer; info: OutputInfo };
  try {
    raw = await pipeline.raw().toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw await explainDecodeFailure(bytes, err as Error, limits, what);
  }
  const { data, info } = raw;
  if (info.width !== w || info.height !== h) {
    throw new Error(`pre-processing produced ${info.width}x${info.height}, expected ${w}x${h}`);
  }
  normalise(data, info.channels, spec, out);
}

/** HWC 8-bit samples, `stride` per pixel -> scaled, normalised CHW float32 in `out`. */
function normalise(data: Uint8Array, stride: number, spec: InputSpec, out: Float32Array): void {
  const [c, h, w] = spec.shape;
  const { scale, mean, std } = spec;
  for (let ch = 0; ch < c; ch++) {
    const m = mean[ch];
    const s = std[ch];
    const plane = ch * h * w;
    for (let p = 0; p < h * w; p++) out[plane + p] = (data[p * stride + ch] * scale - m) / s;
  }
}

export interface TensorProblem {
  readonly index: number;
  readonly message: string;
}

/** Check JSON tensors against [C, H, W] (or [1, C, H, W]) and copy them into one NCHW buffer. */
export function tensorsToBatch(tensors: readonly unknown[], spec: InputSpec): Float32Array {
  const [c, h, w] = spec.shape;
  const size = c * h * w;
  const out = new Float32Array(tensors.length * size);
  tensors.forEach((t, i) => {
    const flat: unknown[] = [];
    const shape: number[] = [];
    const walk = (v: unknown, depth: number): void => {
      if (depth > 4) throw badRequest('bad_tensor', `tensors[${i}]: nested deeper than [1, ${c}, ${h}, ${w}]`);
      if (Array.isArray(v)) {
        if (shape[depth] === undefined) shape[depth] = v.length;
        else if (shape[depth] !== v.length) throw badRequest('bad_tensor', `tensors[${i}]: ragged nested arrays`);
        for (const x of v) walk(x, depth + 1);
      } else {
        flat.push(v);
      }
    };
    walk(t, 0);
    const expected = [c, h, w];
    const ok = (shape.length === 3 && shape.every((d, k) => d === expected[k]))
      || (shape.length === 4 && shape[0] === 1 && shape.slice(1).every((d, k) => d === expected[k]));
    if (!ok || flat.length !== size) {
      throw badRequest('bad_tensor', `tensors[${i}]: shape [${shape.join(', ')}] does not match the model input [${expected.join(', ')}]`);
    }
    for (let k = 0; k < size; k++) {
      const v = flat[k];
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        throw badRequest('bad_tensor', `tensors[${i}]: element ${k} is ${JSON.stringify(v)}; every element must be a finite number`);
      }
      out[i * size + k] = v;
    }
  });
  return out;
}
