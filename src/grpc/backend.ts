/**
 * What the gRPC server needs from the service, and nothing more: the one seam between the gRPC
 * edge (proto, codec, status, server) and the inference path. repository-backend.ts implements it
 * with what REST v2 calls: the model repository, the shared access check and the one inference step.
 */
import type { Sender } from '../http/client.js';
import type { RequestTrace } from '../tracing.js';
import type { ModelInferRequest, ModelInferResponse, ModelMetadataResponse } from './proto.js';

/** The party behind a call, as access control and query detection identify it: the call's text
 * metadata as HTTP headers would carry it (lower-case names, the first value each) and the peer's
 * address, without its port. */
export interface Caller extends Sender {
  /** Aborted when the call ends: answered, cancelled by the client, or past its deadline. */
  readonly ended: AbortSignal;
}

export interface ServedModel {
  /** Its name in the repository (admission, detection and metrics count by it). */
  readonly name: string;
  readonly metadata: ModelMetadataResponse;
}

export interface Inference {
  readonly response: ModelInferResponse;
  /** Images answered. */
  readonly images: number;
  /** Log-mode detection notice for a flagged client (X-Redserve-Detection in REST), or null. */
  readonly detection: string | null;
}

export interface InferenceBackend {
  /** REST's readiness (/v2/health/ready): every model found at start-up serves, and the process is not draining. */
  ready(): boolean;
  /** The access check REST runs: throws when the caller's API key or rate limit refuses it;
   * returns the client identity (src/http/client.ts). */
  admit(caller: Caller): string;
  /** The model `name` (and `version`, unless empty) names in the repository; throws not found, or
   * unavailable while it loads and while the process drains. */
  model(name: string, version: string): ServedModel;
  /** REST v2 infer's path: the model held for the call, its admission slot, query screening and the
   * member draws (src/inference.ts), recorded in `call.trace`; `call.client` is what `admit` returned. */
  infer(request: ModelInferRequest, caller: Caller, call: { readonly client: string; readonly trace: RequestTrace }): Promise<Inference>;
}
