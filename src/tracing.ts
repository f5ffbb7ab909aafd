/**
 * OpenTelemetry traces of inference requests, exported over OTLP/HTTP when --otlp-endpoint is set;
 * without it nothing is loaded and every call below is a no-op (the service sends nothing anywhere).
 *
 * One span per inference request (`redserve.infer`, kind SERVER), child of the caller's span when
 * the request carries a W3C `traceparent`, with children for the steps of src/inference.ts:
 * `decode` (body to tensors), `screen` (query detection), `queue` (waiting for a worker),
 * `members` (the member runs, first start to last end) and `encode`.
 *
 * The member that answered never appears: no span or attribute names it, and a request whose
 * images drew two members has one `members` span like one that drew one (the number of member runs
 * is the statistics leak of issue 29 again). Spans carry the model, its version, the images, the
 * sampling mode, the protocol and the status.
 */
import { context, SpanKind, SpanStatusCode, trace, type TextMapGetter } from '@opentelemetry/api';
import type { RunTiming } from './ensemble/pool.js';
import { SERVICE_NAME, SERVICE_VERSION } from './version.js';

/** One inference request's trace. */
export interface RequestTrace {
  /** False for the no-op trace: callers skip building attributes and timings nobody reads. */
  readonly recording: boolean;
  /** Run `fn` as a child span `name`. */
  step<T>(name: string, fn: () => T): T;
  /** Record the pool's queue wait and member runs as child spans. */
  runs(timing: RunTiming): void;
  /** Add attributes to the request's span (the model once resolved, the images once decoded). */
  set(attributes: Record<string, string | number>): void;
  /** End the request's span with its HTTP (or HTTP-equivalent) status and error code. */
  end(status: number, errorCode: string | null): void;
}

export interface Tracing {
  /** Start the trace of one inference request; `headers` may carry `traceparent`/`tracestate`. */
  start(protocol: string, headers: Record<string, string | string[] | undefined>): RequestTrace;
  /** Export what is buffered, then stop. */
  close(): Promise<void>;
}

/** The trace of a request when tracing is off: records nothing. */
export const NO_TRACE: RequestTrace = { recording: false, step: (_name, fn) => fn(), runs() {}, set() {}, end() {} };
export const NO_TRACING: Tracing = { start: () => NO_TRACE, close: async () => undefined };

const headerGetter: TextMapGetter<Record<string, string | string[] | undefined>> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key.toLowerCase()],
};

/** performance.now() milliseconds to the epoch milliseconds OpenTelemetry takes. */
const wall = (ms: number) => performance.timeOrigin + ms;

/**
 * The tracing of a started service: OTLP/HTTP to `endpoint` (e.g. http://collector:4318/v1/traces)
 * through a batching processor, or NO_TRACING when `endpoint` is null. The SDK is imported only
 * when it is used.
 */
export async function createTracing(endpoint: string | null): Promise<Tracing> {
  if (endpoint === null) return NO_TRACING;
  const [{ TracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }, { resourceFromAttributes }, { W3CTraceContextPropagator }] = await Promise.all([
    import('@opentelemetry/sdk-trace'), import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'), import('@opentelemetry/core'),
  ]);
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': SERVICE_NAME, 'service.version': SERVICE_VERSION }),
    spanProcessors: [new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url: endpoint }), scheduledDelayMillis: 1000 })],
  });
  const tracer = provider.getTracer(SERVICE_NAME, SERVICE_VERSION);
  const propagator = new W3CTraceContextPropagator();

  return {
    start(protocol, headers) {
      const parent = propagator.extract(context.active(), headers, headerGetter);
      const span = tracer.startSpan('redserve.infer', { kind: SpanKind.SERVER, attributes: { 'redserve.protocol': protocol } }, parent);
      const within = trace.setSpan(parent, span);
      const child = (name: string, start?: number) => tracer.startSpan(name, start === undefined ? {} : { startTime: wall(start) }, within);
      return {
        recording: true,
        step<T>(name: string, fn: () => T): T {
          const s = child(name);
          const done = (failed: boolean) => {
            if (failed) s.setStatus({ code: SpanStatusCode.ERROR });
            s.end();
          };
          try {
            const out = fn();
            if (out instanceof Promise) {
              return out.then((v) => { done(false); return v; }, (err) => { done(true); throw err; }) as T;
            }
            done(false);
            return out;
          } catch (err) {
            done(true);
            throw err;
          }
        },
        runs(timing) {
          child('queue', timing.enqueuedAt).end(wall(timing.startedAt));
          child('members', timing.startedAt).end(wall(timing.finishedAt));
        },
        set(attributes) {
          span.setAttributes(attributes);
        },
        end(status, errorCode) {
          span.setAttribute('http.response.status_code', status);
          if (errorCode) span.setAttribute('redserve.error', errorCode);
          if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
          span.end();
        },
      };
    },
    async close() {
      await provider.shutdown();
    },
  };
}
