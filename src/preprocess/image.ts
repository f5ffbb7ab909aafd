/**
 * Image bytes -> model input, driven by the package's manifest (never by constants in code):
 * decode, EXIF-rotate, flatten alpha onto the background, convert to the model's channels, resize
 * by the manifest's policy, scale, normalise, and lay out as CHW float32.
 */
import sharp, { type Metadata, type OutputInfo } from 'sharp';
import { badRequest, HttpError, tooLarge, unsupportedMediaType } from '../errors.js';
import type { InputSpec } from '../ensemble/manifest.js';

export const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/webp', 'image/gif', 'image/tiff'] as const;
/** sharp's names for the formats above. */
const FORMATS = new Set(['png', 'jpeg', 'webp', 'gif', 'tiff']);

export interface PreprocessLimits {
  readonly maxInputPixels: number;
}

function decodeError(err: Error, what: string): HttpError {
  const msg = err.message;
  if (/pixel limit/i.test(msg)) return tooLarge('image_too_large', `${what}: decoded size exceeds the pixel limit`);
  if (/unsupported image format|Input buffer contains unsupported/i.test(msg)) {
    return badRequest('not_an_image', `${what}: the bytes are not a PNG, JPEG, WebP, GIF or TIFF image`);
  }
  if (/premature|truncat|end of|corrupt|unexpected end|read error|Invalid|bad/i.test(msg)) {
    return badRequest('truncated_image', `${what}: the image data is truncated or corrupt (${msg.split('\n')[0]})`);
  }
  return badRequest('bad_image', `${what}: cannot decode the image (${msg.split('\n')[0]})`);
}

/** Decode and pre-process one image into `out` (length C*H*W). `what` names the image in errors. */
export async function imageToTensor(bytes: Uint8Array, spec: InputSpec, limits: PreprocessLimits, out: Float32Array,
  what = 'image'): Promise<void> {
  if (bytes.length === 0) throw badRequest('empty_body', `${what}: no image bytes were sent`);
  const [c, h, w] = spec.shape;
  const options = { limitInputPixels: limits.maxInputPixels, failOn: 'truncated' as const, animated: false };
  let meta: Metadata;
  try {
    // The header alone (no pixels decoded), so the size check below can name the dimensions.
    meta = await sharp(bytes, { ...options, limitInputPixels: false }).metadata();
  } catch (err) {
    throw decodeError(err as Error, what);
  }
  if (!meta.format || !FORMATS.has(meta.format)) {
    throw unsupportedMediaType(`${what}: image format '${meta.format ?? 'unknown'}' is not accepted (png, jpeg, webp, gif, tiff)`);
  }
  if (!meta.width || !meta.height) throw badRequest('not_an_image', `${what}: the image has no size`);
  if (meta.width * meta.height > limits.maxInputPixels) {
    throw tooLarge('image_too_large',
      `${what}: ${meta.width}x${meta.height} = ${meta.width * meta.height} pixels exceeds the limit of ${limits.maxInputPixels}`);
  }
  const bg = spec.resize.background;
  const background = { r: bg, g: bg, b: bg, alpha: 1 };
  let pipeline = sharp(bytes, options).rotate().flatten({ background });
  pipeline = spec.channels === 'gray' ? pipeline.grayscale() : pipeline.toColourspace('srgb');
  // EXIF orientations 5-8 swap width and height.
  const swapped = (meta.orientation ?? 1) >= 5;
  const [srcW, srcH] = swapped ? [meta.height, meta.width] : [meta.width, meta.height];
  if (srcW !== w || srcH !== h) {
    pipeline = pipeline.resize(w, h, { fit: spec.resize.fit, kernel: spec.resize.kernel, background });
  }
  let raw: { data: Buffer; info: OutputInfo };
  try {
    raw = await pipeline.raw().toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw decodeError(err as Error, what);
  }
  const { data, info } = raw;
  if (info.width !== w || info.height !== h) {
    throw new Error(`pre-processing produced ${info.width}x${info.height}, expected ${w}x${h}`);
  }
  const stride = info.channels;
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
