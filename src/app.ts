/**
 * Builds the Fastify application: logger, error handling, metrics, OpenAPI, routes and the model.
 * Every plugin and route is registered here, explicitly, so `grep` finds who registers what.
 */
// First: the runtime's environment is set before anything loads onnxruntime.
import './runtime-env.js';
import multipart from '@fastify/multipart';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { IncomingMessage, ServerResponse } from 'node:http';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import type { Config } from './config.js';
import { createDetection } from './detect/http.js';
import { loadEnsemble, type Ensemble } from './ensemble/ensemble.js';
import { registerAccessControl } from './http/access.js';
import { bodyTimeout, boundedServerFactory, closeWhileDraining } from './http/connections.js';
import { Admission } from './http/admission.js';
import { sendError, type ErrorShape } from './http/error-handler.js';
import { HttpError } from './http/http-error.js';
import { MAX_FORM_FIELDS } from './http/multipart.js';
import { RouteIndex } from './http/not-found.js';
import { openapiInfo } from './http/openapi.js';
import { registerRoutes } from './http/routes.js';
import { registerV2Routes, v2Shape } from './http/v2.js';
import { Metrics } from './metrics.js';
import { ModelState } from './model-state.js';

export interface App {
  readonly server: FastifyInstance;
  /** GET /metrics on its own port (config.metricsPort); null when metrics are off. */
  readonly metricsServer: FastifyInstance | null;
  readonly metrics: Metrics;
  /** Resolves when the model is loaded, warm and serving; rejects when it cannot be loaded. */
  readonly modelReady: Promise<Ensemble>;
  close(): Promise<void>;
  /** Fail queued and running inference with 503 and stop the worker threads (a hard stop). */
  stopWorkers(): Promise<void>;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Inference requests admitted (body received) and not yet answered. */
    inflightRequests(): number;
  }
  interface FastifyRequest {
    /** The machine code of the error this request was answered with (for metrics), or null. */
    errorCode: string | null;
    /** Images this inference request is answered for (set by the inference routes; 0 otherwise). */
    answeredImages: number;
  }
}

const rootShape: ErrorShape = (e) => ({ error: e.code, message: e.message });
/** Does a URL belong to the v2 scope (v2.ts registers under /v2)? */
const isV2Url = (url: string) => /^\/v2(\/|\?|$)/.test(url);
/** The error shape of the scope a request belongs to. */
const shapeOf = (req: FastifyRequest): ErrorShape => (isV2Url(req.url) ? v2Shape : rootShape);

/** The Fastify instance with every plugin and route, serving whatever `state` holds. */
export function createServer(config: Config, state: ModelState,
  options: { logger?: boolean | object; metrics?: Metrics } = {}): FastifyInstance {
  const { metrics } = options;
  const admission = new Admission(config.maxQueue);
  // The detector undoes the model's input normalisation: it is built when the model is ready.
  const detection = createDetection(config, metrics);
  state.onReady((ensemble) => detection.modelReady(ensemble.manifest.input));
  // An inference request while every admission slot is taken is refused from its method and URL,
  // before its body is read and before Fastify builds a request (admission.ts, connections.ts);
  // so it comes before access control: the client learns that the server is busy, nothing else.
  const refuseOverloaded = (req: IncomingMessage, res: ServerResponse): boolean => {
    if (req.method !== 'POST' || !admission.full) return false;
    const route = routes.inferenceRoute(req.url ?? '');
    if (route === null) return false;
    const started = performance.now();
    const e = new HttpError(503, 'overloaded', admission.refusal(), { 'retry-after': '1' });
    const body = JSON.stringify((isV2Url(req.url ?? '') ? v2Shape : rootShape)(e));
    res.writeHead(503, {
      'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'retry-after': '1',
      ...(state.draining ? { connection: 'close' } : {}),
    });
    res.end(body);
    metrics?.observeRequest('POST', route, 503, (performance.now() - started) / 1000, e.code);
    return true;
  };
  const server = Fastify({
    serverFactory: boundedServerFactory(config.maxConnections, refuseOverloaded),
    logger: options.logger ?? { level: config.logLevel },
    bodyLimit: config.maxBodyBytes,
    requestIdHeader: 'x-request-id',
    requestTimeout: config.requestTimeoutMs,
    // A hop count n trusts the n proxies nearest to the server (what Fastify does with a number).
    trustProxy: typeof config.trustProxy === 'number'
      ? ((hops: number) => (_address: string, hop: number) => hop < hops)(config.trustProxy)
      : config.trustProxy as boolean | string[],
    // Reject unknown keys instead of silently dropping them, and never coerce types (a number is
    // not a base64 string); 'binary' is an OpenAPI-only format.
    ajv: { customOptions: { strict: false, removeAdditional: false, coerceTypes: false } },
  });
  const routes = new RouteIndex(server);

  server.decorateRequest('errorCode', null);
  server.decorateRequest('answeredImages', 0);
  server.setErrorHandler((err: Error, req, reply) => sendError(err, req, reply, rootShape));
  server.setNotFoundHandler((req, reply) => sendError(routes.miss(req), req, reply, rootShape));
  closeWhileDraining(server, () => state.draining);
  bodyTimeout(server, config.bodyTimeoutMs);
  server.decorate('inflightRequests', () => admission.count);
  if (metrics) {
    // The route pattern, never the raw URL, keeps label values bounded.
    server.addHook('onResponse', (req, reply, done) => {
      metrics.observeRequest(req.method, req.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime / 1000, req.errorCode,
        req.answeredImages);
      done();
    });
  }

  registerAccessControl(server, config);
  // A request no route takes gets 404, or 405 with Allow, at its headers (after access control),
  // whatever its body: Fastify would otherwise parse the body for the not-found handler first.
  server.addHook('onRequest', (req, reply, done) => {
    if (req.is404) return sendError(routes.miss(req), req, reply, shapeOf(req));
    done();
  });

  server.register(swagger, { openapi: openapiInfo(config) });
  server.register(swaggerUi, { routePrefix: '/docs' });
  server.register(multipart, {
    // One file more than allowed reaches routes.ts, which names the limit in its error.
    limits: { fileSize: config.maxBodyBytes, files: config.maxImagesPerRequest + 1, fields: MAX_FORM_FIELDS, parts: config.maxImagesPerRequest + MAX_FORM_FIELDS },
  });
  server.register(async (scope) => registerRoutes(scope, config, state, { admission, detection }));
  server.register(async (scope) => registerV2Routes(scope, config, state, { admission, detection, routes, metrics: metrics ?? null }), { prefix: '/v2' });
  return server;
}

/** The service: the server plus the model, loading in the background (/readyz tells when it is warm). */
export function buildApp(config: Config, options: { logger?: boolean | object } = {}): App {
  const state = new ModelState();
  const metrics = new Metrics({
    workers: () => state.ensemble?.statistics().workers ?? 0,
    busyWorkers: () => state.ensemble?.statistics().busyWorkers ?? 0,
    queuedJobs: () => state.ensemble?.statistics().queuedJobs ?? 0,
    inflightRequests: () => server.inflightRequests(),
    ready: () => state.ensemble !== null,
  });
  const server = createServer(config, state, { ...options, metrics });
  const metricsServer = config.metricsPort === null ? null : metrics.createServer();

  const modelReady = loadEnsemble(config, server.log, metrics.observer).then((ensemble) => {
    state.setReady(ensemble);
    return ensemble;
  }, (err: Error) => {
    state.setFailed(err.message);
    throw err;
  });
  modelReady.catch(() => undefined); // the caller decides; never an unhandled rejection

  return {
    server,
    metricsServer,
    metrics,
    modelReady,
    async close() {
      // Readiness turns 503 first; Fastify then stops accepting, answers requests that arrive on
      // open connections with 503, and resolves once every in-flight request has been answered.
      state.startDraining();
      // A response sent just before draining began left its keep-alive connection open and idle;
      // Node closes idle connections once, when close starts, so sweep until the server is closed
      // (otherwise close waits for the client's keep-alive timeout, past the drain timeout).
      const sweep = setInterval(() => server.server.closeIdleConnections(), 50);
      try {
        await server.close();
      } finally {
        clearInterval(sweep);
      }
      await metricsServer?.close();
      await state.ensemble?.close();
    },
    async stopWorkers() {
      await state.ensemble?.close();
    },
  };
}
