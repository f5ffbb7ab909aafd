/**
 * The detector at the HTTP edge. app.ts calls `registerDetection` once; the inference routes call
 * `req.server.screenQueries(req, manifest.input, tensors, n)` after pre-processing and before the ensemble runs, so
 * every input is fingerprinted exactly as the model will see it, whatever format it came in.
 *
 * - Client identity: the API key when keys are configured (access control has checked it by then;
 *   without keys a key header proves nothing and would hand out fresh identities), else the
 *   address as --trust-proxy resolves it.
 * - A detection (a query that starts a cool-down) increments `redserve_query_detections_total`
 *   and logs the client, at warn.
 * - reject: a flagged query, and every query in the cool-down, gets 429 `query_attack_suspected`
 *   with Retry-After (the cool-down left); the ensemble never runs, so no member is drawn.
 * - log: the query is answered as usual; with --detect-header on, answers to a flagged client carry
 *   `X-Redserve-Detection` (for red-team runs: `npm run attack` reads it).
 */
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Counter, Gauge } from 'prom-client';
import type { Config } from '../config.js';
import type { InputSpec } from '../ensemble/manifest.js';
import { HttpError } from '../http/http-error.js';
import type { Metrics } from '../metrics.js';
import { Detector, type Verdict } from './detector.js';
import { normalisationOf } from './fingerprint.js';

export const DETECTION_HEADER = 'x-redserve-detection';
export const DETECTION_ERROR = 'query_attack_suspected';

declare module 'fastify' {
  interface FastifyInstance {
    /** Screen a request's pre-processed images (n of them, NCHW) before inference; throws 429 in reject mode. */
    screenQueries(req: FastifyRequest, input: InputSpec, tensors: Float32Array, n: number): void;
  }
}

/** How the detector identifies the client of a request. */
export function clientIdentity(req: FastifyRequest, keysConfigured: boolean): string {
  if (keysConfigured) {
    const auth = req.headers.authorization;
    const bearer = typeof auth === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(auth)?.[1] : undefined;
    const key = bearer ?? req.headers['x-api-key'];
    // Only a digest is kept (and logged), never the key.
    if (typeof key === 'string' && key.length > 0) return `key:${createHash('sha256').update(key, 'utf8').digest('hex').slice(0, 16)}`;
  }
  return `ip:${req.ip}`;
}

/** The header value for a flagged answer in log mode. */
export function headerValue(v: Verdict & { flagged: true }): string {
  return `flagged; reason=${v.reason}; scope=${v.scope ?? 'none'}; detected-at=${v.detectedAtQuery}; query=${v.query}`;
}

export function registerDetection(server: FastifyInstance, config: Config, metrics?: Metrics): void {
  const settings = config.detect;
  if (settings.mode === 'off') {
    server.decorate('screenQueries', () => undefined);
    return;
  }
  const registers = metrics ? [metrics.registry] : [];
  const detections = new Counter({
    name: 'redserve_query_detections_total',
    help: 'clients flagged as running a query attack (a flag starts a cool-down), by reason and by whose earlier query matched',
    labelNames: ['reason', 'scope'], registers,
  });
  const keysConfigured = config.apiKeySha256.length > 0;
  // The detector needs the model's input contract, known once the package is loaded: it is built
  // at the first query.
  let detector: Detector | null = null;
  let builtFor: InputSpec | null = null;
  new Gauge({
    name: 'redserve_detect_clients', help: 'clients whose recent queries the detector holds (bounded by --detect-clients)',
    registers, collect() { this.set(detector?.trackedClients ?? 0); },
  });

  server.decorate('screenQueries', function screenQueries(req: FastifyRequest, input: InputSpec, tensors: Float32Array, n: number) {
    if (builtFor !== input) {
      detector = new Detector(settings, normalisationOf(input));
      builtFor = input;
    }
    const d = detector!;
    const client = clientIdentity(req, keysConfigured);
    let worst: Verdict | null = null;
    if (settings.mode === 'reject') worst = d.coolingDown(client);
    if (worst === null) {
      const size = tensors.length / n;
      for (let i = 0; i < n; i++) {
        const v = d.screen(client, tensors.subarray(i * size, (i + 1) * size));
        if (v.flagged && (worst === null || !worst.flagged || v.detection)) worst = v;
        if (v.flagged && v.detection) {
          detections.inc({ reason: v.reason, scope: v.scope ?? 'none' });
          req.log.warn({ client, reason: v.reason, scope: v.scope, sharedHashes: v.shared, query: v.query, mode: settings.mode },
            'query attack suspected: client flagged');
        }
      }
    }
    if (worst === null || !worst.flagged) return;
    if (settings.mode === 'reject') {
      throw new HttpError(429, DETECTION_ERROR,
        `this client sent queries too similar to its earlier ones (${worst.reason === 'repeated_input' ? 'the same input too many times' : 'a near duplicate'}), `
        + `as query attacks do; its queries are refused for ${settings.cooldownS} s after a detection`,
        { 'retry-after': String(worst.retryAfterS) });
    }
    if (settings.header) req.detectionHeader = headerValue(worst);
  });

  server.decorateRequest('detectionHeader', null);
  server.addHook('onSend', async (req, reply, payload) => {
    if (req.detectionHeader !== null) reply.header(DETECTION_HEADER, req.detectionHeader);
    return payload;
  });
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by screenQueries in log mode with --detect-header on: the value of X-Redserve-Detection. */
    detectionHeader: string | null;
  }
}
