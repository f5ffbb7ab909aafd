/**
 * One mapping from anything a route can throw to an HttpError. The root scope renders it as
 * `{ error: code, message }`; the Open Inference Protocol scope (v2.ts) as `{ error: message, code }`,
 * the shape its clients read. Either way a 5xx never carries internals.
 */
import type { FastifyError, FastifyBaseLogger } from 'fastify';
import { HttpError } from '../errors.js';

/** Fastify's own 4xx codes, renamed to ours. */
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
  FST_INVALID_MULTIPART_CONTENT_TYPE: 'bad_multipart',
};

export function toHttpError(err: FastifyError | HttpError | Error, log: FastifyBaseLogger): HttpError {
  if (err instanceof HttpError) {
    if (err.statusCode >= 500) log.warn({ code: err.code }, err.message);
    return err;
  }
  const fe = err as FastifyError;
  if (fe.validation) return new HttpError(400, 'bad_request', `${fe.validationContext ?? 'request'}: ${fe.message}`);
  const status = fe.statusCode ?? 500;
  if (status >= 400 && status < 500) return new HttpError(status, FASTIFY_CODES[fe.code] ?? 'bad_request', fe.message);
  log.error({ err }, 'request failed');
  return new HttpError(500, 'internal', 'internal server error');
}
