/**
 * The detector at the HTTP edge. app.ts creates one `Detection` and it builds a detector for each
 * model when that model becomes ready (the fingerprint undoes the model's input normalisation, so
 * each model has its own; a new version with the same input contract keeps the history); the inference step
 * (src/inference.ts) screens every batch after pre-processing and before the ensemble runs, so
 * every input is fingerprinted exactly as the model will see it, whatever format it came in.
 *
 * - The client is the one identity of src/http/client.ts: its accepted API key, else its address.
 * - A detection (a query that starts a cool-down) increments `redserve_query_detections_total`
 *   and logs the client, at warn.
 * - reject: a flagged query, and every query in the cool-down, gets 429 `query_attack_suspected`
 *   with Retry-After (the cool-down left); the ensemble never runs, so no member is drawn.
 * - log: the query is answered as usual; with --detect-header on, answers to a flagged client carry
 *   `X-Redserve-Detection` (for red-team runs: `npm run attack` reads it).
 */
import { Counter, Gauge } from 'prom-client';
import type { Config } from '../config.js';
import type { InputSpec } from '../ensemble/manifest.js';
import { HttpError } from '../http/http-error.js';
import type { Metrics } from '../metrics.js';
import { Detector, type Verdict } from './detector.js';
import { normalisationOf } from './fingerprint.js';

export const DETECTION_HEADER = 'x-redserve-detection';
export const DETECTION_ERROR = 'query_attack_suspected';

/** Where a detection is logged (a request's logger). */
export interface DetectionLog {
  warn(obj: object, msg: string): void;
}

export interface Detection {
  /** Build the detector for a model's input contract; called when that model (or a new version) is ready. */
  modelReady(model: string, input: InputSpec): void;
  /**
   * Screen a client's pre-processed images (n of them, NCHW) before inference. Throws 429 in reject
   * mode; returns the X-Redserve-Detection value for a flagged client in log mode with the header
   * on, else null.
   */
  screen(model: string, client: string, batch: { readonly data: Float32Array; readonly n: number }, log: DetectionLog): string | null;
}

/** The header value for a flagged answer in log mode. */
export function headerValue(v: Verdict & { flagged: true }): string {
  return `flagged; reason=${v.reason}; scope=${v.scope ?? 'none'}; detected-at=${v.detectedAtQuery}; query=${v.query}`;
}

const OFF: Detection = { modelReady: () => undefined, screen: () => null };

export function createDetection(config: Config, metrics?: Metrics): Detection {
  const settings = config.detect;
  if (settings.mode === 'off') return OFF;
  const registers = metrics ? [metrics.registry] : [];
  const detections = new Counter({
    name: 'redserve_query_detections_total',
    help: 'clients flagged as running a query attack (a flag starts a cool-down), by reason and by whose earlier query matched',
    labelNames: ['reason', 'scope'], registers,
  });
  const detectors = new Map<string, { detector: Detector; key: string }>();
  new Gauge({
    name: 'redserve_detect_clients', help: 'clients whose recent queries the detector holds (bounded by --detect-clients), by model',
    labelNames: ['model'], registers,
    collect() {
      this.reset();
      for (const [model, { detector }] of detectors) this.set({ model }, detector.trackedClients);
    },
  });

  return {
    modelReady(model, input) {
      const normalisation = normalisationOf(input);
      const key = JSON.stringify([input.shape, normalisation]);
      if (detectors.get(model)?.key !== key) detectors.set(model, { detector: new Detector(settings, normalisation), key });
    },
    screen(model, client, { data, n }, log) {
      const d = detectors.get(model)?.detector;
      if (d === undefined) throw new Error(`screen: no detector for model '${model}'; it is not ready`);
      let worst: Verdict | null = null;
      if (settings.mode === 'reject') worst = d.coolingDown(client);
      if (worst === null) {
        const size = data.length / n;
        for (let i = 0; i < n; i++) {
          const v = d.screen(client, data.subarray(i * size, (i + 1) * size));
          if (v.flagged && (worst === null || !worst.flagged || v.detection)) worst = v;
          if (v.flagged && v.detection) {
            detections.inc({ reason: v.reason, scope: v.scope ?? 'none' });
            log.warn({ model, client, reason: v.reason, scope: v.scope, sharedHashes: v.shared, query: v.query, mode: settings.mode },
              'query attack suspected: client flagged');
          }
        }
      }
      if (worst === null || !worst.flagged) return null;
      if (settings.mode === 'reject') {
        throw new HttpError(429, DETECTION_ERROR,
          `this client sent queries too similar to its earlier ones (${worst.reason === 'repeated_input' ? 'the same input too many times' : 'a near duplicate'}), `
          + `as query attacks do; its queries are refused for ${settings.cooldownS} s after a detection`,
          { 'retry-after': String(worst.retryAfterS) });
      }
      return settings.header ? headerValue(worst) : null;
    },
  };
}
