/**
 * Typed errors. Every error a client can cause is an HttpError with a status, a machine-readable
 * code and a message that names the problem and the allowed range. src/http/error-handler.ts
 * renders them as `{ error, message }`; anything else becomes a 500 without internals.
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

export const badRequest = (code: string, message: string) => new HttpError(400, code, message);
export const tooLarge = (code: string, message: string) => new HttpError(413, code, message);
export const unsupportedMediaType = (message: string) => new HttpError(415, 'unsupported_media_type', message);
export const overloaded = (message: string, retryAfterSeconds: number) =>
  new HttpError(503, 'overloaded', message, { 'retry-after': String(retryAfterSeconds) });

/** A model package that cannot be served; start-up stops with this message. */
export class PackageError extends Error {
  readonly problems: string[];

  constructor(dir: string, problems: string[]) {
    super(`invalid model package ${dir}:\n  - ${problems.join('\n  - ')}`);
    this.name = 'PackageError';
    this.problems = problems;
  }
}

/** A bad flag or environment variable; start-up stops with this message. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}
