/**
 * Which member answers an image: draws from OS randomness (node:crypto), exact.
 *
 * Without `sampling.probabilities` in the manifest every member has probability exactly 1 / N. With
 * them, member i has probability exactly p[i] / sum(p), where p[i] are the float64 values the
 * manifest's JSON parses to, read as the exact binary fractions they are: they become integer
 * weights with no rounding (`exactWeights`), and a uniform integer in [0, sum of weights), drawn by
 * rejection from whole random bits, picks the member whose cumulative range holds it. No modulo and
 * no floating-point step stands between the OS's random bits and the member, so the only departure
 * from the stated distribution is the OS generator's own. A member of probability 0 is never drawn.
 */
import { randomFillSync, randomInt } from 'node:crypto';

/**
 * Cryptographic random bytes, fetched from the OS 4 KiB at a time: one getrandom call per request
 * cost about 10 us of the event loop's CPU, more than the draw itself. A private Uint8Array, not
 * Buffer.allocUnsafe, which slices Node's shared pool where the bytes (future draws) would linger;
 * each byte is zeroed once used, so the buffer never holds a draw that was already made.
 */
class RandomBytes {
  private readonly bytes = new Uint8Array(4096);
  private next = this.bytes.length;

  take(): number {
    if (this.next === this.bytes.length) {
      randomFillSync(this.bytes);
      this.next = 0;
    }
    const b = this.bytes[this.next];
    this.bytes[this.next++] = 0;
    return b;
  }

  /** A uniform integer in [0, 2^bits) for bits <= 48, as a number: ceil(bits / 8) bytes, the first one's surplus high bits masked off. */
  takeBits(bits: number): number {
    const nBytes = Math.ceil(bits / 8);
    let r = nBytes > 0 ? this.take() & (0xff >> (8 * nBytes - bits)) : 0;
    for (let i = 1; i < nBytes; i++) r = r * 256 + this.take();
    return r;
  }

  /** A uniform integer in [0, 2^bits), any bits >= 0, as a bigint: 48 bits at a time. */
  takeBigBits(bits: number): bigint {
    let r = 0n;
    for (let left = bits; left > 0; left -= 48) {
      const k = Math.min(48, left);
      r = (r << BigInt(k)) | BigInt(this.takeBits(k));
    }
    return r;
  }
}

const randomBytes = new RandomBytes();

/**
 * Draw one member per image, uniformly, with a cryptographic RNG. Up to 256 members, one random byte
 * per draw: bytes at or past the largest multiple of `members` are rejected, so every member keeps
 * probability exactly 1 / members. Past 256 members, crypto.randomInt per draw.
 */
export function drawMembers(n: number, members: number): number[] {
  if (!Number.isInteger(members) || members < 1) throw new RangeError(`members: ${members} is not an integer >= 1`);
  if (members > 256) return Array.from({ length: n }, () => randomInt(members));
  const limit = 256 - (256 % members);
  const draws = new Array<number>(n);
  for (let i = 0; i < n;) {
    const b = randomBytes.take();
    if (b < limit) draws[i++] = b % members;
  }
  return draws;
}

const f64 = new DataView(new ArrayBuffer(8));

/** A finite float64 x >= 0 as the exact pair (odd mantissa, exponent): x = mantissa * 2^exponent; 0 is (0, 0). */
function binaryFraction(x: number): { mantissa: bigint; exponent: number } {
  if (x === 0) return { mantissa: 0n, exponent: 0 };
  f64.setFloat64(0, x);
  const bits = f64.getBigUint64(0);
  const biased = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & ((1n << 52n) - 1n);
  // Subnormals (biased exponent 0) have no implicit leading 1 and the exponent of the smallest normal.
  let mantissa = biased === 0 ? fraction : fraction | (1n << 52n);
  let exponent = (biased === 0 ? 1 : biased) - 1075;
  while ((mantissa & 1n) === 0n) {
    mantissa >>= 1n;
    exponent++;
  }
  return { mantissa, exponent };
}

/**
 * Integer weights exactly proportional to `probabilities` (finite numbers >= 0, at least one > 0):
 * weights[i] / sum(weights) == probabilities[i] / sum(probabilities) with no rounding, and the
 * weights share no factor of 2, so they are as small as exactness allows ([0.5, 0.25, 0.25] gives
 * [2, 1, 1]; decimal fractions such as 0.1 need about 55 bits).
 */
export function exactWeights(probabilities: readonly number[]): bigint[] {
  probabilities.forEach((p, i) => {
    if (!(Number.isFinite(p) && p >= 0)) throw new RangeError(`probabilities[${i}]: ${p} is not a finite number >= 0`);
  });
  if (!probabilities.some((p) => p > 0)) throw new RangeError('probabilities: every value is 0; at least one must be > 0');
  const fractions = probabilities.map(binaryFraction);
  const lowest = Math.min(...fractions.filter((f) => f.mantissa > 0n).map((f) => f.exponent));
  return fractions.map((f) => f.mantissa << BigInt(f.exponent - lowest));
}

const bitLength = (x: bigint) => x.toString(2).length;

/** Most random bits drawn as a number (exact below 2^53): the first, and usually the only, part of a weighted draw. */
const MAX_HEAD_BITS = 48;

/**
 * Draws with exact integer weights: a uniform integer r in [0, total), by rejection from the fewest
 * whole bits that cover the range (an attempt is accepted with probability > 1/2), then the member
 * whose cumulative range holds r. r is drawn most significant bits first: its top 48 bits (a plain
 * number) decide the member unless they equal the top bits of a range boundary, which happens with
 * probability at most members / 2^48; only then are the remaining bits drawn and r compared in full.
 * Deferring bits that do not change the outcome leaves r exactly uniform, and keeps a draw at about
 * six random bytes and number comparisons, however many bits the weights need.
 */
export class WeightedDraw {
  readonly weights: readonly bigint[];
  readonly total: bigint;
  /** cumulative[i] = weights[0] + ... + weights[i]; member i holds [cumulative[i - 1], cumulative[i]). */
  private readonly cumulative: readonly bigint[];
  /** Bits of r: the fewest that cover [0, total). */
  private readonly bits: number;
  /** Bits of r below its head, drawn only to settle a tie with a boundary. */
  private readonly tailBits: number;
  /** cumulative[i] >> tailBits: the boundaries as the head sees them, exact as numbers (<= 2^48). */
  private readonly heads: readonly number[];

  /**
   * `headBits` (1 to 48) only trades speed for how often a tie needs the tail: every value gives
   * the same distribution, which is what a test with few head bits checks on the tie path.
   */
  constructor(weights: readonly bigint[], headBits = MAX_HEAD_BITS) {
    if (weights.length === 0 || weights.some((w) => w < 0n) || !weights.some((w) => w > 0n)) {
      throw new RangeError('weights: expected a non-empty list of integers >= 0, at least one > 0');
    }
    if (!Number.isInteger(headBits) || headBits < 1 || headBits > MAX_HEAD_BITS) {
      throw new RangeError(`headBits: ${headBits} is out of range [1, ${MAX_HEAD_BITS}]`);
    }
    this.weights = Object.freeze([...weights]);
    let sum = 0n;
    this.cumulative = Object.freeze(weights.map((w) => (sum += w)));
    this.total = sum;
    this.bits = bitLength(sum - 1n);
    this.tailBits = Math.max(0, this.bits - headBits);
    this.heads = Object.freeze(this.cumulative.map((c) => Number(c >> BigInt(this.tailBits))));
  }

  /** The member whose cumulative range holds r, for an integer r in [0, total). */
  memberAt(r: bigint): number {
    if (r < 0n || r >= this.total) throw new RangeError(`r: ${r} is out of range [0, ${this.total})`);
    return firstAbove(this.cumulative, r);
  }

  draw(n: number): number[] {
    const draws = new Array<number>(n);
    if (this.bits === 0) return draws.fill(this.memberAt(0n)); // one member holds all the weight
    const last = this.heads.length - 1;
    for (let i = 0; i < n;) {
      const head = randomBytes.takeBits(this.bits - this.tailBits);
      // The first boundary whose head exceeds r's head is above r whatever r's tail is; every
      // boundary before it is at or below r, certainly so unless its head equals r's head.
      const member = firstAbove(this.heads, head);
      if (this.tailBits > 0 && member > 0 && this.heads[member - 1] === head) {
        const r = (BigInt(head) << BigInt(this.tailBits)) | randomBytes.takeBigBits(this.tailBits);
        if (r < this.total) draws[i++] = this.memberAt(r);
      } else if (member <= last) {
        draws[i++] = member;
      } // else r >= total: rejected, draw again
    }
    return draws;
  }
}

/** The smallest index i with sorted[i] > x, or sorted.length if none (sorted non-decreasing). */
function firstAbove<T extends number | bigint>(sorted: readonly T[], x: T): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (x < sorted[mid]) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** How members are drawn for a package, and what each one weighs in the averaged (mean) ensemble. */
export interface MemberSampler {
  /** One member index per image. */
  draw(n: number): number[];
  /** Each member's probability as a float64 (p[i] / sum(p), or 1 / N): the weights of the mean. */
  readonly probabilities: readonly number[];
}

/**
 * The sampler for `members` members: uniform when `probabilities` is absent (or gives every member
 * the same weight), otherwise exact draws with those probabilities. The manifest validator has
 * already checked them (one per member, >= 0, summing to 1 within its tolerance).
 */
export function memberSampler(members: number, probabilities?: readonly number[]): MemberSampler {
  if (probabilities === undefined) {
    return { draw: (n) => drawMembers(n, members), probabilities: Object.freeze(new Array<number>(members).fill(1 / members)) };
  }
  if (probabilities.length !== members) {
    throw new RangeError(`probabilities: ${probabilities.length} values for ${members} members`);
  }
  const weights = exactWeights(probabilities);
  const sum = probabilities.reduce((s, p) => s + p, 0);
  const normalised = Object.freeze(probabilities.map((p) => p / sum));
  if (weights.every((w) => w === weights[0])) return { draw: (n) => drawMembers(n, members), probabilities: normalised };
  const weighted = new WeightedDraw(weights);
  return { draw: (n) => weighted.draw(n), probabilities: normalised };
}
