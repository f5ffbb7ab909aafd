/**
 * The HTTP routes: /classify, /healthz, /readyz, /models. Registered explicitly from app.ts.
 *
 * Fastify's content-type parsers are the one dispatch on a request's Content-Type: an image type
 * arrives as a Buffer, JSON as the validated object, multipart as a stream of parts;
 * classify-codec.ts reads whichever it was given, and /classify answers through the one inference
 * step (src/inference.ts).
 */
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { DETECTION_HEADER } from '../detect/http.js';
import { infer, type InferenceSteps } from '../inference.js';
import type { ModelState } from '../model-state.js';
import { IMAGE_TYPES } from '../preprocess/image.js';
import { classifyBatch, encodeClassifyResponse, parseTopK, readClassifyBody, type ClassifyBody } from './classify-codec.js';
import { clientOf } from './client.js';
import { checkJsonDepth } from './json-depth.js';
import { classifySchema, healthSchema, modelsSchema, readySchema } from './schemas.js';

export function registerRoutes(app: FastifyInstance, config: Config, state: ModelState,
  steps: Omit<InferenceSteps, 'ensemble'>): void {
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
    async (req, reply) => {
      const ensemble = state.ready();
      const { manifest } = ensemble;
      const k = parseTopK(req.query.topK, manifest.output.classes);
      const input = await readClassifyBody(req, config, manifest);
      const result = await infer({ ...steps, ensemble }, {
        client: clientOf(req), answer: reply.raw, log: req.log,
        batch: () => classifyBatch(input, manifest, config),
        encode: (probabilities) => encodeClassifyResponse(probabilities, manifest, k, input.kind === 'images' && input.single),
      });
      if (result.detection !== null) reply.header(DETECTION_HEADER, result.detection);
      req.answeredImages = result.n;
      return result.answer;
    });
}
