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
import { createDetection, type Detection } from './detect/http.js';
import { loadEnsemble, type Ensemble } from './ensemble/ensemble.js';
import { accessCheck, registerAccessControl, type AccessCheck } from './http/access.js';
import { bodyTimeout, boundedServerFactory, closeWhileDraining } from './http/connections.js';
import { Admissions } from './http/admission.js';
import { sendError, type ErrorShape } from './http/error-handler.js';
import { MAX_FORM_FIELDS } from './http/multipart.js';
import { RouteIndex } from './http/not-found.js';
import { openapiInfo } from './http/openapi.js';
import { registerRoutes } from './http/routes.js';
import { registerV2Routes, v2Shape } from './http/v2.js';
import { repositoryBackend } from './grpc/repository-backend.js';
import { GrpcServer } from './grpc/server.js';
import { Metrics } from './metrics.js';
import { ModelRepository, repositoryOptions } from './repository.js';
import { createTracing, NO_TRACING, type RequestTrace, type Tracing } from './tracing.js';

export interface App {
  readonly server: FastifyInstance;
  /** GET /metrics on its own port (config.metricsPort); null when metrics are off. */
  readonly metricsServer: FastifyInstance | null;
  /** The gRPC form of the v2 protocol on its own port (config.grpcPort); null when it is off. */
  readonly grpcServer: GrpcServer | null;
  readonly metrics: Metrics;
  /** The served models (src/repository.ts). */
  readonly repository: ModelRepository;
  /** Resolves with the default model once every model found at start-up has loaded or failed;
   * rejects when the default model cannot be served. */
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
    /** The served model an inference request named (set by the inference routes; null otherwise). */
    servedModel: string | null;
    /** An inference request's trace (src/tracing.ts); a no-op one without --otlp-endpoint. */
    trace: RequestTrace;
  }
}

const rootShape: ErrorShape = (e) => ({ error: e.code, message: e.message });
/** Does a URL belong to the v2 scope (v2.ts registers under /v2)? */
const isV2Url = (url: string) => /^\/v2(\/|\?|$)/.test(url);
/** The error shape of the scope a request belongs to. */
const shapeOf = (req: FastifyRequest): ErrorShape => (isV2Url(req.url) ? v2Shape : rootShape);

/** What every protocol's inference shares, so that limits, key failures, rate buckets and detection
 * histories count REST and gRPC together. */
export interface ServingParts {
  readonly admissions: Admissions;
  readonly detection: Detection;
  readonly access: AccessCheck | null;
}

export function servingParts(config: Config, repository: ModelRepository, metrics?: Metrics): ServingParts {
  // The detector undoes the model's input normalisation: it is built when each model is ready.
  const detection = createDetection(config, metrics);
  repository.onReady((name, ensemble) => detection.modelReady(name, ensemble.manifest.input));
  return { admissions: new Admissions(config.maxQueue, repository), detection, access: accessCheck(config) };
}

export function createServer(config: Config, repository: ModelRepository,
  options: { logger?: boolean | object; metrics?: Metrics; tracing?: () => Tracing; parts?: ServingParts } = {}): FastifyInstance {
  const { metrics } = options;
  const tracing = options.tracing ?? (() => NO_TRACING);
  const { admissions, detection, access } = options.parts ?? servingParts(config, repository, metrics);
  // An inference request while every admission slot is taken is refused from its method and URL,
  // before its body is read and before Fastify builds a request (admission.ts, connections.ts);
  // so it comes before access control: the client learns that the server is busy, nothing else.
  const refuseOverloaded = (req: IncomingMessage, res: ServerResponse): boolean => {
    if (req.method !== 'POST') return false;
    const route = routes.inferenceRoute(req.url ?? '');
    if (route === null) return false;
    const target = admissions.ofUrl(req.url ?? '');
    if (target === null || !target.admission.full) return false;
    const { model, admission } = target;
    const started = performance.now();
    // No Error object: capturing its stack was a tenth of a refusal's main-thread time in a storm.
    const body = JSON.stringify((isV2Url(req.url ?? '') ? v2Shape : rootShape)({ code: 'overloaded', message: admission.refusal() }));
    res.writeHead(503, {
      'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'retry-after': '1',
      ...(repository.draining ? { connection: 'close' } : {}),
    });
    res.end(body);
    metrics?.observeRequest('POST', route, 503, (performance.now() - started) / 1000, 'overloaded', model);
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
  server.decorateRequest('servedModel', null);
  server.decorateRequest('trace', null as unknown as RequestTrace);
  // Each inference request's trace starts at its headers (a W3C traceparent makes it a child) and
  // ends with its answer.
  server.addHook('onRequest', (req, _reply, done) => {
    if (req.routeOptions.config?.inference) req.trace = tracing().start(isV2Url(req.url) ? 'v2' : 'classify', req.headers);
    done();
  });
  server.addHook('onResponse', (req, reply, done) => {
    req.trace?.end(reply.statusCode, req.errorCode);
    done();
  });
  server.setErrorHandler((err: Error, req, reply) => sendError(err, req, reply, rootShape));
  server.setNotFoundHandler((req, reply) => sendError(routes.miss(req), req, reply, rootShape));
  closeWhileDraining(server, () => repository.draining);
  bodyTimeout(server, config.bodyTimeoutMs);
  server.decorate('inflightRequests', () => admissions.count);
  if (metrics) {
    // The route pattern, never the raw URL, keeps label values bounded.
    server.addHook('onResponse', (req, reply, done) => {
      metrics.observeRequest(req.method, req.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime / 1000, req.errorCode,
        req.servedModel, req.answeredImages);
      done();
    });
  }

  registerAccessControl(server, access);
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
  server.register(async (scope) => registerRoutes(scope, config, repository, { admissions, detection }));
  server.register(async (scope) => registerV2Routes(scope, config, repository, { admissions, detection, routes, metrics: metrics ?? null }), { prefix: '/v2' });
  return server;
}

/** The service: the server plus the models, loading in the background (/readyz tells when they are warm). */
export function buildApp(config: Config, options: { logger?: boolean | object } = {}): App {
  const metrics: Metrics = new Metrics({
    models: () => repository.loaded().map(({ name, ensemble }) => ({ model: name, ...ensemble.statistics() })),
    inflightRequests: () => server.inflightRequests(),
    ready: () => repository.allReady,
  });
  let server!: FastifyInstance;
  const repository: ModelRepository = new ModelRepository(repositoryOptions(config), (dir, name) => loadEnsemble({ ...config, modelDir: dir }, server.log, metrics.observerFor(name)),
  { info: (o, m) => server.log.info(o, m), warn: (o, m) => server.log.warn(o, m), error: (o, m) => server.log.error(o, m) });
  // The SDK loads only with --otlp-endpoint; until it has, and without it, tracing is a no-op.
  let tracing: Tracing = NO_TRACING;
  const tracingReady = createTracing(config.otlpEndpoint).then((t) => { tracing = t; });
  const parts = servingParts(config, repository, metrics);
  server = createServer(config, repository, { ...options, metrics, tracing: () => tracing, parts });
  const metricsServer = config.metricsPort === null ? null : metrics.createServer();
  const grpcServer = config.grpcPort === null ? null : new GrpcServer(
    repositoryBackend({ repository, ...parts, maxImagesPerRequest: config.maxImagesPerRequest, log: server.log }),
    { host: config.host, port: config.grpcPort, maxMessageBytes: config.maxBodyBytes }, { log: server.log, metrics, tracing: () => tracing });

  const modelReady = tracingReady.then(() => repository.start()).then(() => repository.ready());
  modelReady.catch(() => undefined); // the caller decides; never an unhandled rejection

  return {
    server,
    metricsServer,
    grpcServer,
    metrics,
    repository,
    modelReady,
    async close() {
      // Readiness turns 503 first; Fastify then stops accepting, answers requests that arrive on
      // open connections with 503, and resolves once every in-flight request has been answered.
      repository.startDraining();
      // A response sent just before draining began left its keep-alive connection open and idle;
      // Node closes idle connections once, when close starts, so sweep until the server is closed
      // (otherwise close waits for the client's keep-alive timeout, past the drain timeout).
      const sweep = setInterval(() => server.server.closeIdleConnections(), 50);
      try {
        await Promise.all([server.close(), grpcServer?.close()]);
      } finally {
        clearInterval(sweep);
      }
      await metricsServer?.close();
      await repository.close();
      await tracing.close();
    },
    async stopWorkers() {
      await repository.close({ now: true });
    },
  };
}
