/**
 * ModelInferRequest -> the batch the REST v2 codec produces (InferRequest), and the result back
 * into a ModelInferResponse. Every check of the REST form is the REST codec's own: the request is
 * handed to decodeInferRequest in the shape of a binary-extension request, with the input's
 * elements as its binary part, so a gRPC client meets the same limits and reads the same messages.
 * Only what REST has no counterpart for is checked here: raw_input_contents against the inputs,
 * and the element count against the request's own shape, named by the gRPC field.
 *
 * Typed contents (fp32_contents) take the binary path too: protobuf floats are float32 already,
 * and the binary checks (finite values, input range) are the ones that fit float32 data.
 * Every output is answered in raw_output_contents, what tritonclient and kserve read first.
 */
import { InputError } from '../errors.js';
import { decodeInferRequest, encodeInferResponse, type InferRequest, type TensorSpec } from '../http/v2-codec.js';
import type { ModelInferRequest, ModelInferResponse, Parameters } from './proto.js';

const DATATYPE = 'FP32';
const FLOAT_BYTES = 4;

/** Parameters as the REST form carries them: each name with the one value it holds. */
function jsonParameters(params: Parameters): Record<string, unknown> {
  return Object.fromEntries(Object.entries(params).map(([k, p]) => [k, p.parameter_choice === undefined ? null : p[p.parameter_choice]]));
}

/** Elements a shape holds, or null when it is not a list of sizes (the REST checks report it). */
function elementsOf(shape: readonly number[]): number | null {
  return shape.every((d) => Number.isSafeInteger(d) && d >= 0) ? shape.reduce((a, d) => a * d, 1) : null;
}

/** The first input's elements as little-endian float32 bytes, from whichever form carries them. */
function inputBytes(req: ModelInferRequest): Buffer | null {
  const { inputs, raw_input_contents: raw } = req;
  if (raw.length > 0 && raw.length !== inputs.length) {
    throw new InputError('bad_request', `raw_input_contents: ${raw.length} entries for ${inputs.length} inputs; send one per input, in the order of inputs`);
  }
  const input = inputs[0];
  if (input === undefined) return null;
  const elements = input.datatype === DATATYPE ? elementsOf(input.shape) : null;
  const typed = input.contents?.fp32_contents ?? [];
  if (raw.length > 0) {
    if (typed.length > 0) throw new InputError('bad_request', 'inputs[0].contents: set together with raw_input_contents; send the data in one of them');
    if (elements !== null && raw[0].length !== elements * FLOAT_BYTES) {
      throw new InputError('bad_tensor', `raw_input_contents[0]: ${raw[0].length} bytes; the shape ${JSON.stringify(input.shape)} of ${DATATYPE} needs ${elements * FLOAT_BYTES}`);
    }
    return raw[0];
  }
  if (elements !== null && typed.length !== elements) {
    throw new InputError('bad_tensor', `inputs[0].contents.fp32_contents: ${typed.length} elements; the shape ${JSON.stringify(input.shape)} holds ${elements}`);
  }
  const floats = Float32Array.from(typed);
  return Buffer.from(floats.buffer, floats.byteOffset, floats.byteLength);
}

export function decodeModelInfer(req: ModelInferRequest, spec: TensorSpec): InferRequest {
  const binary = inputBytes(req);
  const body = {
    ...(req.id === '' ? {} : { id: req.id }),
    parameters: jsonParameters(req.parameters),
    inputs: req.inputs.map((input, i) => ({
      name: input.name, datatype: input.datatype, shape: input.shape,
      parameters: { ...jsonParameters(input.parameters), ...(i === 0 && binary ? { binary_data_size: binary.length } : {}) },
    })),
    ...(req.outputs.length === 0 ? {} : { outputs: req.outputs.map((o) => ({ name: o.name, parameters: jsonParameters(o.parameters) })) }),
  };
  const batch = decodeInferRequest(body, binary, spec);
  return { ...batch, outputs: batch.outputs.map((o) => ({ ...o, binary: true })) };
}

export function encodeModelInfer(batch: InferRequest, probs: readonly Float32Array[], model: TensorSpec['model'],
  labels: readonly string[]): ModelInferResponse {
  const { header, binary } = encodeInferResponse(batch, probs, model, labels);
  let at = 0;
  const raw = header.outputs.map((o) => {
    const size = o.parameters!.binary_data_size;
    at += size;
    return binary!.subarray(at - size, at);
  });
  return {
    model_name: header.model_name,
    model_version: header.model_version,
    id: header.id ?? '',
    outputs: header.outputs.map(({ name, datatype, shape }) => ({ name, datatype, shape })),
    raw_output_contents: raw,
  };
}
