/**
 * Optional access control, both off by default: API keys (--api-key-file) and a per-client rate
 * limit (--rate-limit, --rate-burst). Probe routes (config.public) are never checked, so that load
 * balancers and Kubernetes need no key and are never throttled; the Swagger docs are public too.
 *
 * A request with a missing or wrong key takes a token from its address's bucket before it gets
 * 401, so keys cannot be guessed at full speed: the --rate-limit bucket when one is set, else a
 * bucket of AUTH_FAILURES_PER_SECOND (burst AUTH_FAILURE_BURST) that only failures draw from.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { clientOf, presentedKey, type Sender } from './client.js';
import { HttpError } from './http-error.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Reachable without an API key and never rate limited (health and readiness probes). */
    public?: boolean;
  }
}

/**
 * Token buckets per client: `perSecond` tokens a second, at most `burst` saved. Memory is bounded:
 * past `maxClients` the least recently seen client is forgotten (it starts again with a full bucket).
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; atMs: number }>();
  private readonly perSecond: number;
  private readonly burst: number;
  private readonly maxClients: number;
  private readonly nowMs: () => number;

  constructor(perSecond: number, burst: number, maxClients = 100_000, nowMs: () => number = () => performance.now()) {
    this.perSecond = perSecond;
    this.burst = burst;
    this.maxClients = maxClients;
    this.nowMs = nowMs;
  }

  get clients(): number {
    return this.buckets.size;
  }

  /** Take a token for `client`: 0 when allowed, else the seconds until one is available. */
  take(client: string): number {
    const now = this.nowMs();
    let bucket = this.buckets.get(client);
    if (bucket) {
      this.buckets.delete(client); // re-inserted below: the map stays in least-recently-seen order
      bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.atMs) / 1000) * this.perSecond);
      bucket.atMs = now;
    } else {
      if (this.buckets.size >= this.maxClients) this.buckets.delete(this.buckets.keys().next().value!);
      bucket = { tokens: this.burst, atMs: now };
    }
    this.buckets.set(client, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return (1 - bucket.tokens) / this.perSecond;
  }
}

/** Failed key attempts per second and address, when no --rate-limit is set. */
export const AUTH_FAILURES_PER_SECOND = 1;
export const AUTH_FAILURE_BURST = 10;

/** Check one sender (an HTTP request, a gRPC call): throws 401 or 429; returns its accepted API
 * key ('key:<index in the key file>'), or null without keys. app.ts hands one check to both the HTTP
 * and the gRPC server, so a client's failed keys and its rate limit count across both. */
export type AccessCheck = (sender: Sender) => string | null;

/** The check the flags configure; null when neither keys nor a rate limit are. */
export function accessCheck(config: Config): AccessCheck | null {
  const digests = config.apiKeySha256.map((hex) => Buffer.from(hex, 'hex'));
  const limiter = config.rateLimit ? new RateLimiter(config.rateLimit.perSecond, config.rateLimit.burst) : null;
  if (digests.length === 0 && !limiter) return null;
  const failureLimiter = limiter ?? new RateLimiter(AUTH_FAILURES_PER_SECOND, AUTH_FAILURE_BURST);
  const limitText = limiter
    ? `rate limit of ${config.rateLimit!.perSecond} requests/s (burst ${config.rateLimit!.burst}) per client`
    : `limit of ${AUTH_FAILURES_PER_SECOND} failed API key attempt/s (burst ${AUTH_FAILURE_BURST}) per address`;
  /** 429 for `client` when its bucket is empty; else takes a token. */
  const throttle = (bucket: RateLimiter, client: string) => {
    const waitSeconds = bucket.take(client);
    if (waitSeconds > 0) {
      throw new HttpError(429, 'rate_limited', `${limitText} exceeded; retry later`,
        { 'retry-after': String(Math.max(1, Math.ceil(waitSeconds))) });
    }
  };

  return (sender) => {
    let clientKey: string | null = null;
    if (digests.length > 0) {
      const address = clientOf({ clientKey: null, ip: sender.ip });
      const key = presentedKey(sender);
      const challenge = { 'www-authenticate': 'Bearer realm="redserve"' };
      if (key === null) {
        throttle(failureLimiter, address);
        throw new HttpError(401, 'unauthorized', 'an API key is required: send Authorization: Bearer <key> or X-API-Key: <key>', challenge);
      }
      const digest = createHash('sha256').update(key, 'utf8').digest();
      // Compare every digest in constant time, so timing tells nothing about which key is close.
      let match = -1;
      digests.forEach((d, i) => { if (timingSafeEqual(d, digest) && match < 0) match = i; });
      if (match < 0) {
        throttle(failureLimiter, address);
        throw new HttpError(401, 'unauthorized', 'the API key is not valid', challenge);
      }
      clientKey = `key:${match}`;
    }
    if (limiter) throttle(limiter, clientOf({ clientKey, ip: sender.ip }));
    return clientKey;
  };
}

/** Run `check` on every request but the public routes and the docs; the accepted key is the request's `clientKey`. */
export function registerAccessControl(server: FastifyInstance, check: AccessCheck | null): void {
  server.decorateRequest('clientKey', null);
  if (!check) return;
  server.addHook('onRequest', async (req) => {
    if (req.routeOptions.config?.public || req.routeOptions.url?.startsWith('/docs')) return;
    req.clientKey = check(req);
  });
}
