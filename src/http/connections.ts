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
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyServerFactory } from 'fastify';

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
