/**
 * The one mapping from anything a route can throw to an HTTP status, a machine code and a message.
 * Domain errors (src/errors.ts) carry no status: it is chosen here, from the error's kind and code.
 * The root scope renders the result as `{ error: code, message }`; the Open Inference Protocol
 * scope (v2.ts) as `{ error: message, code }`, the shape its clients read. A 5xx never carries
 * internals, and a 4xx message never carries a library's own words (they are logged instead).
 */
import type { FastifyBaseLogger, FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { ForbiddenError, InputError, NotFoundError, UnavailableError } from '../errors.js';
import { HttpError } from './http-error.js';

/** Input errors that are not 400 Bad Request. */
const INPUT_STATUS: Record<string, number> = {
  body_too_large: 413,
  image_too_large: 413,
  too_many_pixels: 413,
  too_many_fields: 413,
  unsupported_media_type: 415,
};

/** Fastify's and @fastify/multipart's own 4xx codes, renamed to ours. */
const FASTIFY_CODES: Record<string, string> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'body_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'empty_body',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'bad_request',
  FST_ERR_CTP_EMPTY_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_INVALID_TYPE: 'unsupported_media_type',
  FST_REQ_FILE_TOO_LARGE: 'body_too_large',
  FST_FILES_LIMIT: 'too_many_images',
  FST_PARTS_LIMIT: 'too_many_images',
  FST_FIELDS_LIMIT: 'too_many_fields',
  FST_INVALID_MULTIPART_CONTENT_TYPE: 'bad_multipart',
  FST_MP_PREMATURE_CLOSE: 'bad_multipart',
  FST_PROTO_VIOLATION: 'bad_multipart',
};

/** Fastify statuses that our codes override (multipart's 406 for a non-multipart body is a 400 here). */
const FASTIFY_STATUS: Record<string, number> = {
  FST_INVALID_MULTIPART_CONTENT_TYPE: 400,
  FST_FIELDS_LIMIT: 413,
};

/**
 * Warn lines for refusals that come in floods: under a retry storm a full queue refuses thousands of
 * requests a second after their bodies are in, and a line each would make the log the next thing
 * to fill up. `overloaded` and `timeout` are logged at most once per `intervalMs` each; the next line
 * says how many were left out since the last one (`refusedSinceLastLine`). Other codes: every one.
 * The metrics count every refusal.
 */
/** The 503 codes that a storm produces by the thousand. */
const FLOODING_CODES: ReadonlySet<string> = new Set(['overloaded', 'timeout']);

export class FloodWarnings {
  private readonly last = new Map<string, { at: number; skipped: number }>();

  constructor(private readonly intervalMs = 1000, private readonly now: () => number = Date.now) {}

  warn(log: Pick<FastifyBaseLogger, 'warn'>, code: string, message: string): void {
    if (!FLOODING_CODES.has(code)) {
      log.warn({ code }, message);
      return;
    }
    const at = this.now();
    const seen = this.last.get(code);
    if (seen && at - seen.at < this.intervalMs) {
      seen.skipped++;
      return;
    }
    log.warn(seen?.skipped ? { code, refusedSinceLastLine: seen.skipped } : { code }, message);
    this.last.set(code, { at, skipped: 0 });
  }
}

const floodWarnings = new FloodWarnings();

export function toHttpError(err: FastifyError | Error, log: FastifyBaseLogger): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof InputError) {
    if (err.cause) log.info({ code: err.code, cause: String((err.cause as Error).message ?? err.cause) }, 'bad input');
    return new HttpError(INPUT_STATUS[err.code] ?? 400, err.code, err.message);
  }
  if (err instanceof NotFoundError) return new HttpError(404, err.code, err.message);
  if (err instanceof ForbiddenError) return new HttpError(403, err.code, err.message);
  if (err instanceof UnavailableError) {
    floodWarnings.warn(log, err.code, err.message);
    return new HttpError(503, err.code, err.message, { 'retry-after': String(err.retryAfterSeconds) });
  }
  const fe = err as FastifyError;
  if (fe.validation) return new HttpError(400, 'bad_request', `${fe.validationContext ?? 'request'}: ${fe.message}`);
  const status = FASTIFY_STATUS[fe.code] ?? fe.statusCode ?? 500;
  if (status >= 400 && status < 500) return new HttpError(status, FASTIFY_CODES[fe.code] ?? 'bad_request', fe.message);
  log.error({ err }, 'request failed');
  return new HttpError(500, 'internal', 'internal server error');
}

/** How a scope renders an error: the root as `{ error: code, message }`, v2 as `{ error: message, code }`. */
export type ErrorShape = (e: { readonly code: string; readonly message: string }) => object;

/** Send `err` the way the scope's clients read errors (the one place a status is chosen). */
export function sendError(err: Error, req: FastifyRequest, reply: FastifyReply, shape: ErrorShape) {
  const e = toHttpError(err, req.log);
  req.errorCode = e.code;
  let message = e.message;
  if (e.code === 'unsupported_media_type' && (err as FastifyError).code?.startsWith('FST_ERR_CTP')) {
    // Fastify's own words name no alternative; the route's schema lists what it accepts.
    const accepted = Object.keys((req.routeOptions.schema?.body as { content?: object } | undefined)?.content ?? {});
    const sent = (req.headers['content-type'] ?? '').split(';')[0].trim() || '(none)';
    message = `Content-Type '${sent}' is not accepted${accepted.length ? `; send one of ${accepted.join(', ')}` : ''}`;
  }
  return reply.code(e.statusCode).headers(e.headers).send(shape(new HttpError(e.statusCode, e.code, message, e.headers)));
}

