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

const liveBody = {
  description: 'the process can answer', type: 'object', required: ['live'], properties: { live: { type: 'boolean' } },
} as const;
const readyBody = {
  description: 'ready to serve', type: 'object', required: ['ready'], properties: { ready: { type: 'boolean' } },
} as const;
const modelReadyBody = {
  description: 'the model is ready', type: 'object', required: ['name', 'ready'],
  properties: { name: { type: 'string' }, ready: { type: 'boolean' } },
} as const;

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
  response: { 200: liveBody },
} as const;

export const v2ReadySchema = {
  tags,
  summary: 'Server ready: 200 once the model is loaded, checked and warm; 503 before that and while draining',
  response: { 200: readyBody, 503: { description: 'not ready', ...errorBody } },
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
  200: modelReadyBody,
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
    model_name: { type: 'string', description: "not in the protocol; KServe's SDK sends it: must name the path's model" },
    model_version: { type: 'string', description: "not in the protocol; KServe's SDK may send it: must be the served version" },
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
          shape: { type: 'array', minItems: 1, items: { type: 'integer', minimum: 1 }, description: '[N, C, H, W] (or [C, H, W]); every dimension at least 1' },
          datatype: { type: 'string' },
          parameters: { ...parameters, description: 'binary_data_size: the tensor\'s bytes follow the JSON header' },
          data: { type: 'array', description: 'row-major elements, flat or nested' },
        },
      },
    },
    outputs: {
      type: 'array',
      description: 'each output at most once (400 duplicate_output)',
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
      description: 'the outputs; with binary outputs, a JSON header of Inference-Header-Content-Length bytes and then the tensors',
      content: {
        'application/json': {
          schema: {
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
        },
        'application/octet-stream': {
          schema: { type: 'string', format: 'binary', description: 'the JSON header, then each binary output\'s bytes in order' },
        },
      },
    },
    '4xx': { description: 'bad request: the message names the field and the allowed values', ...errorBody },
    429: { description: 'with Retry-After: rate_limited, or query_attack_suspected (--detect reject)', ...errorBody },
    503: { description: 'not ready, overloaded (with Retry-After), timed out or shutting down', ...errorBody },
  },
} as const;
export const v2InferVersionSchema = { ...v2InferSchema, params: versionParams } as const;

const counter = {
  type: 'object', required: ['count', 'ns'],
  properties: { count: { type: 'integer' }, ns: { type: 'integer', description: 'nanoseconds, summed' } },
} as const;

const modelStats = {
  type: 'object',
  required: ['name', 'version', 'inference_count', 'execution_count', 'inference_stats'],
  properties: {
    name: { type: 'string' },
    version: { type: 'string' },
    last_inference: { type: 'integer', description: 'not kept: 0' },
    inference_count: { type: 'integer', description: 'images answered (one per image, whatever the sampling)' },
    execution_count: { type: 'integer', description: 'inference requests answered; member runs depend on the draw and are on the internal metrics port only' },
    inference_stats: {
      type: 'object',
      properties: Object.fromEntries(['success', 'fail', 'queue', 'compute_input', 'compute_infer', 'compute_output', 'cache_hit', 'cache_miss']
        .map((k) => [k, counter])),
      description: 'success and fail per request; queue and compute per member run are not reported here (0): they depend on the draw',
    },
    batch_stats: { type: 'array', items: { type: 'object', additionalProperties: true } },
  },
} as const;

const statsResponse = {
  200: {
    description: 'counts and times from the Prometheus metrics, /classify and v2 infer together',
    type: 'object', required: ['model_stats'], properties: { model_stats: { type: 'array', items: modelStats } },
  },
  404: { description: 'unknown model', ...errorBody },
  503: { description: 'the model is still loading', ...errorBody },
} as const;

export const v2StatsSchema = {
  tags, summary: "Statistics of every model (Triton's statistics extension; one model here)", response: statsResponse,
} as const;
export const v2ModelStatsSchema = {
  tags, summary: "Model statistics (Triton's statistics extension)", params: modelParams, response: statsResponse,
} as const;

const configTensor = {
  type: 'object',
  required: ['name', 'data_type', 'dims'],
  properties: { name: { type: 'string' }, data_type: { type: 'string' }, format: { type: 'string' }, dims: { type: 'array', items: { type: 'integer' } } },
} as const;

export const v2ModelConfigSchema = {
  tags,
  summary: "Model configuration (Triton's model configuration extension), derived from the manifest and the flags",
  params: modelParams,
  response: {
    200: {
      type: 'object',
      required: ['name', 'platform', 'max_batch_size', 'input', 'output'],
      properties: {
        name: { type: 'string' },
        platform: { type: 'string' },
        backend: { type: 'string' },
        version_policy: { type: 'object', additionalProperties: true },
        max_batch_size: { type: 'integer', description: 'images per request (--max-images)' },
        input: { type: 'array', items: configTensor },
        output: { type: 'array', items: configTensor },
        dynamic_batching: {
          type: 'object',
          properties: {
            max_queue_delay_microseconds: { type: 'integer' },
            preferred_batch_size: { type: 'array', items: { type: 'integer' } },
          },
        },
        instance_group: {
          type: 'array',
          items: { type: 'object', properties: { name: { type: 'string' }, count: { type: 'integer' }, kind: { type: 'string' } } },
        },
        parameters: {
          type: 'object',
          additionalProperties: { type: 'object', properties: { string_value: { type: 'string' } } },
        },
      },
    },
    404: { description: 'unknown model', ...errorBody },
    503: { description: 'the model is still loading', ...errorBody },
  },
} as const;

export const v2RepositoryIndexSchema = {
  tags,
  summary: "Model repository index (Triton's model repository extension): every model with its state and why it is not ready",
  description: 'The request body may be empty or a JSON object; `{ "ready": true }` lists only the ready models. '
    + 'States: LOADING, READY, UNAVAILABLE (failed, or unloaded), UNLOADING. A model that keeps serving an older version while a newer one failed is READY, with the failure in `reason`.',
  response: {
    200: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'state'],
        properties: { name: { type: 'string' }, version: { type: 'string' }, state: { type: 'string' }, reason: { type: 'string' } },
      },
    },
  },
} as const;

const repositoryAction = (action: 'load' | 'unload', summary: string) => ({
  tags,
  summary,
  description: '403 model_control unless the server runs with --model-repository DIR --model-control explicit; '
    + 'behind the API key when one is set. The request body may be empty or a JSON object (its parameters are ignored).',
  params: { type: 'object', required: ['name'], properties: { name: { type: 'string', description: `the model folder to ${action}` } } },
  response: {
    200: { type: 'object', additionalProperties: false, properties: {} },
    ...(action === 'load' ? { 400: { description: 'load_failed: the package failed its checks; the version serving before keeps serving', ...errorBody } } : {}),
    403: { description: 'model_control: the repository API is off', ...errorBody },
    404: { description: 'unknown_model', ...errorBody },
  },
});

export const v2RepositoryLoadSchema = repositoryAction('load',
  "Load or reload a model (Triton's model repository extension): its highest version loads beside the serving one, is checked against its golden logits, warmed, then swapped in");
export const v2RepositoryUnloadSchema = repositoryAction('unload',
  "Unload a model (Triton's model repository extension): new requests get 404 at once; it stops once its in-flight requests are answered");
