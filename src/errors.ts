/**
 * Typed errors. Layers below the HTTP edge (pre-processing, the ensemble) throw domain errors that
 * say what went wrong in the client's terms: a machine-readable code and a message that names the
 * field and the allowed range. They never choose an HTTP status; src/http/error-handler.ts alone maps
 * them to one. Anything else a request causes becomes a 500 without internals.
 */

/** An error a client is told about: a machine-readable code and a message. */
abstract class CodedError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The request's content is wrong or over a limit; the client can fix it and send it again. */
export class InputError extends CodedError {}

/** The service cannot take the request now (loading, overloaded, draining, a worker failed);
 * the same request may succeed after `retryAfterSeconds`, here or on another replica. */
export class UnavailableError extends Error {
  readonly code: string;
  readonly retryAfterSeconds: number;

  constructor(code: string, message: string, retryAfterSeconds = 1) {
    super(message);
    this.name = 'UnavailableError';
    this.code = code;
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** The request names something this server does not serve (a model, a version). */
export class NotFoundError extends CodedError {}

/** An action the server's configuration does not allow (loading models without --model-control explicit). */
export class ForbiddenError extends CodedError {}

export const overloaded = (message: string, retryAfterSeconds = 1) => new UnavailableError('overloaded', message, retryAfterSeconds);

/** The one too_many_images error (every body kind): `count` when the body's images were counted, else "more than". */
export function tooManyImages(maxImages: number, count?: number): InputError {
  return new InputError('too_many_images', count === undefined
    ? `more than ${maxImages} images in one request`
    : `${count} images in one request; the limit is ${maxImages}`);
}

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
