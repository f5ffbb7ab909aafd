/**
 * The Open Inference Protocol (KServe v2) REST API, registered under /v2 from app.ts, so that
 * Triton's and KServe's HTTP clients work unchanged. Random sampling applies here too: each image
 * of an inference batch is answered by its own randomly drawn member, never revealed.
 *
 * The scope has its own body parser (JSON, or a JSON header followed by binary tensor data, for any
 * Content-Type) and its own error rendering, `{ "error": message, "code": code }`, the shape the
 * protocol's clients read.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import type { Ensemble } from '../ensemble/ensemble.js';
import { InputError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import type { ModelRepository } from '../repository.js';
import { SERVICE_NAME, SERVICE_VERSION } from '../version.js';
import { DETECTION_HEADER, type Detection } from '../detect/http.js';
import { infer } from '../inference.js';
import type { Admissions } from './admission.js';
import { clientOf } from './client.js';
import { sendError, type ErrorShape } from './error-handler.js';
import { HttpError } from './http-error.js';
import type { RouteIndex } from './not-found.js';
import { boundedJsonParser } from './json-body.js';
import { inferenceStatistics } from './v2-statistics.js';
import { decodeInferRequest, encodeInferResponse, modelMetadata, OUTPUT_NAME, tensorSpec } from './v2-codec.js';
import {
  v2InferSchema, v2InferVersionSchema, v2LiveSchema, v2ModelConfigSchema, v2ModelMetadataSchema, v2ModelReadySchema,
  v2ModelStatsSchema, v2ModelVersionMetadataSchema, v2ModelVersionReadySchema, v2ReadySchema, v2RepositoryIndexSchema,
  v2RepositoryLoadSchema, v2RepositoryUnloadSchema, v2ServerMetadataSchema, v2StatsSchema,
} from './v2-schemas.js';

/** The protocol extensions this server implements (reported by GET /v2). */
export const V2_EXTENSIONS = ['binary_tensor_data', 'classification', 'model_configuration', 'statistics', 'model_repository'] as const;

const HEADER_LENGTH = 'inference-header-content-length';

interface ModelParams { name: string; version?: string }

declare module 'fastify' {
  interface FastifyRequest {
    /** The bytes after the JSON header (binary tensor data extension), or null. */
    inferBinary: Buffer | null;
  }
}

export const v2Shape: ErrorShape = (e) => ({ error: e.message, code: e.code });

export interface V2Context {
  readonly admissions: Admissions;
  readonly detection: Detection;
  readonly routes: RouteIndex;
  /** Source of the statistics extension; null: every count reads 0. */
  readonly metrics: Metrics | null;
}

export function registerV2Routes(app: FastifyInstance, config: Config, repository: ModelRepository, ctx: V2Context): void {
  /** The model (and version) `params` name: 404 when none is served, 503 while it is not ready. */
  const modelFor = (params: ModelParams): Ensemble => repository.ready(params.name, params.version);

  app.setErrorHandler((err: Error, req, reply) => sendError(err, req, reply, v2Shape));
  app.setNotFoundHandler((req, reply) => sendError(ctx.routes.miss(req), req, reply, v2Shape));

  // Any Content-Type: Triton's client sends binary requests without one. The JSON header is parsed
  // by json-body.ts (Fastify's own prototype-poisoning safe parser behind the nesting bound); the
  // bytes after it wait on the request.
  const parseBody = boundedJsonParser(app.getDefaultJsonParser('error', 'error'));
  app.decorateRequest('inferBinary', null);
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: config.maxBodyBytes },
    (req: FastifyRequest, body: Buffer, done: (err: Error | null, body?: unknown) => void) => {
      const encoding = req.headers['content-encoding'];
      if (encoding !== undefined && encoding !== 'identity') {
        return done(new InputError('unsupported_media_type', `Content-Encoding '${encoding}' is not accepted; send the body uncompressed`));
      }
      // A route that declares a body (infer) needs one; the repository index is usually sent empty.
      if (body.length === 0) {
        return done(req.routeOptions.schema?.body ? new InputError('empty_body', 'the inference request body is empty') : null, undefined);
      }
      let jsonBytes = body;
      const raw = req.headers[HEADER_LENGTH];
      if (raw !== undefined) {
        const length = Number(raw);
        if (!Number.isInteger(length) || length < 1 || length > body.length) {
          return done(new InputError('bad_request', `Inference-Header-Content-Length: '${String(raw)}' is out of range [1, ${body.length}] (the body's length)`));
        }
        jsonBytes = body.subarray(0, length);
        req.inferBinary = body.subarray(length);
      }
      parseBody(req, jsonBytes.toString('utf8'), (err, parsed) => {
        if (err) return done(err instanceof InputError ? err : new InputError('bad_request', `the request is not valid JSON: ${err.message}`));
        return done(null, parsed);
      });
    });

  app.get('', { schema: v2ServerMetadataSchema }, async () =>
    ({ name: SERVICE_NAME, version: SERVICE_VERSION, extensions: [...V2_EXTENSIONS] }));

  // The bodies are the KServe v2 REST spec's; Triton's clients read only the status.
  app.get('/health/live', { schema: v2LiveSchema, config: { public: true } }, async () => ({ live: true }));

  app.get('/health/ready', { schema: v2ReadySchema, config: { public: true } }, async () => {
    repository.checkReady();
    return { ready: true };
  });

  const metadata = async (req: FastifyRequest<{ Params: ModelParams }>) => modelMetadata(modelFor(req.params).manifest, SERVICE_NAME);
  app.get('/models/:name', { schema: v2ModelMetadataSchema }, metadata);
  app.get('/models/:name/versions/:version', { schema: v2ModelVersionMetadataSchema }, metadata);

  const ready = async (req: FastifyRequest<{ Params: ModelParams }>) => {
    const { manifest } = modelFor(req.params);
    return { name: manifest.name, ready: true };
  };
  app.get('/models/:name/ready', { schema: v2ModelReadySchema }, ready);
  app.get('/models/:name/versions/:version/ready', { schema: v2ModelVersionReadySchema }, ready);

  // Model configuration (Triton's extension), derived from the manifest and the flags.
  app.get('/models/:name/config', { schema: v2ModelConfigSchema }, async (req: FastifyRequest<{ Params: ModelParams }>) => {
    const ensemble = modelFor(req.params);
    const { manifest } = ensemble;
    return {
      name: manifest.name,
      platform: SERVICE_NAME,
      backend: 'onnxruntime',
      version_policy: { specific: { versions: [manifest.version] } },
      max_batch_size: config.maxImagesPerRequest,
      input: [{ name: manifest.input.name, data_type: 'TYPE_FP32', format: 'FORMAT_NCHW', dims: [...manifest.input.shape] }],
      output: [{ name: OUTPUT_NAME, data_type: 'TYPE_FP32', dims: [manifest.output.classes] }],
      dynamic_batching: { max_queue_delay_microseconds: config.queueDelayUs, preferred_batch_size: [config.maxBatchImages] },
      instance_group: [{ name: `${manifest.name}_workers`, count: config.workers, kind: ensemble.provider === 'cuda' ? 'KIND_GPU' : 'KIND_CPU' }],
      parameters: {
        members: { string_value: String(manifest.members.length) },
        sampling: { string_value: ensemble.sampling.mode },
        labels: { string_value: manifest.labels.join(',') },
      },
    };
  });

  // Statistics (Triton's extension), read from the Prometheus metrics the service keeps.
  const stats = async (req: FastifyRequest<{ Params: Partial<ModelParams> }>) => {
    const models = req.params.name === undefined ? repository.loaded().map((l) => l.ensemble) : [modelFor(req.params as ModelParams)];
    return { model_stats: await Promise.all(models.map((e) => inferenceStatistics(ctx.metrics, e.manifest))) };
  };
  app.get('/models/stats', { schema: v2StatsSchema }, stats);
  app.get('/models/:name/stats', { schema: v2ModelStatsSchema }, stats);

  // Model repository (Triton's extension): every model with its state; load and unload change what
  // is served, so they answer 403 unless the server runs with --model-control explicit.
  app.post('/repository/index', { schema: v2RepositoryIndexSchema }, async (req: FastifyRequest<{ Body?: { ready?: boolean } }>) => {
    const index = repository.index();
    return req.body?.ready === true ? index.filter((e) => e.state === 'READY') : index;
  });
  app.post('/repository/models/:name/load', { schema: v2RepositoryLoadSchema }, async (req: FastifyRequest<{ Params: { name: string } }>) => {
    const entry = await repository.load(req.params.name);
    if (entry.state !== 'READY' || entry.reason !== '') {
      throw new HttpError(400, 'load_failed', `failed to load '${req.params.name}': ${entry.reason}`);
    }
    return {};
  });
  app.post('/repository/models/:name/unload', { schema: v2RepositoryUnloadSchema }, async (req: FastifyRequest<{ Params: { name: string } }>) => {
    await repository.unload(req.params.name);
    return {};
  });

  const inferRoute = async (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply) => {
    // The model is held from here to the answer: a new version swapped in meanwhile waits for it.
    return repository.use(req.params.name, req.params.version, (ensemble) => inferWith(ensemble, req, reply));
  };
  const inferWith = async (ensemble: Ensemble, req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply) => {
    const { manifest } = ensemble;
    req.servedModel = manifest.name;
    const request = decodeInferRequest(req.body, req.inferBinary, tensorSpec(manifest, config.maxImagesPerRequest));
    // The body is complete and valid: from here the request holds one of --max-queue slots.
    const steps = { model: manifest.name, ensemble, admission: ctx.admissions.of(manifest.name), detection: ctx.detection };
    const { answer: response, n, detection } = await infer(steps, {
      client: clientOf(req), answer: reply.raw, log: req.log, trace: req.trace,
      batch: () => request,
      encode: (probabilities) => encodeInferResponse(request, probabilities, { name: manifest.name, version: manifest.version }, manifest.labels),
    });
    if (detection !== null) reply.header(DETECTION_HEADER, detection);
    req.answeredImages = n;
    if (!response.binary) return response.header;
    const header = Buffer.from(JSON.stringify(response.header), 'utf8');
    return reply.header(HEADER_LENGTH, header.length).type('application/octet-stream')
      .send(Buffer.concat([header, response.binary]));
  };
  app.post('/models/:name/infer', { schema: v2InferSchema, config: { inference: true } }, inferRoute);
  app.post('/models/:name/versions/:version/infer', { schema: v2InferVersionSchema, config: { inference: true } }, inferRoute);
}
