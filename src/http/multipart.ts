/**
 * Malformed multipart bodies, named. @fastify/multipart and busboy fail with their own words and
 * no status ("Multipart: Boundary not found", "Unexpected end of form"); the client gets a 400
 * `bad_multipart` with a sentence of ours, and the library's words go to the log as the cause.
 */
import { InputError, tooManyImages } from '../errors.js';
import { HttpError } from './http-error.js';

const SENTENCES: [RegExp, string][] = [
  [/boundary not found/i, "the multipart/form-data Content-Type has no boundary parameter (e.g. 'multipart/form-data; boundary=X')"],
  [/unexpected end of (multipart data|form)/i, 'the multipart body ends before its closing boundary: it is cut off, or its boundary never appears'],
  [/malformed part header/i, 'a part header of the multipart body is malformed'],
];

/** Non-file fields a multipart body may carry (@fastify/multipart's `fields` limit). */
export const MAX_FORM_FIELDS = 16;

/** The error to answer for `err`, thrown while reading a multipart body; `maxImages` names the file limit. */
export function multipartError(err: Error, maxImages: number): Error {
  const code = (err as { code?: string }).code;
  if (code === 'FST_FIELDS_LIMIT') return new InputError('too_many_fields', `the multipart body has more than ${MAX_FORM_FIELDS} non-file fields`);
  if (code === 'FST_FILES_LIMIT' || code === 'FST_PARTS_LIMIT') return tooManyImages(maxImages);
  if (err instanceof InputError || err instanceof HttpError || code?.startsWith('FST_')) return err;
  const sentence = SENTENCES.find(([re]) => re.test(err.message))?.[1] ?? 'the multipart body is malformed';
  return new InputError('bad_multipart', sentence, { cause: err });
}
