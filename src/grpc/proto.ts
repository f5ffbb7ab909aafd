/**
 * The protocol's messages, loaded once from proto/ (the .proto files are the one source of the
 * wire format; no generated code is kept). Decoded messages use the proto's own field names, int64
 * as numbers (shapes and parameters are far below 2^53), bytes as Buffers, and every field present
 * (proto3 defaults filled in), so that the codec never meets `undefined`.
 */
import { fileURLToPath } from 'node:url';
import { loadPackageDefinition, type GrpcObject, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync, type MessageTypeDefinition, type Options } from '@grpc/proto-loader';

/** proto/ at the repository root (this file runs as dist/src/grpc/proto.js). */
const PROTO_DIR = fileURLToPath(new URL('../../../proto/', import.meta.url));
export const PREDICT_PROTO = `${PROTO_DIR}grpc_predict_v2.proto`;
export const STATUS_PROTO = `${PROTO_DIR}google_rpc.proto`;

export const LOAD_OPTIONS: Options = { keepCase: true, longs: Number, enums: String, bytes: Buffer, defaults: true, oneofs: true };

const predict = loadSync(PREDICT_PROTO, LOAD_OPTIONS);
const rpc = loadSync(STATUS_PROTO, LOAD_OPTIONS);

/** inference.GRPCInferenceService, for Server.addService. */
export const inferenceService = ((loadPackageDefinition(predict).inference as GrpcObject)
  .GRPCInferenceService as unknown as { service: ServiceDefinition }).service;

/** Serialize a google.rpc message (Status, RetryInfo, ErrorInfo) to its wire bytes. */
export function encodeRpcMessage(name: 'Status' | 'RetryInfo' | 'ErrorInfo', value: object): Buffer {
  return (rpc[`google.rpc.${name}`] as MessageTypeDefinition<object, object>).serialize(value);
}

export interface InferParameter {
  /** Which value is set (the oneof's name), or undefined when none is. */
  parameter_choice?: 'bool_param' | 'int64_param' | 'string_param' | 'double_param' | 'uint64_param';
  bool_param?: boolean;
  int64_param?: number;
  string_param?: string;
  double_param?: number;
  uint64_param?: number;
}

export type Parameters = Record<string, InferParameter>;

export interface InferTensorContents {
  fp32_contents: number[];
}

export interface InferInputTensor {
  name: string;
  datatype: string;
  shape: number[];
  parameters: Parameters;
  contents: InferTensorContents | null;
}

export interface ModelInferRequest {
  model_name: string;
  model_version: string;
  id: string;
  parameters: Parameters;
  inputs: InferInputTensor[];
  outputs: { name: string; parameters: Parameters }[];
  raw_input_contents: Buffer[];
}

export interface TensorMetadata {
  name: string;
  datatype: string;
  shape: number[];
}

export interface ModelMetadataResponse {
  name: string;
  versions: string[];
  platform: string;
  inputs: TensorMetadata[];
  outputs: TensorMetadata[];
}

export interface ModelInferResponse {
  model_name: string;
  model_version: string;
  id: string;
  outputs: TensorMetadata[];
  raw_output_contents: Buffer[];
}

/** ModelReady and ModelMetadata name a model this way. */
export interface ModelRef {
  name: string;
  version: string;
}
