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
import type { Detection } from '../detect/http.js';
import type { Ensemble } from '../ensemble/ensemble.js';
import { infer } from '../inference.js';
import type { ModelRepository } from '../repository.js';
import type { Admissions } from './admission.js';
import { IMAGE_TYPES } from '../preprocess/image.js';
import { classifyBatch, encodeClassifyResponse, parseTopK, readClassifyBody, type ClassifyBody } from './classify-codec.js';
import { clientOf } from './client.js';
import { boundedJsonParser } from './json-body.js';
import { classifySchema, healthSchema, modelsSchema, readySchema } from './schemas.js';

export function registerRoutes(app: FastifyInstance, config: Config, repository: ModelRepository,
  steps: { readonly admissions: Admissions; readonly detection: Detection }): void {
  // Only what classifySchema documents: Fastify answers 415 for any other type (text/plain too).
  app.removeContentTypeParser('text/plain');
  // Fastify's own (prototype-poisoning safe) JSON parser, behind a bound on nesting (json-body.ts).
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  const parseBody = boundedJsonParser(parseJson);
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: config.maxBodyBytes },
    (req, body, done) => parseBody(req, body as string, done));
  for (const type of IMAGE_TYPES) {
    app.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit: config.maxBodyBytes }, (_req, body, done) => {
      done(null, body);
    });
  }

  app.get('/healthz', { schema: healthSchema, config: { public: true } }, async () => ({ status: 'ok' }));

  app.get('/readyz', { schema: readySchema, config: { public: true } }, async () => {
    repository.checkReady();
    return { status: 'ready' };
  });

  const describe = (ensemble: Ensemble) => {
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
  };
  app.get('/models', { schema: modelsSchema }, async () => {
    const first = repository.ready();
    const others = repository.loaded().filter((l) => l.ensemble !== first).map((l) => describe(l.ensemble));
    return { ...describe(first), models: [describe(first), ...others] };
  });

  app.post<{ Querystring: { topK?: string; model?: string; version?: string }; Body: ClassifyBody }>('/classify',
    { schema: classifySchema, config: { inference: true } },
    async (req, reply) => {
      // The model is held from here to the answer: a new version swapped in meanwhile waits for it.
      return repository.use(req.query.model, req.query.version, async (ensemble) => {
        const { manifest } = ensemble;
        const name = manifest.name; // the repository's name for it (repository.ts: they must agree)
        req.servedModel = name;
        const k = parseTopK(req.query.topK, manifest.output.classes);
        const input = await readClassifyBody(req, config, manifest);
        const result = await infer({ model: name, ensemble, admission: steps.admissions.of(name), detection: steps.detection }, {
          client: clientOf(req), answer: reply.raw, log: req.log, trace: req.trace,
          batch: () => classifyBatch(input, manifest, config),
          encode: (probabilities) => encodeClassifyResponse(probabilities, manifest, k, input.kind === 'images' && input.single),
        });
        if (result.detection !== null) reply.header(DETECTION_HEADER, result.detection);
        req.answeredImages = result.n;
        return result.answer;
      });
    });
}
