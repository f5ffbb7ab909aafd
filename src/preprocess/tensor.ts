/**
 * Tensors sent as such (not decoded from an image): the range pre-processing could have produced,
 * and the checks that keep anything outside it from the members. Nothing here knows a protocol:
 * errors name a tensor by its index, or by the name the caller gives (`what`).
 */
import { InputError } from '../errors.js';
import type { InputSpec } from '../ensemble/manifest.js';

const tensorName = (i: number) => `tensor ${i}`;

/**
 * The values pre-processing can produce for each channel: 8-bit pixels 0..255 scaled and normalised
 * by the manifest, widened by RANGE_SLACK of the width so that clients that normalise in float32 or
 * in another order are not refused for rounding. Tensors sent as such must lie inside: a value far
 * outside (1e38 is finite) drives the members' logits to Infinity and their softmax to NaN.
 */
export interface ChannelRange {
  readonly lo: number;
  readonly hi: number;
}

const RANGE_SLACK = 1e-3;

export function inputRanges(spec: InputSpec): ChannelRange[] {
  return spec.mean.map((m, ch) => {
    const a = (0 * spec.scale - m) / spec.std[ch];
    const b = (255 * spec.scale - m) / spec.std[ch];
    const slack = RANGE_SLACK * Math.abs(b - a);
    return { lo: Math.min(a, b) - slack, hi: Math.max(a, b) + slack };
  });
}

const fmt = (v: number) => String(Number(v.toPrecision(6)));

/** The error for element `element` (of channel `channel`) of the tensor `where` lying outside `range`. */
export function outOfRange(where: string, element: number, channel: number, value: number, range: ChannelRange): InputError {
  return new InputError('tensor_out_of_range', `${where}: element ${element} (channel ${channel}) is ${value}; channel ${channel} `
    + `of the pre-processed input lies in [${fmt(range.lo)}, ${fmt(range.hi)}] (pixels 0..255 under the manifest's scale, mean and std)`);
}

/** Throw tensor_out_of_range naming the first element of NCHW `data` outside its channel's range
 * (NaN too); `where(i)` names image i in the message (default: its index). */
export function checkInputRange(data: ArrayLike<number>, spec: InputSpec, where: (image: number) => string = tensorName): void {
  const [c, h, w] = spec.shape;
  const plane = h * w;
  const ranges = inputRanges(spec);
  const images = Math.floor(data.length / (c * plane));
  for (let i = 0; i < images; i++) {
    for (let ch = 0; ch < c; ch++) {
      const { lo, hi } = ranges[ch];
      const start = (i * c + ch) * plane;
      for (let k = start; k < start + plane; k++) {
        const v = data[k];
        // Written so that NaN fails too.
        if (!(v >= lo && v <= hi)) throw outOfRange(where(i), k - i * c * plane, ch, v, ranges[ch]);
      }
    }
  }
}

/**
 * Check nested-array tensors against [C, H, W] (or [1, C, H, W]), finiteness and the input range,
 * and copy them into one NCHW buffer. `what(i)` names tensor i in errors (default: its index; a
 * protocol names its own field).
 */
export function tensorsToBatch(tensors: readonly unknown[], spec: InputSpec, what: (i: number) => string = tensorName): Float32Array {
  const [c, h, w] = spec.shape;
  const size = c * h * w;
  const out = new Float32Array(tensors.length * size);
  tensors.forEach((t, i) => {
    const flat: unknown[] = [];
    const shape: number[] = [];
    const walk = (v: unknown, depth: number): void => {
      if (depth > 4) throw new InputError('bad_tensor', `${what(i)}: nested deeper than [1, ${c}, ${h}, ${w}]`);
      if (Array.isArray(v)) {
        if (shape[depth] === undefined) shape[depth] = v.length;
        else if (shape[depth] !== v.length) throw new InputError('bad_tensor', `${what(i)}: ragged nested arrays`);
        for (const x of v) walk(x, depth + 1);
      } else {
        flat.push(v);
      }
    };
    walk(t, 0);
    const expected = [c, h, w];
    const ok = (shape.length === 3 && shape.every((d, k) => d === expected[k]))
      || (shape.length === 4 && shape[0] === 1 && shape.slice(1).every((d, k) => d === expected[k]));
    if (!ok || flat.length !== size) {
      throw new InputError('bad_tensor', `${what(i)}: shape [${shape.join(', ')}] does not match the model input [${expected.join(', ')}]`);
    }
    for (let k = 0; k < size; k++) {
      const v = flat[k];
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        throw new InputError('bad_tensor', `${what(i)}: element ${k} is ${JSON.stringify(v)}; every element must be a finite number`);
      }
    }
    // Checked as sent (float64), before float32 would turn 1e39 into Infinity.
    checkInputRange(flat as number[], spec, () => what(i));
    out.set(flat as number[], i * size);
  });
  return out;
}
