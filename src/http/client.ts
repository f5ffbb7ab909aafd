/**
 * Who sent a request, in one place: the API key it presents (access.ts checks it) and the client
 * identity that rate limits and query-attack detection count by. Both read a `Sender`, which an
 * HTTP request is as it stands and a gRPC call is made into (src/grpc/server.ts), so the two
 * protocols name a client the same way.
 */

declare module 'fastify' {
  interface FastifyRequest {
    /** The accepted API key the request presented ('key:<index in the key file>'), set by access
     * control; null without keys (or on a public route). */
    clientKey: string | null;
  }
}

/** What identifies the sender of a request, whatever its protocol. */
export interface Sender {
  /** An HTTP request's headers, or a gRPC call's text metadata (lower-case names). */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** Its address: as --trust-proxy resolves it over HTTP, the peer's over gRPC. */
  readonly ip: string;
}

/** The API key a request presents (Authorization: Bearer <key>, or X-API-Key), or null. */
export function presentedKey(sender: Sender): string | null {
  const auth = sender.headers.authorization;
  if (typeof auth === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    if (m) return m[1];
  }
  const key = sender.headers['x-api-key'];
  return typeof key === 'string' && key.length > 0 ? key : null;
}

/**
 * The client of a request: its accepted API key when keys are configured (without keys a key
 * header proves nothing and would hand out fresh identities), else its address. The key itself
 * never appears (nor is logged): only its place in the key file.
 */
export function clientOf(request: { readonly clientKey: string | null; readonly ip: string }): string {
  return request.clientKey ?? `ip:${request.ip}`;
}
