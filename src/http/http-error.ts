/**
 * Errors that only the HTTP layer raises, with their status: authentication (401), unknown model
 * or route (404), method (405), slow body (408), rate limit (429). Pre-processing and the ensemble
 * throw domain errors instead (src/errors.ts); error-handler.ts maps both.
 */
export class HttpError extends Error {
  readonly statusCode: number;
  readonly code: string;
  readonly headers: Record<string, string>;

  constructor(statusCode: number, code: string, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.name = 'HttpError';
    this.statusCode = statusCode;
    this.code = code;
    this.headers = headers;
  }
}
