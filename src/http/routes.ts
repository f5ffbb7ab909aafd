/**
 * The HTTP routes: /classify, /healthz, /readyz, /models. Registered explicitly from app.ts.
 *
 * Fastify's content-type parsers are the one dispatch on a request's Content-Type: an image type
 * arrives as a Buffer, JSON as the validated object, multipart as a stream of parts; the handler
 * reads whichever it was given.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import { InputError } from '../errors.js';
import type { ModelState } from '../model-state.js';
import { checkRequestPixels, IMAGE_TYPES, imageToTensor, tensorsToBatch } from '../preprocess/image.js';
import type { Admission } from './admission.js';
import { checkJsonDepth } from './json-depth.js';
import { checkProbabilities, topClasses } from './probabilities.js';
import { classifySchema, healthSchema, modelsSchema, readySchema } from './schemas.js';
import { multipartError } from './multipart.js';

interface Prediction {
  index: number;
  label: string;
  probability: number;
}

function topK(probs: Float32Array, labels: readonly string[], k: number): Prediction[] {
  return topClasses(probs, k).map((index) => ({ index, label: labels[index], probability: probs[index] }));
}

function parseTopK(raw: string | undefined, classes: number): number {
  if (raw === undefined) return Math.min(5, classes);
  if (raw === 'all') return classes;
  const k = Number(raw);
  if (k < 1 || k > classes) throw new InputError('bad_top_k', `topK: ${raw} is out of range [1, ${classes}] (or "all")`);
  return k;
}

/** Read every file of a multipart body, bounded in count and total bytes. */
async function multipartImages(req: FastifyRequest, config: Config): Promise<Buffer[]> {
  const files: Buffer[] = [];
  let total = 0;
  try {
    for await (const part of req.parts()) {
      if (part.type !== 'file') continue;
      if (files.length >= config.maxImagesPerRequest) {
        throw new InputError('too_many_images', `more than ${config.maxImagesPerRequest} images in one request`);
      }
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

type ClassifyBody = Buffer | { images?: string[]; tensors?: unknown[] } | undefined;

export function registerRoutes(app: FastifyInstance, config: Config, state: ModelState, admission: Admission): void {
  // Only what classifySchema documents: Fastify answers 415 for any other type (text/plain too).
  app.removeContentTypeParser('text/plain');
  // Fastify's own (prototype-poisoning safe) JSON parser, after a bound on nesting (json-depth.ts).
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: config.maxBodyBytes }, (req, body, done) => {
    try {
      checkJsonDepth(body as string);
    } catch (err) {
      return done(err as Error);
    }
    parseJson(req, body as string, done);
  });
  for (const type of IMAGE_TYPES) {
    app.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit: config.maxBodyBytes }, (_req, body, done) => {
      done(null, body);
    });
  }

  app.get('/healthz', { schema: healthSchema, config: { public: true } }, async () => ({ status: 'ok' }));

  app.get('/readyz', { schema: readySchema, config: { public: true } }, async () => {
    state.serving();
    return { status: 'ready' };
  });

  app.get('/models', { schema: modelsSchema }, async () => {
    const ensemble = state.ready();
    const m = ensemble.manifest;
    const s = ensemble.sampling;
    const memberParameters = m.members.reduce((sum, mem) => sum + mem.parameters, 0);
    return {
      name: m.name, version: m.version, kind: m.kind, description: m.description,
      members: m.members.length,
      parameters: m.kind === 'ps-red' ? m.hypernet!.parameters : memberParameters,
      memberParameters,
      input: m.input, labels: m.labels, provider: ensemble.provider,
      sampling: s.mode === 'fixed' ? `fixed:${s.member}` : s.mode,
      batching: { maxBatchImages: config.maxBatchImages, queueDelayUs: config.queueDelayUs },
      evaluation: m.evaluation,
      benchmark: m.benchmark,
    };
  });

  app.post<{ Querystring: { topK?: string }; Body: ClassifyBody }>('/classify', { schema: classifySchema, config: { inference: true } },
    async (req, reply: FastifyReply) => {
      const ensemble = state.ready();
      const { manifest } = ensemble;
      const k = parseTopK(req.query.topK, manifest.output.classes);
      const limits = { maxInputPixels: config.maxInputPixels };
      const body = req.body;
      const size = ensemble.imageSize;

      let images: Buffer[] | null = null;
      let data: Float32Array | null = null;
      let single = false;
      if (body === undefined && !req.isMultipart()) {
        // Fastify parses nothing when a request has neither a body nor a Content-Type.
        throw new InputError('empty_body', `the request has no body; send an image (${IMAGE_TYPES.join(', ')}), multipart/form-data or application/json`);
      }
      if (Buffer.isBuffer(body)) {
        images = [body];
        single = true;
      } else if (req.isMultipart()) {
        images = await multipartImages(req, config);
        req.bodyReceived();
      } else if (body?.tensors) {
        if (body.tensors.length > config.maxImagesPerRequest) {
          throw new InputError('too_many_images', `${body.tensors.length} images in one request; the limit is ${config.maxImagesPerRequest}`);
        }
        data = tensorsToBatch(body.tensors, manifest.input);
      } else {
        const encoded = body?.images ?? [];
        if (encoded.length > config.maxImagesPerRequest) {
          throw new InputError('too_many_images', `${encoded.length} images in one request; the limit is ${config.maxImagesPerRequest}`);
        }
        images = encoded.map((b64, i) => {
          if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(b64)) throw new InputError('bad_base64', `images[${i}]: not valid base64`);
          return Buffer.from(b64, 'base64');
        });
      }
      // The body is complete: from here the request holds one of --max-queue slots until answered.
      admission.enter(reply);
      if (images) {
        // A single image is bounded by --max-input-pixels alone; several together by their headers first.
        if (images.length > 1) await checkRequestPixels(images, config.maxRequestPixels, (i) => `images[${i}]`);
        const batch = new Float32Array(images.length * size);
        await Promise.all(images.map((bytes, i) =>
          imageToTensor(bytes, manifest.input, limits, batch.subarray(i * size, (i + 1) * size), single ? 'image' : `images[${i}]`)));
        data = batch;
      }
      const n = data!.length / size;
      req.server.screenQueries(req, manifest.input, data!, n);
      const probs = checkProbabilities(await ensemble.classify(data!, n));
      const results = probs.map((p) => ({ predictions: topK(p, manifest.labels, k) }));
      req.answeredImages = n;
      return single ? { model: manifest.name, predictions: results[0].predictions } : { model: manifest.name, results };
    });
}
