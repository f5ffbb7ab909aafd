/**
 * The Node HTTP server under Fastify (its `serverFactory`), for what must be decided before Fastify
 * builds a request:
 *
 * - At most `maxConnections` open connections (--max-connections); Node closes the ones past it at
 *   once, so idle sockets cannot take every file descriptor.
 * - Per connection, at most MAX_PIPELINED_REQUESTS requests received and not yet answered on the
 *   wire, and at most MAX_UNSENT_BYTES of response waiting to be sent: a client that pipelines
 *   requests and never reads the answers has its connection closed instead of growing the heap
 *   (Node parses every request of a received chunk before it pauses a socket whose peer is not
 *   reading).
 * - `refuse`: answers a request from its method and URL alone, before any body is read or parsed
 *   and without Fastify's per-request work (admission.ts: a storm of retries must cost far less
 *   than serving). Node discards the unread body and keeps the connection.
 *
 * And the Fastify hooks that bound a connection's life: the body timeout, and closing every
 * connection after its answer while the server drains. Hooks on every request take Fastify's
 * callback form: an async hook costs a promise and a microtask turn per request.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyRequest, FastifyServerFactory } from 'fastify';
import { HttpError } from './http-error.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Stop the body timeout: the handler has read the whole body (multipart bodies are read there). */
    bodyReceived(): void;
  }
}

export const MAX_PIPELINED_REQUESTS = 16;
export const MAX_UNSENT_BYTES = 1024 * 1024;

/** Answer `req` here and return true, or return false to hand it to Fastify. */
export type EarlyAnswer = (req: IncomingMessage, res: ServerResponse) => boolean;

interface TimeoutOptions {
  keepAliveTimeout?: number;
  requestTimeout?: number;
  connectionTimeout?: number;
}

export function boundedServerFactory(maxConnections: number, refuse: EarlyAnswer): FastifyServerFactory {
  return (handler, options) => {
    const pending = new WeakMap<Socket, number>();
    const server = http.createServer((req, res) => {
      const socket = req.socket;
      if (socket.destroyed) return;
      const inFlight = (pending.get(socket) ?? 0) + 1;
      if (inFlight > MAX_PIPELINED_REQUESTS || socket.writableLength > MAX_UNSENT_BYTES) {
        socket.destroy();
        return;
      }
      pending.set(socket, inFlight);
      res.once('close', () => pending.set(socket, pending.get(socket)! - 1));
      if (!refuse(req, res)) handler(req, res);
    });
    server.maxConnections = maxConnections;
    // What Fastify sets on the server it creates itself.
    const o = options as TimeoutOptions;
    if (o.keepAliveTimeout !== undefined) server.keepAliveTimeout = o.keepAliveTimeout;
    if (o.requestTimeout !== undefined) server.requestTimeout = o.requestTimeout;
    if (o.connectionTimeout !== undefined) server.setTimeout(o.connectionTimeout);
    return server;
  };
}

/** Does the request carry a body (one the body timeout must watch)? */
const hasBody = (req: FastifyRequest) =>
  req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;

/**
 * A body not received within `bodyTimeoutMs` fails its reader (Fastify's body parser, or the
 * multipart stream in the handler) with 408, and the connection closes after the answer. Without
 * it, a client trickling a byte every few seconds keeps its connection and buffer for as long as
 * Node's request timeout allows. A handler that reads the body itself calls `req.bodyReceived()`.
 */
export function bodyTimeout(server: FastifyInstance, bodyTimeoutMs: number): void {
  server.decorateRequest('bodyReceived', () => undefined);
  server.addHook('onRequest', (req, reply, done) => {
    if (!hasBody(req)) return done();
    const timer = setTimeout(() => {
      const err = new HttpError(408, 'body_timeout',
        `the request body was not received within ${bodyTimeoutMs} ms (--body-timeout-ms)`, { connection: 'close' });
      if (req.raw.listenerCount('error') > 0) req.raw.emit('error', err);
      else req.raw.destroy();
    }, bodyTimeoutMs);
    req.bodyReceived = () => clearTimeout(timer);
    reply.raw.once('close', () => clearTimeout(timer));
    done();
  });
  server.addHook('preValidation', (req, _reply, done) => {
    if (!req.isMultipart()) req.bodyReceived();
    done();
  });
}

/**
 * While `draining()`, every answer closes its connection, so that keep-alive clients cannot hold
 * the server open after their in-flight request (Fastify's close waits for every connection).
 */
export function closeWhileDraining(server: FastifyInstance, draining: () => boolean): void {
  server.addHook('onSend', (_req, reply, payload, done) => {
    if (draining()) reply.header('connection', 'close');
    done(null, payload);
  });
}
