/**
 * The Open Inference Protocol over gRPC (KServe's grpc_predict_v2, the service Triton's and KServe's
 * gRPC clients call) on its own port, --grpc-port. Everything a call can reach goes through one
 * InferenceBackend (backend.ts); this file owns only the transport: limits, the caller's identity,
 * status mapping and shutdown.
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
 *   except the finite check of the probabilities, which is REST's too (INTERNAL, as its 500).
 */
import {
  Metadata, Server, ServerCredentials, type sendUnaryData, type ServerUnaryCall, type ServiceError,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import type { FastifyBaseLogger } from 'fastify';
import { DETECTION_HEADER } from '../detect/http.js';
import { MAX_PIPELINED_REQUESTS } from '../http/connections.js';
import { SERVICE_NAME, SERVICE_VERSION } from '../version.js';
import type { Caller, InferenceBackend } from './backend.js';
import { decodeModelInfer, encodeModelInfer } from './codec.js';
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
  return { headers, address: peerAddress(call.getPeer()), ended };
}

interface Answer<Res> {
  readonly response: Res;
  readonly metadata?: Metadata;
}

export class GrpcServer {
  private readonly server: Server;
  private readonly settings: GrpcSettings;

  constructor(backend: InferenceBackend, settings: GrpcSettings, log: FastifyBaseLogger) {
    this.settings = settings;
    this.server = new Server({
      'grpc.max_receive_message_length': settings.maxMessageBytes,
      'grpc.max_send_message_length': settings.maxMessageBytes,
      'grpc.max_concurrent_streams': MAX_CONCURRENT_STREAMS,
    });

    const unary = <Req, Res>(handle: (request: Req, caller: Caller) => Answer<Res> | Promise<Answer<Res>>) =>
      (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
        const ended = new AbortController();
        call.once('cancelled', () => ended.abort());
        const caller = callerOf(call, ended.signal);
        Promise.resolve().then(() => handle(call.request, caller)).then(({ response, metadata }) => {
          if (metadata) call.sendMetadata(metadata);
          callback(null, response);
        }, (err: Error) => callback(toGrpcError(err, log) as ServiceError)).finally(() => ended.abort());
      };
    const answer = <Res>(response: Res): Answer<Res> => ({ response });

    const implementation: UntypedServiceImplementation = {
      ServerLive: unary(() => answer({ live: true })),
      ServerReady: unary(() => answer({ ready: backend.ready() })),
      ModelReady: unary((req: ModelRef, caller) => {
        backend.admit(caller);
        // Unknown names are NOT_FOUND; a known model that is loading or draining is not ready.
        backend.model(req.name, req.version);
        return answer({ ready: backend.ready() });
      }),
      ServerMetadata: unary((_req, caller) => {
        backend.admit(caller);
        return answer({ name: SERVICE_NAME, version: SERVICE_VERSION, extensions: [...GRPC_EXTENSIONS] });
      }),
      ModelMetadata: unary((req: ModelRef, caller) => {
        backend.admit(caller);
        return answer(backend.model(req.name, req.version).metadata);
      }),
      ModelInfer: unary(async (req: ModelInferRequest, caller) => {
        backend.admit(caller);
        const { spec, labels } = backend.model(req.model_name, req.model_version);
        const batch = decodeModelInfer(req, spec);
        const { probabilities, detection } = await backend.infer(batch, caller);
        const response = encodeModelInfer(batch, probabilities, spec.model, labels);
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
