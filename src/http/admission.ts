/**
 * Load shedding at the HTTP edge: at most `maxInflight` inference requests between "body
 * received" and "answered". A request takes its slot only once its body is complete, so clients
 * that trickle a body cannot hold slots (they meet the body timeout instead); past the limit the
 * request is refused at once as overloaded. The worker pool's own bound counts jobs; this one keeps
 * the main thread from pre-processing requests it would only queue behind hundreds of others.
 *
 * Refusing must cost far less than serving, or a storm of clients that resend at once after a 503
 * takes the main thread from the admitted work: app.ts asks `full` when an inference request's
 * headers arrive (routes mark themselves with `config.inference`) and answers 503 before its body
 * is read or parsed; Node discards the unread body, and the connection stays open.
 */
import { overloaded } from '../errors.js';
import type { ModelRepository } from '../repository.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** An inference route: it takes an admission slot, and is refused at its headers when none is free. */
    inference?: boolean;
  }
}

/** The connection an admitted request is answered on (a reply's `raw` response). */
export interface Answer {
  once(event: 'close', listener: () => void): unknown;
}

export class Admission {
  private inflight = 0;
  private readonly maxInflight: number;
  /** Whether the model's job queue would refuse a request now: then it is refused here, at its
   * headers, before any work (a mean request is one job per member, so the job queue fills first). */
  private readonly saturated: () => boolean;

  constructor(maxInflight: number, saturated: () => boolean = () => false) {
    this.maxInflight = maxInflight;
    this.saturated = saturated;
  }

  /** Inference requests admitted and not yet answered. */
  get count(): number {
    return this.inflight;
  }

  /** Every slot is taken: a request arriving now would be refused once its body is in. */
  get full(): boolean {
    return this.inflight >= this.maxInflight || this.saturated();
  }

  /** The message of an overloaded refusal. */
  refusal(): string {
    if (this.inflight < this.maxInflight) return 'the inference queue is full; retry shortly';
    return `${this.inflight} inference requests in flight (the limit is ${this.maxInflight}); retry shortly`;
  }

  /** Take a slot until `answer` is sent or its connection closes; throws overloaded past the limit. */
  enter(answer: Answer): void {
    if (this.full) {
      throw overloaded(this.refusal());
    }
    this.inflight++;
    answer.once('close', () => { this.inflight--; });
  }
}

/** The model an inference URL names (`/v2/models/NAME/...`, `/classify?model=NAME`), or undefined for the default. */
export function modelOfUrl(url: string): string | undefined {
  const v2 = /^\/v2\/models\/([^/?]+)/.exec(url);
  if (v2) return decodeURIComponent(v2[1]);
  const query = url.indexOf('?');
  return query < 0 ? undefined : new URLSearchParams(url.slice(query + 1)).get('model') ?? undefined;
}

/** One admission bound per model: a flood on one model never refuses another's requests. */
export class Admissions {
  private readonly byModel = new Map<string, Admission>();

  constructor(private readonly maxInflight: number, private readonly repository: ModelRepository) {}

  of(model: string): Admission {
    let admission = this.byModel.get(model);
    if (!admission) {
      admission = new Admission(this.maxInflight, () => this.repository.saturated(model));
      this.byModel.set(model, admission);
    }
    return admission;
  }

  /** The model an inference URL names and its admission, or null when it names none served here. */
  ofUrl(url: string): { readonly model: string; readonly admission: Admission } | null {
    const model = modelOfUrl(url) ?? this.repository.defaultModel;
    const admission = model === null ? undefined : this.byModel.get(model);
    return admission === undefined ? null : { model: model!, admission };
  }

  /** Inference requests admitted and not yet answered, over every model. */
  get count(): number {
    let n = 0;
    for (const a of this.byModel.values()) n += a.count;
    return n;
  }
}

/** The Fastify instance with every plugin and route, serving whatever `state` holds. */
