/**
 * The HTTP routes: /classify, /healthz, /readyz, /models. Registered explicitly from app.ts.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import type { Ensemble } from '../ensemble/ensemble.js';
import { badRequest, HttpError, tooLarge, unsupportedMediaType } from '../errors.js';
import { IMAGE_TYPES, imageToTensor, tensorsToBatch } from '../preprocess/image.js';
import { classifySchema, healthSchema, modelsSchema, readySchema } from './schemas.js';

/** Where the model is in its life: routes read it, app.ts sets it once loading ends. */
export interface ModelState {
  ensemble: Ensemble | null;
  failure: string | null;
  /** Set on SIGTERM: readiness turns 503 so load balancers stop sending; in-flight work finishes. */
  draining: boolean;
}

interface Prediction {
  index: number;
  label: string;
  probability: number;
}

function topK(probs: Float32Array, labels: readonly string[], k: number): Prediction[] {
  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b);
  return order.slice(0, k).map((index) => ({ index, label: labels[index], probability: probs[index] }));
}

function parseTopK(raw: string | undefined, classes: number): number {
  if (raw === undefined) return Math.min(5, classes);
  if (raw === 'all') return classes;
  const k = Number(raw);
  if (k < 1 || k > classes) throw badRequest('bad_top_k', `topK: ${raw} is out of range [1, ${classes}] (or "all")`);
  return k;
}

/** The loaded model, or 503 not_ready (with Retry-After) while it loads or after it failed. */
export function requireReady(state: ModelState): Ensemble {
  if (state.ensemble) return state.ensemble;
  throw new HttpError(503, 'not_ready', state.failure ? 'the model failed to load' : 'the model is still loading',
    { 'retry-after': '1' });
}

/** Readiness: the model is loaded and the server is not draining. */
export function requireServing(state: ModelState): Ensemble {
  const ensemble = requireReady(state);
  if (state.draining) throw new HttpError(503, 'shutting_down', 'the server is draining before it stops', { 'retry-after': '1' });
  return ensemble;
}

/** Read every file of a multipart body, bounded in count and total bytes. */
async function multipartImages(req: FastifyRequest, config: Config): Promise<Buffer[]> {
  const files: Buffer[] = [];
  let total = 0;
  for await (const part of req.parts()) {
    if (part.type !== 'file') continue;
    if (files.length >= config.maxImagesPerRequest) {
      throw badRequest('too_many_images', `more than ${config.maxImagesPerRequest} images in one request`);
    }
    const bytes = await part.toBuffer();
    total += bytes.length;
    if (total > config.maxBodyBytes) {
      throw tooLarge('body_too_large', `multipart body exceeds ${config.maxBodyBytes} bytes`);
    }
    files.push(bytes);
  }
  if (files.length === 0) throw badRequest('empty_body', 'the multipart body holds no image file');
  return files;
}

export function registerRoutes(app: FastifyInstance, config: Config, state: ModelState): void {
  for (const type of IMAGE_TYPES) {
    app.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit: config.maxBodyBytes }, (_req, body, done) => {
      done(null, body);
    });
  }

  app.get('/healthz', { schema: healthSchema, config: { public: true } }, async () => ({ status: 'ok' }));

  app.get('/readyz', { schema: readySchema, config: { public: true } }, async () => {
    requireServing(state);
    return { status: 'ready' };
  });

  app.get('/models', { schema: modelsSchema }, async () => {
    const ensemble = requireReady(state);
    const m = ensemble.manifest;
    const s = ensemble.sampling;
    return {
      name: m.name, version: m.version, kind: m.kind, description: m.description,
      members: m.members.length,
      parameters: m.members.reduce((sum, mem) => sum + mem.parameters, 0),
      input: m.input, labels: m.labels, provider: ensemble.provider,
      sampling: s.mode === 'fixed' ? `fixed:${s.member}` : s.mode,
      batching: { maxBatchImages: config.maxBatchImages, queueDelayUs: config.queueDelayUs },
      evaluation: m.evaluation,
    };
  });

  app.post<{ Querystring: { topK?: string }; Body: unknown }>('/classify', { schema: classifySchema },
    async (req) => {
      const ensemble = requireReady(state);
      const { manifest } = ensemble;
      const k = parseTopK(req.query.topK, manifest.output.classes);
      const contentType = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
      const limits = { maxInputPixels: config.maxInputPixels };

      let data: Float32Array;
      let n: number;
      let single = false;
      if ((IMAGE_TYPES as readonly string[]).includes(contentType)) {
        const body = req.body as Buffer | undefined;
        data = new Float32Array(ensemble.imageSize);
        await imageToTensor(body ?? Buffer.alloc(0), manifest.input, limits, data);
        n = 1;
        single = true;
      } else {
        let images: Buffer[] | null = null;
        if (contentType === 'multipart/form-data') {
          images = await multipartImages(req, config);
        } else if (contentType === 'application/json') {
          const body = req.body as { images?: string[]; tensors?: unknown[] };
          const count = (body.images ?? body.tensors ?? []).length;
          if (count > config.maxImagesPerRequest) {
            throw badRequest('too_many_images', `${count} images in one request; the limit is ${config.maxImagesPerRequest}`);
          }
          if (body.tensors) {
            data = tensorsToBatch(body.tensors, manifest.input);
            n = body.tensors.length;
          } else {
            images = (body.images ?? []).map((b64, i) => {
              if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(b64)) throw badRequest('bad_base64', `images[${i}]: not valid base64`);
              return Buffer.from(b64, 'base64');
            });
          }
        } else {
          throw unsupportedMediaType(`Content-Type '${contentType || '(none)'}' is not accepted; send an image `
            + `(${IMAGE_TYPES.join(', ')}), multipart/form-data or application/json`);
        }
        if (images) {
          n = images.length;
          data = new Float32Array(n * ensemble.imageSize);
          const size = ensemble.imageSize;
          await Promise.all(images.map((bytes, i) =>
            imageToTensor(bytes, manifest.input, limits, data.subarray(i * size, (i + 1) * size), `images[${i}]`)));
        }
      }
      req.server.screenQueries(req, manifest.input, data!, n!);
      const probs = await ensemble.classify(data!, n!);
      const results = probs.map((p) => ({ predictions: topK(p, manifest.labels, k) }));
      return single ? { model: manifest.name, predictions: results[0].predictions } : { model: manifest.name, results };
    });
}
