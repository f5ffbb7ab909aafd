/**
 * Open Inference Protocol (KServe v2) inference bodies: request decoding and response encoding,
 * including the binary tensor data extension that Triton's clients use by default (a JSON header of
 * `Inference-Header-Content-Length` bytes, then each binary tensor's raw little-endian bytes) and
 * the classification extension (top-k as "probability:index:label" strings).
 *
 * The model has one input, FP32 [N, C, H, W] with C, H, W from the manifest, and one output,
 * `probabilities`, FP32 [N, classes]. Every check names the field and the allowed values.
 */
import type { InputSpec, Manifest } from '../ensemble/manifest.js';
import { InputError } from '../errors.js';
import { checkInputRange, inputRanges, outOfRange } from '../preprocess/tensor.js';
import { topClasses } from './probabilities.js';

const badRequest = (code: string, message: string) => new InputError(code, message);

export const OUTPUT_NAME = 'probabilities';
const DATATYPE = 'FP32';

export interface TensorSpec {
  /** The served model; a request's optional model_name / model_version must name it. */
  readonly model: { readonly name: string; readonly version: string };
  readonly input: InputSpec;
  readonly classes: number;
  readonly maxImages: number;
}

/** A model's tensor contract as its manifest states it, with the request bound (--max-images-per-request). */
export function tensorSpec(manifest: Manifest, maxImages: number): TensorSpec {
  return { model: { name: manifest.name, version: manifest.version }, input: manifest.input, classes: manifest.output.classes, maxImages };
}

/** Model metadata (GET /v2/models/{name}, gRPC ModelMetadata): the manifest's name, version and tensors. */
export function modelMetadata(manifest: Manifest, platform: string) {
  return {
    name: manifest.name,
    versions: [manifest.version],
    platform,
    inputs: [{ name: manifest.input.name, datatype: DATATYPE, shape: [-1, ...manifest.input.shape] }],
    outputs: [{ name: OUTPUT_NAME, datatype: DATATYPE, shape: [-1, manifest.output.classes] }],
  };
}

export interface RequestedOutput {
  readonly name: string;
  readonly binary: boolean;
  /** 0: the probability tensor; k > 0: the top k classes as BYTES (classification extension). */
  readonly classification: number;
}

export interface InferRequest {
  readonly id?: string;
  /** NCHW float32 */
  readonly data: Float32Array;
  readonly n: number;
  readonly outputs: readonly RequestedOutput[];
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function checkKeys(obj: Json, allowed: readonly string[], where: string): void {
  const unknown = Object.keys(obj).filter((k) => !allowed.includes(k));
  if (unknown.length) throw badRequest('bad_request', `${where}: unknown key(s) ${unknown.join(', ')}; allowed: ${allowed.join(', ')}`);
}

function booleanParam(params: Json, key: string, where: string): boolean | undefined {
  const v = params[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw badRequest('bad_request', `${where}.parameters.${key}: expected true or false`);
  return v;
}

/** Flatten JSON tensor data (flat or nested row-major) into `out`, checking count, finiteness and
 * the input range (as sent, before float32 turns 1e39 into Infinity). */
function readJsonData(data: unknown, rank: number, out: Float32Array, spec: InputSpec, where: string): void {
  const [c, h, w] = spec.shape;
  const plane = h * w;
  const ranges = inputRanges(spec);
  if (readFlat(data, out, c, plane, ranges)) return;
  let count = 0;
  const walk = (v: unknown, depth: number): void => {
    if (Array.isArray(v)) {
      if (depth >= rank) throw badRequest('bad_tensor', `${where}.data: nested deeper than the shape's ${rank} dimensions`);
      for (const x of v) walk(x, depth + 1);
      return;
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw badRequest('bad_tensor', `${where}.data: element ${count} is ${JSON.stringify(v)}; every element must be a finite number`);
    }
    if (count >= out.length) throw badRequest('bad_tensor', `${where}.data: more than the ${out.length} elements the shape holds`);
    const channel = Math.floor(count / plane) % c;
    if (v < ranges[channel].lo || v > ranges[channel].hi) throw outOfRange(`${where}.data`, count, channel, v, ranges[channel]);
    out[count++] = v;
  };
  walk(data, 0);
  if (count !== out.length) throw badRequest('bad_tensor', `${where}.data: ${count} elements, the shape holds ${out.length}`);
}

/** The common case of readJsonData: a flat array of exactly out.length numbers, all in range. Returns
 * false at the first thing that is not, and readJsonData's walk then finds it and names it. */
function readFlat(data: unknown, out: Float32Array, c: number, plane: number, ranges: readonly { lo: number; hi: number }[]): boolean {
  if (!Array.isArray(data) || data.length !== out.length) return false;
  let k = 0;
  while (k < out.length) {
    for (let channel = 0; channel < c; channel++) {
      const { lo, hi } = ranges[channel];
      for (const end = k + plane; k < end; k++) {
        const v: unknown = data[k];
        if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) return false;
        out[k] = v;
      }
    }
  }
  return true;
}

function readBinaryData(bytes: Buffer, out: Float32Array, spec: InputSpec, where: string): void {
  // Copy through bytes: the slice need not be 4-byte aligned. The protocol's byte order is little
  // endian, as is every platform onnxruntime-node ships for.
  new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(bytes);
  // A float32 is NaN or infinite exactly when its 8 exponent bits are all ones: one integer test
  // per element, several times faster than Number.isFinite on the float for a 64-image batch.
  const bits = new Int32Array(out.buffer, out.byteOffset, out.length);
  const count = bits.length;
  for (let k = 0; k < count; k++) {
    if ((bits[k] & 0x7f800000) === 0x7f800000) {
      throw badRequest('bad_tensor', `${where}: element ${k} is ${out[k]}; every element must be a finite number`);
    }
  }
  checkInputRange(out, spec, () => where);
}

/**
 * Decode an inference request: `body` is the JSON (header) object, `binary` the bytes after the
 * header when the binary extension is used (else null).
 */
export function decodeInferRequest(body: unknown, binary: Buffer | null, spec: TensorSpec): InferRequest {
  if (!isObject(body)) throw badRequest('bad_request', 'the inference request must be a JSON object');
  // model_name and model_version are not in the protocol's request body, but KServe's Python SDK
  // sends them: accepted when they name the served model.
  checkKeys(body, ['id', 'parameters', 'inputs', 'outputs', 'model_name', 'model_version'], 'request');
  const { id, inputs, outputs } = body;
  if (body.model_name !== undefined && body.model_name !== spec.model.name) {
    throw badRequest('bad_request', `model_name: '${String(body.model_name)}' is not the model of this path, '${spec.model.name}'`);
  }
  if (body.model_version !== undefined && body.model_version !== null && body.model_version !== '' && body.model_version !== spec.model.version) {
    throw badRequest('bad_request', `model_version: '${String(body.model_version)}' is not the served version, '${spec.model.version}'`);
  }
  const params = body.parameters ?? {};
  if (id !== undefined && typeof id !== 'string') throw badRequest('bad_request', 'id: expected a string');
  if (!isObject(params)) throw badRequest('bad_request', 'parameters: expected an object');
  const [c, h, w] = spec.input.shape;
  const name = spec.input.name;
  if (!Array.isArray(inputs) || inputs.length !== 1) {
    throw badRequest('bad_request', `inputs: expected exactly one input tensor, '${name}' (FP32 [N, ${c}, ${h}, ${w}])`);
  }
  const input = inputs[0];
  const where = 'inputs[0]';
  if (!isObject(input)) throw badRequest('bad_request', `${where}: expected an object with name, shape, datatype and data`);
  checkKeys(input, ['name', 'shape', 'datatype', 'parameters', 'data'], where);
  if (input.name !== name) throw badRequest('bad_request', `${where}.name: '${String(input.name)}' is not an input of this model; its input is '${name}'`);
  if (input.datatype !== DATATYPE) {
    throw badRequest('bad_tensor', `${where}.datatype: '${String(input.datatype)}' is not accepted; '${name}' is ${DATATYPE}`);
  }
  const shape = input.shape;
  const expected = `[N, ${c}, ${h}, ${w}] with N in [1, ${spec.maxImages}]`;
  if (!Array.isArray(shape) || shape.length !== 4 || !shape.every((d) => Number.isInteger(d))
    || shape[1] !== c || shape[2] !== h || shape[3] !== w) {
    throw badRequest('bad_tensor', `${where}.shape: ${JSON.stringify(shape)} does not match ${expected}`);
  }
  const n = shape[0] as number;
  if (n < 1 || n > spec.maxImages) {
    throw badRequest(n > spec.maxImages ? 'too_many_images' : 'bad_tensor', `${where}.shape: batch ${n} is out of range [1, ${spec.maxImages}]`);
  }
  const data = new Float32Array(n * c * h * w);
  const inputParams = input.parameters ?? {};
  if (!isObject(inputParams)) throw badRequest('bad_request', `${where}.parameters: expected an object`);
  const binarySize = inputParams.binary_data_size;
  if (binarySize !== undefined) {
    if (input.data !== undefined) throw badRequest('bad_request', `${where}: has both data and parameters.binary_data_size`);
    if (!binary) throw badRequest('bad_request', `${where}.parameters.binary_data_size is set but the request has no binary part (Inference-Header-Content-Length header)`);
    if (binarySize !== data.byteLength) {
      throw badRequest('bad_tensor', `${where}.parameters.binary_data_size: ${JSON.stringify(binarySize)} bytes, the shape needs ${data.byteLength}`);
    }
    if (binary.length !== binarySize) {
      throw badRequest('bad_request', `the binary part has ${binary.length} bytes; the inputs declare ${binarySize}`);
    }
    readBinaryData(binary, data, spec.input, where);
  } else {
    if (binary && binary.length > 0) throw badRequest('bad_request', `the request has ${binary.length} binary bytes that no input declares (binary_data_size)`);
    if (!Array.isArray(input.data)) throw badRequest('bad_tensor', `${where}.data: expected an array of ${data.length} numbers (or parameters.binary_data_size)`);
    readJsonData(input.data, 4, data, spec.input, where);
  }

  const binaryDefault = booleanParam(params, 'binary_data_output', 'request') ?? false;
  let requested: RequestedOutput[];
  if (outputs === undefined) {
    requested = [{ name: OUTPUT_NAME, binary: binaryDefault, classification: 0 }];
  } else {
    if (!Array.isArray(outputs) || outputs.length === 0) throw badRequest('bad_request', `outputs: expected a non-empty array (the output is '${OUTPUT_NAME}')`);
    // Each output at most once: a repeated name would copy the whole result into the answer again.
    const seen = new Set<unknown>();
    outputs.forEach((o, i) => {
      if (!isObject(o)) return;
      const name = o.name;
      if (seen.has(name)) throw badRequest('duplicate_output', `outputs[${i}].name: '${String(name)}' is requested twice; name each output once`);
      seen.add(name);
    });
    requested = outputs.map((o, i) => {
      const at = `outputs[${i}]`;
      if (!isObject(o)) throw badRequest('bad_request', `${at}: expected an object with a name`);
      checkKeys(o, ['name', 'parameters'], at);
      if (o.name !== OUTPUT_NAME) throw badRequest('bad_request', `${at}.name: '${String(o.name)}' is not an output of this model; its output is '${OUTPUT_NAME}'`);
      const p = o.parameters ?? {};
      if (!isObject(p)) throw badRequest('bad_request', `${at}.parameters: expected an object`);
      const k = p.classification ?? 0;
      if (!Number.isInteger(k) || (k as number) < 0 || (k as number) > spec.classes) {
        throw badRequest('bad_request', `${at}.parameters.classification: ${JSON.stringify(k)} is out of range [0, ${spec.classes}]`);
      }
      return { name: OUTPUT_NAME, binary: booleanParam(p, 'binary_data', at) ?? binaryDefault, classification: k as number };
    });
  }
  return { id, data, n, outputs: requested };
}

export interface OutputTensor {
  name: string;
  datatype: string;
  shape: number[];
  data?: (number | string)[];
  parameters?: { binary_data_size: number };
}

export interface InferResponse {
  /** The JSON part. */
  readonly header: { model_name: string; model_version: string; id?: string; outputs: OutputTensor[] };
  /** The binary part, in output order; null when every output is JSON. */
  readonly binary: Buffer | null;
}

function classificationStrings(probs: readonly Float32Array[], k: number, labels: readonly string[]): string[] {
  const out: string[] = [];
  for (const p of probs) {
    for (const index of topClasses(p, k)) out.push(`${Number(p[index].toPrecision(6))}:${index}:${labels[index]}`);
  }
  return out;
}

/** BYTES elements in binary form: each a 4-byte little-endian length, then its UTF-8 bytes. */
function bytesTensor(strings: readonly string[]): Buffer {
  return Buffer.concat(strings.flatMap((s) => {
    const b = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    return [len, b];
  }));
}

export function encodeInferResponse(req: InferRequest, probs: readonly Float32Array[], model: { name: string; version: string },
  labels: readonly string[]): InferResponse {
  const classes = labels.length;
  const parts: Buffer[] = [];
  const outputs = req.outputs.map((o): OutputTensor => {
    let tensor: OutputTensor;
    let bytes: () => Buffer;
    if (o.classification > 0) {
      const strings = classificationStrings(probs, o.classification, labels);
      tensor = { name: o.name, datatype: 'BYTES', shape: [req.n, o.classification], data: strings };
      bytes = () => bytesTensor(strings);
    } else {
      const flat = new Float32Array(req.n * classes);
      probs.forEach((p, i) => flat.set(p, i * classes));
      // Binary outputs go as bytes: no JSON array of them is built.
      tensor = { name: o.name, datatype: DATATYPE, shape: [req.n, classes], ...(o.binary ? {} : { data: Array.from(flat) }) };
      bytes = () => Buffer.from(flat.buffer, flat.byteOffset, flat.byteLength);
    }
    if (!o.binary) return tensor;
    const b = bytes();
    parts.push(b);
    return { name: tensor.name, datatype: tensor.datatype, shape: tensor.shape, parameters: { binary_data_size: b.length } };
  });
  const header = { model_name: model.name, model_version: model.version, ...(req.id !== undefined ? { id: req.id } : {}), outputs };
  return { header, binary: parts.length ? Buffer.concat(parts) : null };
}
