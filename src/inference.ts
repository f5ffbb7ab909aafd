/**
 * One inference step for every protocol: admit -> screen -> classify -> encode. /classify
 * (http/routes.ts) and the Open Inference Protocol (http/v2.ts) call `infer` with their own codec's
 * decode and encode; another front end (gRPC) calls it the same way. Admission and detection are
 * passed in, never found on the server.
 *
 * The order matters: a request takes an admission slot only once its body is complete (so slow
 * senders hold none), pre-processing runs inside the slot, every image is screened as the model
 * will see it before any member is drawn, and the ensemble guarantees finite probabilities.
 */
import type { Detection, DetectionLog } from './detect/http.js';
import type { Ensemble } from './ensemble/ensemble.js';
import type { RunTiming } from './ensemble/pool.js';
import type { Admission, Answer } from './http/admission.js';
import { NO_TRACE, type RequestTrace } from './tracing.js';

/** n pre-processed images, NCHW float32. */
export interface Batch {
  readonly data: Float32Array;
  readonly n: number;
}

/** What the service brings to every inference call. */
export interface InferenceSteps {
  /** The model's name in the repository (detection keeps one history per model). */
  readonly model: string;
  readonly ensemble: Ensemble;
  readonly admission: Admission;
  readonly detection: Detection;
}

/** What one call brings: who sent it, where its answer goes, and its protocol's codec. */
export interface InferenceCall<T> {
  /** The client identity detection counts by (src/http/client.ts). */
  readonly client: string;
  /** The answer's connection: the admission slot is held until it closes. */
  readonly answer: Answer;
  readonly log: DetectionLog;
  /** The request's trace (src/tracing.ts); none: nothing is recorded. */
  readonly trace?: RequestTrace;
  /** The received body's batch; pre-processing (image decoding) runs here, inside the slot. */
  batch(): Batch | Promise<Batch>;
  encode(probabilities: Float32Array[], batch: Batch): T;
}

export interface InferenceResult<T> {
  readonly answer: T;
  /** Images answered. */
  readonly n: number;
  /** The X-Redserve-Detection value for a flagged client in log mode, or null. */
  readonly detection: string | null;
}

export async function infer<T>(steps: InferenceSteps, call: InferenceCall<T>): Promise<InferenceResult<T>> {
  const trace = call.trace ?? NO_TRACE;
  steps.admission.enter(call.answer);
  if (trace.recording) {
    trace.set({ 'redserve.model': steps.model, 'redserve.model.version': steps.ensemble.manifest.version,
      'redserve.sampling': steps.ensemble.sampling.mode });
  }
  const batch = await trace.step('decode', () => call.batch());
  if (trace.recording) trace.set({ 'redserve.images': batch.n });
  const detection = trace.step('screen', () => steps.detection.screen(steps.model, call.client, batch, call.log));
  // The pool times the member runs only for a trace that records them.
  const timing: RunTiming | undefined = trace.recording ? { enqueuedAt: 0, startedAt: 0, finishedAt: 0 } : undefined;
  const probabilities = await steps.ensemble.classify(batch.data, batch.n, timing);
  if (timing) trace.runs(timing);
  const answer = trace.step('encode', () => call.encode(probabilities, batch));
  return { answer, n: batch.n, detection };
}
