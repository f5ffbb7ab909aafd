/**
 * The attacker's view of a target: a function from an image in pixel space to class probabilities,
 * wrapped so that every call is counted against the image's query budget and the run's deadline.
 * Attacks only ever see an Oracle, which is how the budget is enforced and why the tests can run an
 * attack against a local function instead of the service.
 */

/** Pixel-space image (CHW, values in [lo, hi]) -> class probabilities. One call = one query. */
export type Classify = (x: Float64Array) => Promise<Float64Array>;

/** Thrown by the oracle when the image's budget or the run's time is spent; attacks let it propagate. */
export class StopAttack extends Error {
  readonly reason: 'budget' | 'time';

  constructor(reason: 'budget' | 'time') {
    super(reason === 'budget' ? 'query budget spent' : 'time limit reached');
    this.name = 'StopAttack';
    this.reason = reason;
  }
}

export function argmax(p: ArrayLike<number>): number {
  let best = 0;
  for (let k = 1; k < p.length; k++) if (p[k] > p[best]) best = k;
  return best;
}

export function linfDistance(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

export interface OracleOptions {
  /** Queries this image may use. */
  readonly budget: number;
  /** Date.now() value past which no query is sent. */
  readonly deadlineMs: number;
  /** The clean image and its true label: a wrong answer inside the eps ball is an any-hit. */
  readonly x0: Float64Array;
  readonly label: number;
  readonly eps: number;
}

/** Slack for float rounding when deciding whether a queried point lies inside the eps ball. */
const BALL_SLACK = 1e-9;

export class Oracle {
  /** Queries sent so far for this image. */
  queries = 0;
  /** 1-based index of the first query inside the eps ball answered with a wrong label, or null. */
  firstHit: number | null = null;

  constructor(private readonly classify: Classify, readonly options: OracleOptions) {}

  get remaining(): number {
    return this.options.budget - this.queries;
  }

  async probs(x: Float64Array): Promise<Float64Array> {
    if (this.queries >= this.options.budget) throw new StopAttack('budget');
    if (Date.now() >= this.options.deadlineMs) throw new StopAttack('time');
    this.queries++;
    const p = await this.classify(x);
    if (this.firstHit === null && argmax(p) !== this.options.label
      && linfDistance(x, this.options.x0) <= this.options.eps + BALL_SLACK) {
      this.firstHit = this.queries;
    }
    return p;
  }

  /** EOT: the mean of m answers for the same image (m queries). */
  async meanProbs(x: Float64Array, m: number): Promise<Float64Array> {
    const first = await this.probs(x);
    if (m === 1) return first;
    const sum = Float64Array.from(first);
    for (let r = 1; r < m; r++) {
      const p = await this.probs(x);
      for (let k = 0; k < sum.length; k++) sum[k] += p[k];
    }
    for (let k = 0; k < sum.length; k++) sum[k] /= m;
    return sum;
  }

  /** Decision oracle: is x misclassified on the majority of m answers (top-1 only)? */
  async isAdversarial(x: Float64Array, m: number): Promise<boolean> {
    // Stop as soon as the vote is decided: the remaining answers could not change it.
    let wrong = 0;
    let right = 0;
    while (2 * wrong <= m && 2 * right < m) {
      if (argmax(await this.probs(x)) !== this.options.label) wrong++;
      else right++;
    }
    return 2 * wrong > m;
  }
}
