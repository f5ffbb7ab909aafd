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
import { badRequest, HttpError, unsupportedMediaType } from '../errors.js';
import { SERVICE_NAME, SERVICE_VERSION } from '../version.js';
import { toHttpError } from './error-handler.js';
import { requireReady, requireServing, type ModelState } from './routes.js';
import { decodeInferRequest, encodeInferResponse, OUTPUT_NAME } from './v2-codec.js';
import {
  v2InferSchema, v2InferVersionSchema, v2LiveSchema, v2ModelMetadataSchema, v2ModelReadySchema,
  v2ModelVersionMetadataSchema, v2ModelVersionReadySchema, v2ReadySchema, v2ServerMetadataSchema,
} from './v2-schemas.js';

/** The protocol extensions this server implements (reported by GET /v2). */
export const V2_EXTENSIONS = ['binary_tensor_data', 'classification'] as const;

const HEADER_LENGTH = 'inference-header-content-length';

interface ModelParams { name: string; version?: string }

declare module 'fastify' {
  interface FastifyRequest {
    /** The bytes after the JSON header (binary tensor data extension), or null. */
    inferBinary: Buffer | null;
  }
}

/** The served model, if `params` names it (404 otherwise); 503 while it is not ready. */
function modelFor(state: ModelState, params: ModelParams): Ensemble {
  const ensemble = requireReady(state);
  const { name, version } = ensemble.manifest;
  if (params.name !== name) throw new HttpError(404, 'unknown_model', `unknown model '${params.name}'; this server serves '${name}'`);
  if (params.version !== undefined && params.version !== version) {
    throw new HttpError(404, 'unknown_version', `model '${name}' has no version '${params.version}'; it serves version '${version}'`);
  }
  return ensemble;
}

export function registerV2Routes(app: FastifyInstance, config: Config, state: ModelState): void {
  app.setErrorHandler((err: Error, req, reply) => {
    const e = toHttpError(err, req.log);
    req.errorCode = e.code;
    return reply.code(e.statusCode).headers(e.headers).send({ error: e.message, code: e.code });
  });
  app.setNotFoundHandler((req, reply) => {
    req.errorCode = 'not_found';
    return reply.code(404).send({ error: `no route for ${req.method} ${req.url.split('?')[0]}`, code: 'not_found' });
  });

  // Any Content-Type: Triton's client sends binary requests without one. The JSON header is parsed
  // with Fastify's own (prototype-poisoning safe) parser; the bytes after it wait on the request.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.decorateRequest('inferBinary', null);
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: config.maxBodyBytes },
    (req: FastifyRequest, body: Buffer, done: (err: Error | null, body?: unknown) => void) => {
      const encoding = req.headers['content-encoding'];
      if (encoding !== undefined && encoding !== 'identity') {
        return done(unsupportedMediaType(`Content-Encoding '${encoding}' is not accepted; send the body uncompressed`));
      }
      if (body.length === 0) return done(badRequest('empty_body', 'the inference request body is empty'));
      let jsonBytes = body;
      const raw = req.headers[HEADER_LENGTH];
      if (raw !== undefined) {
        const length = Number(raw);
        if (!Number.isInteger(length) || length < 1 || length > body.length) {
          return done(badRequest('bad_request', `Inference-Header-Content-Length: '${String(raw)}' is out of range [1, ${body.length}] (the body's length)`));
        }
        jsonBytes = body.subarray(0, length);
        req.inferBinary = body.subarray(length);
      }
      parseJson(req, jsonBytes.toString('utf8'), (err, parsed) => {
        if (err) return done(badRequest('bad_request', `the inference request is not valid JSON: ${err.message}`));
        return done(null, parsed);
      });
    });

  app.get('', { schema: v2ServerMetadataSchema }, async () =>
    ({ name: SERVICE_NAME, version: SERVICE_VERSION, extensions: [...V2_EXTENSIONS] }));

  app.get('/health/live', { schema: v2LiveSchema, config: { public: true } }, async (_req, reply) => reply.code(200).send());

  app.get('/health/ready', { schema: v2ReadySchema, config: { public: true } }, async (_req, reply) => {
    requireServing(state);
    return reply.code(200).send();
  });

  const metadata = async (req: FastifyRequest<{ Params: ModelParams }>) => {
    const { manifest } = modelFor(state, req.params);
    return {
      name: manifest.name,
      versions: [manifest.version],
      platform: SERVICE_NAME,
      inputs: [{ name: manifest.input.name, datatype: 'FP32', shape: [-1, ...manifest.input.shape] }],
      outputs: [{ name: OUTPUT_NAME, datatype: 'FP32', shape: [-1, manifest.output.classes] }],
    };
  };
  app.get('/models/:name', { schema: v2ModelMetadataSchema }, metadata);
  app.get('/models/:name/versions/:version', { schema: v2ModelVersionMetadataSchema }, metadata);

  const ready = async (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply) => {
    modelFor(state, req.params);
    return reply.code(200).send();
  };
  app.get('/models/:name/ready', { schema: v2ModelReadySchema }, ready);
  app.get('/models/:name/versions/:version/ready', { schema: v2ModelVersionReadySchema }, ready);

  const infer = async (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply) => {
    const ensemble = modelFor(state, req.params);
    const { manifest } = ensemble;
    const request = decodeInferRequest(req.body, req.inferBinary, {
      input: manifest.input, classes: manifest.output.classes, maxImages: config.maxImagesPerRequest,
    });
    req.server.screenQueries(req, manifest.input, request.data, request.n);
    const probs = await ensemble.classify(request.data, request.n);
    const response = encodeInferResponse(request, probs, { name: manifest.name, version: manifest.version }, manifest.labels);
    if (!response.binary) return response.header;
    const header = Buffer.from(JSON.stringify(response.header), 'utf8');
    return reply.header(HEADER_LENGTH, header.length).type('application/octet-stream')
      .send(Buffer.concat([header, response.binary]));
  };
  app.post('/models/:name/infer', { schema: v2InferSchema }, infer);
  app.post('/models/:name/versions/:version/infer', { schema: v2InferVersionSchema }, infer);
}
