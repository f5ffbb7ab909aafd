/**
 * The one JSON body parser of both scopes (routes.ts, v2.ts): the nesting bound first
 * (json-depth.ts), then the parse. Fastify's parser refuses `__proto__` and `constructor` keys,
 * looking for them, escaped or not, with two regular expressions over the whole body; a body with
 * neither word and no backslash at all cannot hold such a key, so it is parsed with JSON.parse
 * alone (a tensor body is mostly digits). Anything else, and anything JSON.parse refuses, goes to
 * Fastify's parser, whose error names the problem.
 */
import type { FastifyRequest } from 'fastify';
import { checkJsonDepth } from './json-depth.js';

export type JsonParser = (req: FastifyRequest, text: string, done: (err: Error | null, body?: unknown) => void) => void;

/** Whether `text` cannot hold a `__proto__` or `constructor` key, however spelled. */
export const cannotPoison = (text: string): boolean =>
  text.indexOf('\\') === -1 && !text.includes('__proto__') && !text.includes('constructor');

/** `guarded` (Fastify's prototype-poisoning safe parser) behind the nesting bound and the fast path. */
export function boundedJsonParser(guarded: JsonParser): JsonParser {
  return (req, text, done) => {
    try {
      checkJsonDepth(text);
    } catch (err) {
      return done(err as Error);
    }
    if (cannotPoison(text)) {
      let parsed: unknown;
      let ok = true;
      try {
        parsed = JSON.parse(text);
      } catch {
        ok = false; // the guarded parser says what is wrong, in its words
      }
      if (ok) return done(null, parsed);
    }
    guarded(req, text, done);
  };
}
