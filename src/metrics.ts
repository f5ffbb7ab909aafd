/**
 * Prometheus metrics (prom-client), served by their own small server on --metrics-port.
 *
 * They are not on the public port on purpose: with little traffic, a client that can read
 * `redserve_member_draws_total` before and after its own request learns which member answered it,
 * the one thing RED keeps secret. Scrape the metrics port from inside the cluster only.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { InferenceObserver } from './ensemble/observer.js';

/** Seconds: 50 us to 10 s. */
const TIME_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const COUNT_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/** Label combinations whose prom-client children are cached (observeRequest). */
const MAX_CACHED_LABELS = 1024;

/** One loaded model's figures at scrape time. */
export interface ModelGauges {
  readonly model: string;
  readonly workers: number;
  readonly busyWorkers: number;
  readonly queuedJobs: number;
}

/** What the metrics read from the running service at scrape time. */
export interface ServiceGauges {
  /** Every loaded model. */
  models(): readonly ModelGauges[];
  /** Inference requests received and not yet answered. */
  inflightRequests(): number;
  ready(): boolean;
}

/** The route label of a gRPC method's calls in the request metrics (REST's are route patterns). */
export const grpcRoute = (method: string): string => `grpc:${method}`;

/** `map`'s entry for `key`, made once: prom-client hashes a label object on every call, so the
 * label children of the hot paths are kept. Label values are bounded (route patterns, statuses,
 * error codes, model names), but the cache never grows past MAX_CACHED_LABELS entries. */
function cached<T>(map: Map<string, T>, key: string, make: () => T): T {
  let value = map.get(key);
  if (value === undefined) {
    value = make();
    if (map.size < MAX_CACHED_LABELS) map.set(key, value);
  }
  return value;
}

export class Metrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'method' | 'route' | 'status'>;
  private readonly errors: Counter<'route' | 'status' | 'code'>;
  private readonly duration: Histogram<'method' | 'route'>;
  private readonly answeredImages: Counter<'model'>;
  private readonly modelRequests: Counter<'model' | 'status'>;
  private readonly modelSeconds: Counter<'model'>;
  private readonly observers = new Map<string, InferenceObserver>();
  private readonly makeObserver: (model: string) => InferenceObserver;
  /** Label children by "method route status": prom-client hashes a label object on every call. */
  private readonly children = new Map<string, { requests: Counter.Internal; duration: Histogram.Internal<'method' | 'route'> }>();
  /** The same, by "model status", for the per-model series. */
  private readonly modelChildren = new Map<string, { requests: Counter.Internal; seconds: Counter.Internal; images: Counter.Internal }>();
  /** Error children by "route status code" (a refusal storm counts thousands a second). */
  private readonly errorChildren = new Map<string, Counter.Internal>();

  constructor(gauges: ServiceGauges, options: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    this.requests = new Counter({
      name: 'redserve_http_requests_total', help: 'HTTP requests answered, by route pattern and status; gRPC calls as route grpc:<method>',
      labelNames: ['method', 'route', 'status'], registers,
    });
    this.errors = new Counter({
      name: 'redserve_http_errors_total', help: 'HTTP error answers by route pattern, status and error code (overloaded, timeout, bad_tensor, ...)',
      labelNames: ['route', 'status', 'code'], registers,
    });
    this.duration = new Histogram({
      name: 'redserve_http_request_duration_seconds', help: 'time from request received to response sent',
      labelNames: ['method', 'route'], buckets: TIME_BUCKETS, registers,
    });
    this.answeredImages = new Counter({
      name: 'redserve_inference_images_total',
      help: 'images answered (status 200) by inference requests, one per image whatever the sampling, by model',
      labelNames: ['model'], registers,
    });
    this.modelRequests = new Counter({
      name: 'redserve_model_requests_total', help: 'inference requests answered, by model and status',
      labelNames: ['model', 'status'], registers,
    });
    this.modelSeconds = new Counter({
      name: 'redserve_model_request_seconds_total', help: 'seconds from request received to response sent, summed over inference requests, by model',
      labelNames: ['model'], registers,
    });
    const queueWait = new Histogram({
      name: 'redserve_inference_queue_seconds', help: 'time an inference job waited before a worker started it',
      labelNames: ['model'], buckets: TIME_BUCKETS, registers,
    });
    const compute = new Histogram({
      name: 'redserve_inference_compute_seconds', help: 'onnxruntime time of one member run (one batch) in a worker',
      labelNames: ['model'], buckets: TIME_BUCKETS, registers,
    });
    const batchImages = new Histogram({
      name: 'redserve_inference_batch_images', help: 'images in one member run', labelNames: ['model'], buckets: COUNT_BUCKETS, registers,
    });
    const batchJobs = new Histogram({
      name: 'redserve_inference_batch_requests', help: 'inference jobs (requests, or one member of a mean request) batched into one member run',
      labelNames: ['model'], buckets: COUNT_BUCKETS, registers,
    });
    const draws = new Counter({
      name: 'redserve_member_draws_total', help: 'images answered by each member under random or fixed sampling, by model',
      labelNames: ['model', 'member'], registers,
    });
    const busy = new Counter({
      name: 'redserve_worker_busy_seconds_total',
      help: 'seconds workers spent on jobs, summed over workers; utilisation = rate(this) / redserve_workers', labelNames: ['model'], registers,
    });
    const restarts = new Counter({ name: 'redserve_worker_restarts_total', help: 'workers that died and were replaced', labelNames: ['model'], registers });
    const perModel = (name: string, help: string, value: (m: ModelGauges) => number) => new Gauge({
      name, help, labelNames: ['model'], registers,
      collect() {
        this.reset();
        for (const m of gauges.models()) this.set({ model: m.model }, value(m));
      },
    });
    perModel('redserve_workers', 'inference workers alive and ready, by model', (m) => m.workers);
    perModel('redserve_workers_busy', 'workers running a job now, by model', (m) => m.busyWorkers);
    perModel('redserve_inference_queue_jobs', 'inference jobs waiting for a worker, by model', (m) => m.queuedJobs);
    new Gauge({ name: 'redserve_http_inflight_requests', help: 'inference requests received and not yet answered (bounded by --max-queue)', registers, collect() { this.set(gauges.inflightRequests()); } });
    new Gauge({ name: 'redserve_ready', help: '1 when every model found at start-up is loaded, checked and serving', registers, collect() { this.set(gauges.ready() ? 1 : 0); } });

    this.makeObserver = (model) => {
      const queueWaitOf = queueWait.labels(model);
      const computeOf = compute.labels(model);
      const imagesOf = batchImages.labels(model);
      const jobsOf = batchJobs.labels(model);
      const busyOf = busy.labels(model);
      const restartsOf = restarts.labels(model);
      restartsOf.inc(0); // a series from the start, at 0
      return {
        drawn: (member, images) => draws.inc({ model, member: String(member) }, images),
        queueWait: (seconds) => queueWaitOf.observe(seconds),
        batchRun: (run) => {
          computeOf.observe(run.computeSeconds);
          imagesOf.observe(run.images);
          jobsOf.observe(run.jobs);
          busyOf.inc(run.busySeconds);
        },
        workerReplaced: () => restartsOf.inc(),
      };
    };
  }

  /** What one model's ensemble and worker pool report to (one per model name, for every version). */
  observerFor(model: string): InferenceObserver {
    let observer = this.observers.get(model);
    if (!observer) {
      observer = this.makeObserver(model);
      this.observers.set(model, observer);
    }
    return observer;
  }

  /** One HTTP answer, or one gRPC call (route `grpcRoute(method)`, the status its error maps to
   * over HTTP). `route` is the route's pattern (bounded cardinality), never the raw URL;
   * `model`: the model an inference request named (null for any other request, and for one that
   * named no served model); `images`: the images it answered. */
  observeRequest(method: string, route: string, status: number, seconds: number, errorCode: string | null,
    model: string | null = null, images = 0): void {
    const child = cached(this.children, `${method} ${route} ${status}`,
      () => ({ requests: this.requests.labels(method, route, String(status)), duration: this.duration.labels(method, route) }));
    child.requests.inc();
    child.duration.observe(seconds);
    if (errorCode) cached(this.errorChildren, `${route} ${status} ${errorCode}`, () => this.errors.labels(route, String(status), errorCode)).inc();
    if (model === null) return;
    const perModel = cached(this.modelChildren, `${model} ${status}`,
      () => ({ requests: this.modelRequests.labels(model, String(status)), seconds: this.modelSeconds.labels(model), images: this.answeredImages.labels(model) }));
    perModel.requests.inc();
    perModel.seconds.inc(seconds);
    if (images > 0 && status === 200) perModel.images.inc(images);
  }

  /** The metrics server: GET /metrics in Prometheus text format, nothing else. */
  createServer(): FastifyInstance {
    const server = Fastify({ logger: false });
    server.get('/metrics', async (_req, reply) => {
      reply.type(this.registry.contentType);
      return this.registry.metrics();
    });
    return server;
  }
}
