/**
 * Who sent a request, in one place: the API key it presents (access.ts checks it) and the client
 * identity that rate limits and query-attack detection count by.
 */
import type { FastifyRequest } from 'fastify';

declare module 'fastify' {
  interface FastifyRequest {
    /** The accepted API key the request presented ('key:<index in the key file>'), set by access
     * control; null without keys (or on a public route). */
    clientKey: string | null;
  }
}

/** The API key a request presents (Authorization: Bearer <key>, or X-API-Key), or null. */
export function presentedKey(req: FastifyRequest): string | null {
  const auth = req.headers.authorization;
  if (typeof auth === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    if (m) return m[1];
  }
  const key = req.headers['x-api-key'];
  return typeof key === 'string' && key.length > 0 ? key : null;
}

/**
 * The client of a request: its accepted API key when keys are configured (without keys a key
 * header proves nothing and would hand out fresh identities), else its address as --trust-proxy
 * resolves it. The key itself never appears (nor is logged): only its place in the key file.
 */
export function clientOf(req: FastifyRequest): string {
  return req.clientKey ?? `ip:${req.ip}`;
}
