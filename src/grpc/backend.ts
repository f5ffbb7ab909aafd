/**
 * What the gRPC server needs from the service, and nothing more: the one seam between the gRPC
 * edge (proto, codec, status, server) and the inference path. fastify-backend.ts implements it
 * with the modules REST uses; when REST and gRPC share one explicit inference step, that file is
 * the one to rewrite.
 */
import type { InferRequest, TensorSpec } from '../http/v2-codec.js';
import type { ModelMetadataResponse } from './proto.js';

/** The party behind a call, as access control and query detection identify it. */
export interface Caller {
  /** The call's text metadata as HTTP headers would carry it: lower-case names, the first value each. */
  readonly headers: Readonly<Record<string, string>>;
  /** The peer's address, without its port. */
  readonly address: string;
  /** Aborted when the call ends: answered, cancelled by the client, or past its deadline. */
  readonly ended: AbortSignal;
}

export interface ServedModel {
  readonly spec: TensorSpec;
  readonly labels: readonly string[];
  readonly metadata: ModelMetadataResponse;
}

export interface Inference {
  /** [n][classes]: each image answered by its own drawn member. */
  readonly probabilities: Float32Array[];
  /** Log-mode detection notice for a flagged client (X-Redserve-Detection in REST), or null. */
  readonly detection: string | null;
}

export interface InferenceBackend {
  /** The model is loaded, warm, and the process is not draining. */
  ready(): boolean;
  /** Throws when the caller's API key or rate limit refuses it. */
  admit(caller: Caller): void;
  /** The served model when `name` (and `version`, unless empty) name it; throws not found, or
   * unavailable while it loads. */
  model(name: string, version: string): ServedModel;
  /** Admission slot, query screening, the member draws and the finite check, as REST runs them. */
  infer(batch: InferRequest, caller: Caller): Promise<Inference>;
}
