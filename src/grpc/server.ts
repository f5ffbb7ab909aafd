/**
 * The Open Inference Protocol over gRPC (KServe's grpc_predict_v2, the service Triton's and KServe's
 * gRPC clients call) on its own port, --grpc-port. Everything a call can reach goes through one
 * InferenceBackend (backend.ts); this file owns only the transport: limits, the caller's identity,
 * status mapping, the calls' metrics and shutdown.
 *
 * - Messages over --max-body-bytes, REST's body limit, are refused by grpc-js while they arrive
 *   (RESOURCE_EXHAUSTED, gRPC's status for it), compressed ones by their decompressed size.
 * - At most MAX_CONCURRENT_STREAMS calls in flight per connection, REST's pipelining bound.
 * - A client's deadline is enforced by grpc-js (DEADLINE_EXCEEDED); the call's admission slot is
 *   released at that moment, and the inference deadline (--request-timeout-ms) applies as in REST.
 * - ServerLive and ServerReady need no API key (REST's probe routes are public too); the other
 *   RPCs check `authorization: Bearer <key>` or `x-api-key` metadata like REST's headers.
 * - Which member answered is in no metadata, trailer or status: a response carries the model's
 *   name and version, the request id and the outputs; an error is decided before the draws,
 *   except the ensemble's finite check of the probabilities, which is REST's too (INTERNAL, as its 500).
 * - Every call is counted in the request metrics as REST's requests are, under the route
 *   `grpc:<method>` with the HTTP status its error maps from (200 when answered), and an
 *   inference call under its model too, so the statistics extension and Prometheus see both APIs.
 */
import {
  Metadata, Server, ServerCredentials, type sendUnaryData, type ServerUnaryCall, type ServiceError,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import type { FastifyBaseLogger } from 'fastify';
import { DETECTION_HEADER } from '../detect/http.js';
import { MAX_PIPELINED_REQUESTS } from '../http/connections.js';
import { toHttpError } from '../http/error-handler.js';
import { grpcRoute, type Metrics } from '../metrics.js';
import { NO_TRACING, type RequestTrace, type Tracing } from '../tracing.js';
import { SERVICE_NAME, SERVICE_VERSION } from '../version.js';
import type { Caller, InferenceBackend } from './backend.js';
import { inferenceService, type ModelInferRequest, type ModelRef } from './proto.js';
import { toGrpcError } from './status.js';

/** The protocol extensions the gRPC form offers (ServerMetadata). Binary tensor data is HTTP's
 * form of what raw contents are here; configuration, statistics and the repository are REST-only. */
export const GRPC_EXTENSIONS = ['classification'] as const;

export const MAX_CONCURRENT_STREAMS = MAX_PIPELINED_REQUESTS;

export interface GrpcSettings {
  readonly host: string;
  readonly port: number;
  readonly maxMessageBytes: number;
}

/** "10.0.0.1:5000" or "::1:5000" (grpc-js writes IPv6 without brackets) -> the address. */
export function peerAddress(peer: string): string {
  return peer.replace(/:\d+$/, '');
}

function callerOf(call: ServerUnaryCall<unknown, unknown>, ended: AbortSignal): Caller {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(call.metadata.getMap())) {
    if (typeof value === 'string') headers[name] = value;
  }
  return { headers, ip: peerAddress(call.getPeer()), ended };
}

interface Answer<Res> {
  readonly response: Res;
  readonly metadata?: Metadata;
}

/** What a call's metrics and trace record besides its method and status, as REST's inference routes do. */
interface Served {
  /** The model an inference call named, once resolved (null otherwise). */
  model: string | null;
  /** Images it answered. */
  images: number;
  /** An inference call's trace, ended with the call's status; null for the other RPCs. */
  trace: RequestTrace | null;
}

export interface GrpcContext {
  readonly log: FastifyBaseLogger;
  /** Every call is counted as REST requests are (route `grpc:<method>`); null: not counted. */
  readonly metrics: Metrics | null;
  /** Inference calls are traced as REST's inference requests are (protocol `grpc`). */
  readonly tracing?: () => Tracing;
}

export class GrpcServer {
  private readonly server: Server;
  private readonly settings: GrpcSettings;

  constructor(backend: InferenceBackend, settings: GrpcSettings, { log, metrics, tracing = () => NO_TRACING }: GrpcContext) {
    this.settings = settings;
    this.server = new Server({
      'grpc.max_receive_message_length': settings.maxMessageBytes,
      'grpc.max_send_message_length': settings.maxMessageBytes,
      'grpc.max_concurrent_streams': MAX_CONCURRENT_STREAMS,
    });

    const unary = <Req, Res>(method: string, handle: (request: Req, caller: Caller, served: Served) => Answer<Res> | Promise<Answer<Res>>) =>
      (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
        const started = performance.now();
        const ended = new AbortController();
        call.once('cancelled', () => ended.abort());
        const caller = callerOf(call, ended.signal);
        const served: Served = { model: null, images: 0, trace: null };
        // gRPC travels as HTTP/2 POSTs; the status recorded is the HTTP one REST would answer.
        const observe = (status: number, errorCode: string | null) => {
          metrics?.observeRequest('POST', grpcRoute(method), status, (performance.now() - started) / 1000, errorCode, served.model, served.images);
          served.trace?.end(status, errorCode);
        };
        Promise.resolve().then(() => handle(call.request, caller, served)).then(({ response, metadata }) => {
          if (metadata) call.sendMetadata(metadata);
          callback(null, response);
          observe(200, null);
        }, (err: Error) => {
          const e = toHttpError(err, log);
          callback(toGrpcError(e) as ServiceError);
          observe(e.statusCode, e.code);
        }).finally(() => ended.abort());
      };
    const answer = <Res>(response: Res): Answer<Res> => ({ response });

    const implementation: UntypedServiceImplementation = {
      ServerLive: unary('ServerLive', () => answer({ live: true })),
      ServerReady: unary('ServerReady', () => answer({ ready: backend.ready() })),
      ModelReady: unary('ModelReady', (req: ModelRef, caller) => {
        backend.admit(caller);
        // As REST's /v2/models/{name}/ready: an unknown name or version is NOT_FOUND, a model that
        // is loading (or a draining server) UNAVAILABLE.
        backend.model(req.name, req.version);
        return answer({ ready: true });
      }),
      ServerMetadata: unary('ServerMetadata', (_req, caller) => {
        backend.admit(caller);
        return answer({ name: SERVICE_NAME, version: SERVICE_VERSION, extensions: [...GRPC_EXTENSIONS] });
      }),
      ModelMetadata: unary('ModelMetadata', (req: ModelRef, caller) => {
        backend.admit(caller);
        return answer(backend.model(req.name, req.version).metadata);
      }),
      ModelInfer: unary('ModelInfer', async (req: ModelInferRequest, caller, served) => {
        // The trace starts with the call (a traceparent in its metadata makes it a child), as REST's at its headers.
        const trace = served.trace = tracing().start('grpc', caller.headers);
        const client = backend.admit(caller);
        served.model = backend.model(req.model_name, req.model_version).name;
        const { response, images, detection } = await backend.infer(req, caller, { client, trace });
        served.images = images;
        if (detection === null) return { response };
        const metadata = new Metadata();
        metadata.set(DETECTION_HEADER, detection);
        return { response, metadata };
      }),
    };
    this.server.addService(inferenceService, implementation);
  }

  /** Bind --host and --grpc-port; resolves with the bound port (the one chosen for port 0). */
  listen(): Promise<number> {
    const { host, port } = this.settings;
    const address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    return new Promise((resolve, reject) => {
      this.server.bindAsync(address, ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve(bound)));
    });
  }

  /** Drain: no new connections or calls (GOAWAY), resolve once every call in flight has been answered. */
  close(): Promise<void> {
    return new Promise((resolve) => this.server.tryShutdown(() => resolve()));
  }
}
