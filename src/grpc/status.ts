/**
 * The one mapping from what a gRPC handler can throw to a gRPC status. It starts from the REST
 * mapping (toHttpError: the same codes, the same messages, the same logging, no internals in a 5xx)
 * and translates the HTTP status the way gRPC's own HTTP mapping does, so each error has one
 * definition whichever protocol carries it.
 *
 * An error with a retry delay (overloaded, not ready, rate limited, detected query attack) carries
 * it twice: as the `grpc-retry-pushback-ms` trailer, which gRPC's retry policy honours, and as
 * google.rpc.RetryInfo in `grpc-status-details-bin`, which status helpers read (grpcio-status,
 * grpc-go's status.Details). The details also hold google.rpc.ErrorInfo with the machine code as
 * `reason` (domain "redserve"): RESOURCE_EXHAUSTED is overload, a rate limit or a detection, and
 * the reason tells which.
 */
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import type { HttpError } from '../http/http-error.js';
import { encodeRpcMessage } from './proto.js';

export const ERROR_DOMAIN = 'redserve';
export const RETRY_PUSHBACK = 'grpc-retry-pushback-ms';
export const STATUS_DETAILS = 'grpc-status-details-bin';

/** HTTP status -> gRPC status; 503 is split by code below. */
const FROM_HTTP: Record<number, status> = {
  400: status.INVALID_ARGUMENT,
  401: status.UNAUTHENTICATED,
  403: status.PERMISSION_DENIED,
  404: status.NOT_FOUND,
  408: status.DEADLINE_EXCEEDED,
  413: status.INVALID_ARGUMENT,
  415: status.INVALID_ARGUMENT,
  429: status.RESOURCE_EXHAUSTED,
  500: status.INTERNAL,
  503: status.UNAVAILABLE,
};

const any = (name: 'RetryInfo' | 'ErrorInfo', value: object) =>
  ({ type_url: `type.googleapis.com/google.rpc.${name}`, value: encodeRpcMessage(name, value) });

/** `e`: what toHttpError made of the error (the server counts its HTTP status in the metrics too). */
export function toGrpcError(e: HttpError): Partial<ServiceError> {
  const code = e.statusCode === 503 && e.code === 'overloaded' ? status.RESOURCE_EXHAUSTED
    : FROM_HTTP[e.statusCode] ?? (e.statusCode < 500 ? status.INVALID_ARGUMENT : status.INTERNAL);
  const metadata = new Metadata();
  const details = [any('ErrorInfo', { reason: e.code, domain: ERROR_DOMAIN })];
  const retrySeconds = Number(e.headers['retry-after']);
  if (retrySeconds > 0) {
    metadata.set(RETRY_PUSHBACK, String(retrySeconds * 1000));
    details.push(any('RetryInfo', { retry_delay: { seconds: retrySeconds, nanos: 0 } }));
  }
  metadata.set(STATUS_DETAILS, encodeRpcMessage('Status', { code, message: e.message, details }));
  return { code, details: e.message, metadata };
}
