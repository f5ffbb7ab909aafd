/**
 * Answers for requests no route takes: 405 with `Allow` when the path exists under other methods,
 * 404 otherwise. Every route's path and method is collected as it is registered (onRoute), so the
 * answer follows the routes without a second list; so are the inference routes, for the refusal
 * decided before Fastify sees a request (connections.ts).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { HttpError } from './http-error.js';

export class RouteIndex {
  private readonly routes: { pattern: RegExp; methods: Set<string> }[] = [];
  /** Routes marked `config.inference`: their pattern, and the route's own URL (the metrics label). */
  private readonly inference: { pattern: RegExp; url: string }[] = [];

  /** Collect the routes registered on `server` from now on (call before registering them). */
  constructor(server: FastifyInstance) {
    server.addHook('onRoute', (route) => {
      const source = `^${route.url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/:[A-Za-z0-9_]+/g, '[^/]+')}$`;
      let entry = this.routes.find((r) => r.pattern.source === source);
      if (!entry) {
        entry = { pattern: new RegExp(source), methods: new Set() };
        this.routes.push(entry);
      }
      for (const m of [route.method].flat()) entry.methods.add(m);
      if ((route.config as { inference?: boolean } | undefined)?.inference) this.inference.push({ pattern: entry.pattern, url: route.url });
    });
  }

  /** The methods some route accepts at `path` (sorted), or [] when no route has it. */
  allowed(path: string): string[] {
    const methods = new Set<string>();
    for (const r of this.routes) if (r.pattern.test(path)) r.methods.forEach((m) => methods.add(m));
    if (methods.has('GET')) methods.add('HEAD');
    return [...methods].sort();
  }

  /** The inference route a request URL (query and all) reaches, as its pattern, or null. */
  inferenceRoute(url: string): string | null {
    const path = url.split('?')[0];
    for (const r of this.inference) if (r.pattern.test(path)) return r.url;
    return null;
  }

  /** The error for a request that matched no route. */
  miss(req: FastifyRequest): HttpError {
    const path = req.url.split('?')[0];
    const allow = this.allowed(path);
    if (allow.length > 0) {
      return new HttpError(405, 'method_not_allowed', `${req.method} is not allowed on ${path}; allowed: ${allow.join(', ')}`,
        { allow: allow.join(', ') });
    }
    return new HttpError(404, 'not_found', `no route for ${req.method} ${path}`);
  }
}
