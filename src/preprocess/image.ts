/**
 * Image bytes -> model input, driven by the package's manifest (never by constants in code):
 * decode, EXIF-rotate, flatten alpha onto the background, convert to the model's channels, resize
 * by the manifest's policy, scale, normalise, and lay out as CHW float32.
 */
import sharp, { type Metadata, type OutputInfo } from 'sharp';
import { InputError } from '../errors.js';
import type { InputSpec } from '../ensemble/manifest.js';
import { decodePlainPng } from './plain-png.js';

export const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/webp', 'image/gif', 'image/tiff'] as const;

export interface PreprocessLimits {
  readonly maxInputPixels: number;
}

/** The accepted format these bytes start like, by their magic number, or null. */
function sniffFormat(b: Uint8Array): string | null {
  const ascii = (from: number, to: number) => String.fromCharCode(...b.subarray(from, to));
  if (b.length >= 8 && b[0] === 0x89 && ascii(1, 8) === 'PNG\r\n\x1a\n') return 'PNG';
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'JPEG';
  if (b.length >= 6 && ascii(0, 4) === 'GIF8') return 'GIF';
  if (b.length >= 12 && ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'WebP';
  if (b.length >= 4 && (ascii(0, 4) === 'II*\0' || ascii(0, 4) === 'MM\0*')) return 'TIFF';
  return null;
}

/** Formats that are not accepted, named by their signature (for the error message only). */
const REFUSED_SIGNATURES: readonly [string, (b: Uint8Array, ascii: (from: number, to: number) => string) => boolean][] = [
  ['gzip-compressed data (SVGZ?)', (b) => b[0] === 0x1f && b[1] === 0x8b],
  ['svg', (_b, ascii) => /^(\ufeff|\xef\xbb\xbf)?\s*<(\?xml|svg|!DOCTYPE svg)/i.test(ascii(0, 64))],
  ['pdf', (_b, ascii) => ascii(0, 5) === '%PDF-'],
  ['bmp', (_b, ascii) => ascii(0, 2) === 'BM'],
  ['heif', (_b, ascii) => ascii(4, 8) === 'ftyp' && /^(hei[cfsmx]|hev[cx]|mif1|msf1|avi[fs])$/.test(ascii(8, 12))],
  ['jp2', (b, ascii) => ascii(4, 8) === 'jP  ' || (b[0] === 0xff && b[1] === 0x4f && b[2] === 0xff && b[3] === 0x51)],
  ['jxl', (b, ascii) => (b[0] === 0xff && b[1] === 0x0a) || ascii(4, 8) === 'JXL '],
  ['fits', (_b, ascii) => ascii(0, 9) === 'SIMPLE  ='],
  ['psd', (_b, ascii) => ascii(0, 4) === '8BPS'],
  ['ico', (b) => b[0] === 0 && b[1] === 0 && b[2] === 1 && b[3] === 0],
  ['ppm', (_b, ascii) => /^P[1-7]\s/.test(ascii(0, 3))],
];

/**
 * The error for bytes no accepted signature admits, naming the format by its signature alone.
 * Nothing but the signature check may hand bytes to sharp: libvips would decode whatever it
 * recognises to name it, and an SVGZ of 68 KB inflates and parses to gigabytes first.
 */
function unaccepted(b: Uint8Array, what: string): InputError {
  const ascii = (from: number, to: number) => String.fromCharCode(...b.subarray(from, Math.min(to, b.length)));
  const named = REFUSED_SIGNATURES.find(([, test]) => test(b, ascii));
  return named
    ? new InputError('unsupported_media_type', `${what}: image format '${named[0]}' is not accepted (png, jpeg, webp, gif, tiff)`)
    : new InputError('not_an_image', `${what}: the bytes are not a PNG, JPEG, WebP, GIF or TIFF image`);
}

/** Turn a failed decode of an admitted format into an InputError naming the problem; reads the
 * header only (no pixels decoded). The decoder's own words go to the error's cause (logged), never
 * into the message. */
async function explainDecodeFailure(bytes: Uint8Array, format: string, err: Error, limits: PreprocessLimits,
  what: string): Promise<InputError> {
  let meta: Metadata | null;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch {
    meta = null;
  }
  const pixels = (meta?.width ?? 0) * (meta?.height ?? 0);
  if (meta !== null && (pixels > limits.maxInputPixels || /pixel limit/i.test(err.message))) {
    return new InputError('image_too_large',
      `${what}: ${meta.width}x${meta.height} = ${pixels} pixels exceeds the limit of ${limits.maxInputPixels}`);
  }
  return new InputError('truncated_image', `${what}: the ${format} data is truncated or corrupt`, { cause: err });
}

/**
 * Throw too_many_pixels when `images` together decode to more than `maxRequestPixels` pixels
 * (width * height each, from their headers; nothing is decoded), so that one request cannot hold
 * the decoder pool with many images each just under the per-image limit. Bytes no accepted
 * signature admits are refused here, before sharp sees them. `what(i)` names image i.
 */
export async function checkRequestPixels(images: readonly Uint8Array[], maxRequestPixels: number,
  what: (i: number) => string): Promise<void> {
  const pixels = await Promise.all(images.map(async (bytes, i) => {
    if (bytes.length === 0) throw new InputError('empty_body', `${what(i)}: no image bytes were sent`);
    const format = sniffFormat(bytes);
    if (!format) throw unaccepted(bytes, what(i));
    if (format === 'PNG' && bytes.length >= 24) {
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      return view.getUint32(16) * view.getUint32(20); // IHDR, the first chunk
    }
    const meta = await sharp(bytes, { limitInputPixels: false }).metadata().catch(() => null);
    return (meta?.width ?? 0) * (meta?.height ?? 0); // an unreadable header fails in its decode
  }));
  const total = pixels.reduce((a, b) => a + b, 0);
  if (total > maxRequestPixels) {
    throw new InputError('too_many_pixels', `the ${images.length} images decode to ${total} pixels together; `
      + `the limit per request is ${maxRequestPixels} (--max-request-pixels)`);
  }
}

/** Decode and pre-process one image into `out` (length C*H*W). `what` names the image in errors. */
export async function imageToTensor(bytes: Uint8Array, spec: InputSpec, limits: PreprocessLimits, out: Float32Array,
  what = 'image'): Promise<void> {
  if (bytes.length === 0) throw new InputError('empty_body', `${what}: no image bytes were sent`);
  // The magic number decides the format, before any decoder sees the bytes (sharp would also
  // decode SVG, HEIF, ...; only these are accepted).
  const format = sniffFormat(bytes);
  if (!format) throw unaccepted(bytes, what);
  const [c, h, w] = spec.shape;
  const plain = decodePlainPng(bytes, w, h, spec.channels === 'gray' ? 1 : 3, what);
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
  let raw: { data: Buffer; info: OutputInfo };
  try {
    raw = await pipeline.raw().toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw await explainDecodeFailure(bytes, format, err as Error, limits, what);
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
