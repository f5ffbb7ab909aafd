/**
 * Builds the Fastify application: logger, error handling, metrics, OpenAPI, routes and the model.
 * Every plugin and route is registered here, explicitly, so `grep` finds who registers what.
 */
import multipart from '@fastify/multipart';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import type { Config } from './config.js';
import { registerDetection } from './detect/http.js';
import { loadEnsemble, type Ensemble } from './ensemble/ensemble.js';
import { HttpError, overloaded } from './errors.js';
import { registerAccessControl } from './http/access.js';
import { toHttpError } from './http/error-handler.js';
import { registerRoutes, type ModelState } from './http/routes.js';
import { openapiInfo } from './http/openapi.js';
import { registerV2Routes } from './http/v2.js';
import { Metrics } from './metrics.js';

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
    /** Inference requests (POSTs) received and not yet answered. */
    inflightRequests(): number;
  }
  interface FastifyRequest {
    /** The machine code of the error this request was answered with (for metrics), or null. */
    errorCode: string | null;
  }
}

/** The Fastify instance with every plugin and route, serving whatever `state` holds. */
export function createServer(config: Config, state: ModelState,
  options: { logger?: boolean | object; metrics?: Metrics } = {}): FastifyInstance {
  const server = Fastify({
    logger: options.logger ?? { level: config.logLevel },
    bodyLimit: config.maxBodyBytes,
    requestIdHeader: 'x-request-id',
    requestTimeout: config.requestTimeoutMs,
    // A hop count n trusts the n proxies nearest to the server (what Fastify does with a number).
    trustProxy: typeof config.trustProxy === 'number'
      ? ((hops: number) => (_address: string, hop: number) => hop < hops)(config.trustProxy)
      : config.trustProxy as boolean | string[],
    // Reject unknown keys instead of silently dropping them; 'binary' is an OpenAPI-only format.
    ajv: { customOptions: { strict: false, removeAdditional: false } },
  });

  server.decorateRequest('errorCode', null);
  server.setErrorHandler((err: FastifyError | HttpError, req, reply) => {
    const e = toHttpError(err, req.log);
    req.errorCode = e.code;
    return reply.code(e.statusCode).headers(e.headers).send({ error: e.code, message: e.message });
  });
  server.setNotFoundHandler((req, reply) => {
    req.errorCode = 'not_found';
    return reply.code(404).send({ error: 'not_found', message: `no route for ${req.method} ${req.url.split('?')[0]}` });
  });
  // While draining, every answer closes its connection, so that keep-alive clients cannot hold the
  // server open after their in-flight request (Fastify's close waits for every connection).
  server.addHook('onSend', async (_req, reply, payload) => {
    if (state.draining) reply.header('connection', 'close');
    return payload;
  });
  // Shed before reading the body: past maxQueue inference requests in flight (receiving, queued or
  // running), a POST is answered 503 at once. The pool's own bound counts jobs; this one keeps the
  // main thread from parsing bodies it would only reject, which is what bounds latency when the
  // event loop itself is the bottleneck.
  let inflight = 0;
  server.decorate('inflightRequests', () => inflight);
  server.addHook('onRequest', async (req, reply) => {
    if (req.method !== 'POST') return;
    if (inflight >= config.maxQueue) {
      throw overloaded(`${inflight} inference requests in flight (the limit is ${config.maxQueue}); retry shortly`, 1);
    }
    inflight++;
    reply.raw.once('close', () => { inflight--; });
  });
  const { metrics } = options;
  if (metrics) {
    // The route pattern, never the raw URL, keeps label values bounded.
    server.addHook('onResponse', async (req, reply) => {
      metrics.observeRequest(req.method, req.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime / 1000, req.errorCode);
    });
  }

  registerAccessControl(server, config);
  registerDetection(server, config, metrics);

  server.register(swagger, { openapi: openapiInfo(config) });
  server.register(swaggerUi, { routePrefix: '/docs' });
  server.register(multipart, {
    // One file more than allowed reaches routes.ts, which names the limit in its error.
    limits: { fileSize: config.maxBodyBytes, files: config.maxImagesPerRequest + 1, fields: 16, parts: config.maxImagesPerRequest + 16 },
  });
  server.register(async (scope) => registerRoutes(scope, config, state));
  server.register(async (scope) => registerV2Routes(scope, config, state), { prefix: '/v2' });
  return server;
}

/** The service: the server plus the model, loading in the background (/readyz tells when it is warm). */
export function buildApp(config: Config, options: { logger?: boolean | object } = {}): App {
  const state: ModelState = { ensemble: null, failure: null, draining: false };
  const metrics = new Metrics({
    workers: () => state.ensemble?.pool.workers ?? 0,
    busyWorkers: () => state.ensemble?.pool.busy ?? 0,
    queuedJobs: () => state.ensemble?.pool.queued ?? 0,
    inflightRequests: () => server.inflightRequests(),
    ready: () => state.ensemble !== null,
  });
  const server = createServer(config, state, { ...options, metrics });
  const metricsServer = config.metricsPort === null ? null : metrics.createServer();

  const modelReady = loadEnsemble(config, server.log, metrics.observer).then((ensemble) => {
    state.ensemble = ensemble;
    return ensemble;
  }, (err: Error) => {
    state.failure = err.message;
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
      state.draining = true;
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
