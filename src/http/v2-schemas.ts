/**
 * Route schemas of the Open Inference Protocol (KServe v2) REST API, as served by v2.ts. They
 * validate, serialise and document (openapi.yaml) the JSON parts; the binary tensor extension's
 * bytes are described in the infer route's text and checked by v2-codec.ts.
 */
const tags = ['Open Inference Protocol (v2)'];

const errorBody = {
  type: 'object',
  required: ['error'],
  properties: {
    error: { type: 'string', description: 'what was wrong (the protocol\'s error field)' },
    code: { type: 'string', description: 'machine-readable code, e.g. bad_tensor, unknown_model, overloaded' },
  },
} as const;

const tensorMetadata = {
  type: 'object',
  required: ['name', 'datatype', 'shape'],
  properties: {
    name: { type: 'string' },
    datatype: { type: 'string' },
    shape: { type: 'array', items: { type: 'integer' }, description: '-1 marks the variable batch dimension' },
  },
} as const;

const modelParams = {
  type: 'object',
  required: ['name'],
  properties: { name: { type: 'string', description: 'the served model name (the package name)' } },
} as const;

const versionParams = {
  type: 'object',
  required: ['name', 'version'],
  properties: { ...modelParams.properties, version: { type: 'string', description: "the package's version" } },
} as const;

const emptyOk = { description: 'true (the body is empty)' } as const;

export const v2ServerMetadataSchema = {
  tags,
  summary: 'Server metadata: name, version and the protocol extensions supported',
  response: {
    200: {
      type: 'object',
      required: ['name', 'version', 'extensions'],
      properties: { name: { type: 'string' }, version: { type: 'string' }, extensions: { type: 'array', items: { type: 'string' } } },
    },
  },
} as const;

export const v2LiveSchema = {
  tags,
  summary: 'Server live: 200 while the process can answer',
  response: { 200: emptyOk },
} as const;

export const v2ReadySchema = {
  tags,
  summary: 'Server ready: 200 once the model is loaded, checked and warm; 503 before that and while draining',
  response: { 200: emptyOk, 503: { description: 'not ready', ...errorBody } },
} as const;

const modelMetadataResponse = {
  200: {
    type: 'object',
    required: ['name', 'platform', 'inputs', 'outputs'],
    properties: {
      name: { type: 'string' },
      versions: { type: 'array', items: { type: 'string' } },
      platform: { type: 'string' },
      inputs: { type: 'array', items: tensorMetadata },
      outputs: { type: 'array', items: tensorMetadata },
    },
  },
  404: { description: 'unknown model or version', ...errorBody },
  503: { description: 'the model is still loading', ...errorBody },
} as const;

export const v2ModelMetadataSchema = {
  tags, summary: 'Model metadata: input and output tensors', params: modelParams, response: modelMetadataResponse,
} as const;
export const v2ModelVersionMetadataSchema = { ...v2ModelMetadataSchema, params: versionParams } as const;

const modelReadyResponse = {
  200: emptyOk,
  404: { description: 'unknown model or version', ...errorBody },
  503: { description: 'the model is not ready', ...errorBody },
} as const;

export const v2ModelReadySchema = { tags, summary: 'Model ready', params: modelParams, response: modelReadyResponse } as const;
export const v2ModelVersionReadySchema = { ...v2ModelReadySchema, params: versionParams } as const;

const parameters = { type: 'object', additionalProperties: true } as const;

const inferRequest = {
  type: 'object',
  required: ['inputs'],
  additionalProperties: false,
  properties: {
    id: { type: 'string' },
    parameters: { ...parameters, description: 'binary_data_output: true returns every output as binary data' },
    inputs: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['name', 'shape', 'datatype'],
        additionalProperties: false,
        properties: {
          name: { type: 'string' },
          shape: { type: 'array', items: { type: 'integer' } },
          datatype: { type: 'string' },
          parameters: { ...parameters, description: 'binary_data_size: the tensor\'s bytes follow the JSON header' },
          data: { type: 'array', description: 'row-major elements, flat or nested' },
        },
      },
    },
    outputs: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name'],
        additionalProperties: false,
        properties: {
          name: { type: 'string' },
          parameters: { ...parameters, description: 'binary_data: bool; classification: k returns the top k as "p:index:label"' },
        },
      },
    },
  },
} as const;

export const v2InferSchema = {
  tags,
  summary: 'Inference: each image of the batch is answered by one member drawn at random',
  description:
    "One input tensor, FP32 [N, C, H, W] in the model's pre-processed input space (see the model metadata), and one "
    + 'output, `probabilities`, FP32 [N, classes]. Data may be JSON or, with the binary tensor extension, raw '
    + 'little-endian bytes after a JSON header whose length the `Inference-Header-Content-Length` header gives (then '
    + 'any Content-Type is accepted). The classification extension (output parameter `classification: k`) returns the '
    + 'top k classes. Errors are `{ "error": message, "code": code }`.',
  params: modelParams,
  body: inferRequest,
  response: {
    200: {
      description: 'the outputs (binary ones after the JSON header when the binary extension is used)',
      type: 'object',
      required: ['model_name', 'outputs'],
      properties: {
        model_name: { type: 'string' },
        model_version: { type: 'string' },
        id: { type: 'string' },
        outputs: {
          type: 'array',
          items: {
            type: 'object',
            required: ['name', 'datatype', 'shape'],
            properties: {
              ...tensorMetadata.properties,
              parameters: { type: 'object', properties: { binary_data_size: { type: 'integer' } } },
              data: { type: 'array', items: {} },
            },
          },
        },
      },
    },
    '4xx': { description: 'bad request: the message names the field and the allowed values', ...errorBody },
    429: { description: 'with Retry-After: rate_limited, or query_attack_suspected (--detect reject)', ...errorBody },
    503: { description: 'not ready, overloaded (with Retry-After), timed out or shutting down', ...errorBody },
  },
} as const;
export const v2InferVersionSchema = { ...v2InferSchema, params: versionParams } as const;
