/**
 * Builds the Fastify application: logger, error handling, OpenAPI, routes and the model. Every
 * plugin and route is registered here, explicitly, so `grep` finds who registers what.
 */
import multipart from '@fastify/multipart';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import type { Config } from './config.js';
import { loadEnsemble, type Ensemble } from './ensemble/ensemble.js';
import { HttpError } from './errors.js';
import { registerRoutes, type ModelState } from './http/routes.js';
import { openapiInfo } from './http/openapi.js';

export interface App {
  readonly server: FastifyInstance;
  /** Resolves when the model is loaded, warm and serving; rejects when it cannot be loaded. */
  readonly modelReady: Promise<Ensemble>;
  close(): Promise<void>;
}

/** Fastify's own 4xx codes, renamed to ours. */
const FASTIFY_CODES: Record<string, string> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'body_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'empty_body',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'bad_request',
  FST_ERR_CTP_EMPTY_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_INVALID_TYPE: 'unsupported_media_type',
  FST_REQ_FILE_TOO_LARGE: 'body_too_large',
  FST_FILES_LIMIT: 'too_many_images',
  FST_PARTS_LIMIT: 'too_many_images',
  FST_INVALID_MULTIPART_CONTENT_TYPE: 'bad_multipart',
};

/** The Fastify instance with every plugin and route, serving whatever `state` holds. */
export function createServer(config: Config, state: ModelState, options: { logger?: boolean | object } = {}): FastifyInstance {
  const server = Fastify({
    logger: options.logger ?? { level: config.logLevel },
    bodyLimit: config.maxBodyBytes,
    requestIdHeader: 'x-request-id',
    // Reject unknown keys instead of silently dropping them; 'binary' is an OpenAPI-only format.
    ajv: { customOptions: { strict: false, removeAdditional: false } },
  });

  server.setErrorHandler((err: FastifyError | HttpError, req, reply) => {
    if (err instanceof HttpError) {
      if (err.statusCode >= 500) req.log.warn({ code: err.code }, err.message);
      return reply.code(err.statusCode).headers(err.headers).send({ error: err.code, message: err.message });
    }
    const fe = err as FastifyError;
    if (fe.validation) {
      return reply.code(400).send({ error: 'bad_request', message: `${fe.validationContext ?? 'request'}: ${fe.message}` });
    }
    const status = fe.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      return reply.code(status).send({ error: FASTIFY_CODES[fe.code] ?? 'bad_request', message: fe.message });
    }
    req.log.error({ err }, 'request failed');
    return reply.code(500).send({ error: 'internal', message: 'internal server error' });
  });
  server.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: 'not_found', message: `no route for ${req.method} ${req.url.split('?')[0]}` }));

  server.register(swagger, { openapi: openapiInfo(config) });
  server.register(swaggerUi, { routePrefix: '/docs' });
  server.register(multipart, {
    // One file more than allowed reaches routes.ts, which names the limit in its error.
    limits: { fileSize: config.maxBodyBytes, files: config.maxImagesPerRequest + 1, fields: 16, parts: config.maxImagesPerRequest + 16 },
  });
  server.register(async (scope) => registerRoutes(scope, config, state));
  return server;
}

/** The service: the server plus the model, loading in the background (/readyz tells when it is warm). */
export function buildApp(config: Config, options: { logger?: boolean | object } = {}): App {
  const state: ModelState = { ensemble: null, failure: null };
  const server = createServer(config, state, options);

  const modelReady = loadEnsemble(config, server.log).then((ensemble) => {
    state.ensemble = ensemble;
    return ensemble;
  }, (err: Error) => {
    state.failure = err.message;
    throw err;
  });
  modelReady.catch(() => undefined); // the caller decides; never an unhandled rejection

  return {
    server,
    modelReady,
    async close() {
      await server.close();
      await state.ensemble?.close();
    },
  };
}
