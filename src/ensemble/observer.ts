/**
 * What the ensemble and its worker pool report as they work. metrics.ts turns these calls into
 * Prometheus series; the ensemble never imports a metrics library.
 */
export interface InferenceObserver {
  /** `images` images were assigned to `member` (random or fixed sampling). */
  drawn(member: number, images: number): void;
  /** A job waited this long between entering the queue and starting in a worker. */
  queueWait(seconds: number): void;
  /** One member run in a worker: its images, the jobs batched into it, onnxruntime's time and the
   * worker's whole busy time (dispatch to result, messaging included). */
  batchRun(run: { member: number; images: number; jobs: number; computeSeconds: number; busySeconds: number }): void;
  /** A worker died and a replacement is starting. */
  workerReplaced(): void;
}

export const NO_OBSERVER: InferenceObserver = {
  drawn() {},
  queueWait() {},
  batchRun() {},
  workerReplaced() {},
};
