/**
 * Load shedding at the HTTP edge: at most `maxInflight` inference requests between "body
 * received" and "answered". A request takes its slot only once its body is complete, so clients
 * that trickle a body cannot hold slots (they meet the body timeout instead); past the limit the
 * request is refused at once as overloaded. The worker pool's own bound counts jobs; this one keeps
 * the main thread from pre-processing requests it would only queue behind hundreds of others.
 */
import type { FastifyReply } from 'fastify';
import { overloaded } from '../errors.js';

export class Admission {
  private inflight = 0;
  private readonly maxInflight: number;

  constructor(maxInflight: number) {
    this.maxInflight = maxInflight;
  }

  /** Inference requests admitted and not yet answered. */
  get count(): number {
    return this.inflight;
  }

  /** Take a slot until `reply` is sent or its connection closes; throws overloaded past the limit. */
  enter(reply: FastifyReply): void {
    if (this.inflight >= this.maxInflight) {
      throw overloaded(`${this.inflight} inference requests in flight (the limit is ${this.maxInflight}); retry shortly`);
    }
    this.inflight++;
    reply.raw.once('close', () => { this.inflight--; });
  }
}
