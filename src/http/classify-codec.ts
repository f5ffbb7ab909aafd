/**
 * /classify bodies, the counterpart of v2-codec.ts: every body kind in, one batch out, and the
 * answer out. A body is
 *   - an image (one of IMAGE_TYPES, raw): answered as one image;
 *   - multipart/form-data: every file part an image;
 *   - JSON `{ "images": [base64, ...] }`, or `{ "tensors": [[C][H][W] or [1][C][H][W], ...] }`.
 * Reading the body (`readClassifyBody`) comes before admission; decoding its images
 * (`classifyBatch`) runs inside the admission slot (src/inference.ts).
 */
import type { FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import type { Manifest } from '../ensemble/manifest.js';
import { InputError, tooManyImages } from '../errors.js';
import type { Batch } from '../inference.js';
import { checkRequestPixels, IMAGE_TYPES, imageToTensor, type PreprocessLimits } from '../preprocess/image.js';
import { tensorsToBatch } from '../preprocess/tensor.js';
import { multipartError } from './multipart.js';
import { topClasses } from './probabilities.js';

export type ClassifyBody = Buffer | { images?: string[]; tensors?: unknown[] } | undefined;

/** A received /classify body: encoded images (decoded inside the admission slot), or tensors. */
export type ClassifyInput =
  | { readonly kind: 'images'; readonly images: readonly Buffer[]; readonly single: boolean }
  | { readonly kind: 'tensors'; readonly batch: Batch };

interface Prediction {
  index: number;
  label: string;
  probability: number;
}

/** The one bound on images per request, whatever the body kind. */
function checkCount(count: number, maxImages: number): void {
  if (count > maxImages) throw tooManyImages(maxImages, count);
}

/** Read every file of a multipart body, bounded in count and total bytes. */
async function multipartImages(req: FastifyRequest, config: Config): Promise<Buffer[]> {
  const files: Buffer[] = [];
  let total = 0;
  try {
    for await (const part of req.parts()) {
      if (part.type !== 'file') continue;
      // Before the file is read: its count alone is over the limit.
      if (files.length >= config.maxImagesPerRequest) throw tooManyImages(config.maxImagesPerRequest);
      const bytes = await part.toBuffer();
      total += bytes.length;
      if (total > config.maxBodyBytes) {
        throw new InputError('body_too_large', `multipart body exceeds ${config.maxBodyBytes} bytes`);
      }
      files.push(bytes);
    }
  } catch (err) {
    throw multipartError(err as Error, config.maxImagesPerRequest);
  }
  if (files.length === 0) throw new InputError('empty_body', 'the multipart body holds no image file');
  return files;
}

/** Read a /classify body whatever its kind: after this the body is complete (multipart included). */
export async function readClassifyBody(req: FastifyRequest<{ Body: ClassifyBody }>, config: Config, manifest: Manifest): Promise<ClassifyInput> {
  const body = req.body;
  if (body === undefined && !req.isMultipart()) {
    // Fastify parses nothing when a request has neither a body nor a Content-Type.
    throw new InputError('empty_body', `the request has no body; send an image (${IMAGE_TYPES.join(', ')}), multipart/form-data or application/json`);
  }
  if (Buffer.isBuffer(body)) return { kind: 'images', images: [body], single: true };
  if (req.isMultipart()) {
    const images = await multipartImages(req, config);
    req.bodyReceived();
    return { kind: 'images', images, single: false };
  }
  if (body?.tensors) {
    checkCount(body.tensors.length, config.maxImagesPerRequest);
    const data = tensorsToBatch(body.tensors, manifest.input, (i) => `tensors[${i}]`);
    return { kind: 'tensors', batch: { data, n: body.tensors.length } };
  }
  const encoded = body?.images ?? [];
  checkCount(encoded.length, config.maxImagesPerRequest);
  const images = encoded.map((b64, i) => {
    if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(b64)) throw new InputError('bad_base64', `images[${i}]: not valid base64`);
    return Buffer.from(b64, 'base64');
  });
  return { kind: 'images', images, single: false };
}

/** The batch of a received body: images decoded and pre-processed by the manifest. */
export async function classifyBatch(input: ClassifyInput, manifest: Manifest, limits: PreprocessLimits & { maxRequestPixels: number }): Promise<Batch> {
  if (input.kind === 'tensors') return input.batch;
  const { images, single } = input;
  const [c, h, w] = manifest.input.shape;
  const size = c * h * w;
  // A single image is bounded by --max-input-pixels alone; several together by their headers first.
  if (images.length > 1) await checkRequestPixels(images, limits.maxRequestPixels, (i) => `images[${i}]`);
  const data = new Float32Array(images.length * size);
  await Promise.all(images.map((bytes, i) =>
    imageToTensor(bytes, manifest.input, limits, data.subarray(i * size, (i + 1) * size), single ? 'image' : `images[${i}]`)));
  return { data, n: images.length };
}

/** The `topK` query parameter: 1 to the class count, or "all"; 5 (at most the class count) when absent. */
export function parseTopK(raw: string | undefined, classes: number): number {
  if (raw === undefined) return Math.min(5, classes);
  if (raw === 'all') return classes;
  const k = Number(raw);
  if (k < 1 || k > classes) throw new InputError('bad_top_k', `topK: ${raw} is out of range [1, ${classes}] (or "all")`);
  return k;
}

/** The answer: the top k classes of each image; a single raw image is answered without `results`. */
export function encodeClassifyResponse(probabilities: readonly Float32Array[], manifest: Manifest, k: number, single: boolean) {
  const predictionsOf = (p: Float32Array): Prediction[] =>
    topClasses(p, k).map((index) => ({ index, label: manifest.labels[index], probability: p[index] }));
  return single
    ? { model: manifest.name, predictions: predictionsOf(probabilities[0]) }
    : { model: manifest.name, results: probabilities.map((p) => ({ predictions: predictionsOf(p) })) };
}
