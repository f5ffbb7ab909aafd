/**
 * One schema per route: Fastify validates and serialises with it, and @fastify/swagger builds the
 * OpenAPI document from it (openapi.yaml is that document, written by `npm run openapi`).
 */
import { IMAGE_TYPES } from '../preprocess/image.js';

const errorBody = {
  type: 'object',
  required: ['error', 'message'],
  properties: {
    error: { type: 'string', description: 'machine-readable code, e.g. not_an_image, body_too_large' },
    message: { type: 'string', description: 'what was wrong, naming the field and the allowed range' },
  },
} as const;

const prediction = {
  type: 'object',
  required: ['index', 'label', 'probability'],
  properties: {
    index: { type: 'integer', minimum: 0 },
    label: { type: 'string' },
    probability: { type: 'number', minimum: 0, maximum: 1 },
  },
} as const;

const predictions = { type: 'array', items: prediction } as const;

const binaryImage = { description: 'the image file itself', format: 'binary' } as const;

export const classifySchema = {
  summary: 'Classify images; each image is answered by one ensemble member drawn at random',
  description:
    'Send one image as the body (image/png, jpeg, webp, gif or tiff) to get `{ model, predictions }`, or several as '
    + 'multipart/form-data, JSON `{ "images": [base64, ...] }`, or JSON `{ "tensors": [...] }` already in the '
    + "model's input shape [C, H, W], to get `{ model, results: [{ predictions }] }`. The member that answered is "
    + 'never revealed.',
  querystring: {
    type: 'object',
    additionalProperties: false,
    properties: {
      topK: {
        type: 'string',
        pattern: '^(all|[1-9][0-9]{0,4})$',
        description: 'how many classes to return, most probable first (default 5; "all" for every class)',
      },
    },
  },
  body: {
    content: {
      'application/json': {
        schema: {
          type: 'object',
          additionalProperties: false,
          minProperties: 1,
          maxProperties: 1,
          properties: {
            images: { type: 'array', minItems: 1, items: { type: 'string', description: 'base64-encoded image' } },
            tensors: { type: 'array', minItems: 1, items: { type: 'array' }, description: 'float tensors of shape [C, H, W]' },
          },
        },
      },
      'multipart/form-data': {
        schema: { description: 'one or more image files (any field names)', format: 'binary' },
      },
      ...Object.fromEntries(IMAGE_TYPES.map((t) => [t, { schema: binaryImage }])),
    },
  },
  response: {
    200: {
      description: 'probabilities of the top-k classes',
      type: 'object',
      required: ['model'],
      properties: {
        model: { type: 'string' },
        predictions,
        results: { type: 'array', items: { type: 'object', required: ['predictions'], properties: { predictions } } },
      },
    },
    '4xx': { description: 'bad input: the message names the problem', ...errorBody },
    429: {
      description: 'with Retry-After: rate_limited (--rate-limit), or query_attack_suspected (--detect reject: this client '
        + 'sent queries too similar to its earlier ones, as query attacks do; refused until its cool-down ends). '
        + 'With --detect log --detect-header on, answers to a flagged client carry X-Redserve-Detection instead.',
      ...errorBody,
    },
    503: { description: 'not ready, overloaded (with Retry-After) or shutting down', ...errorBody },
  },
} as const;

export const healthSchema = {
  summary: 'Liveness: the process is up',
  response: { 200: { type: 'object', properties: { status: { type: 'string', enum: ['ok'] } } } },
} as const;

export const readySchema = {
  summary: 'Readiness: 200 once every member is loaded, checked against golden logits and warm; 503 while draining',
  response: {
    200: { type: 'object', properties: { status: { type: 'string', enum: ['ready'] } } },
    503: { description: 'still loading, failed, or draining before shutdown', ...errorBody },
  },
} as const;

export const modelsSchema = {
  summary: 'The served package: metadata, member count, input contract, labels, provider and sampling mode',
  response: {
    200: {
      type: 'object',
      properties: {
        name: { type: 'string' },
        version: { type: 'string' },
        kind: { type: 'string' },
        description: { type: 'string' },
        members: { type: 'integer' },
        parameters: { type: 'integer', description: 'total parameters of all members' },
        input: {
          type: 'object',
          properties: {
            name: { type: 'string' },
            shape: { type: 'array', items: { type: 'integer' } },
            channels: { type: 'string' },
            scale: { type: 'number' },
            mean: { type: 'array', items: { type: 'number' } },
            std: { type: 'array', items: { type: 'number' } },
            resize: {
              type: 'object',
              properties: { fit: { type: 'string' }, kernel: { type: 'string' }, background: { type: 'number' } },
            },
          },
        },
        labels: { type: 'array', items: { type: 'string' } },
        provider: { type: 'string', enum: ['cpu', 'cuda'] },
        sampling: { type: 'string', description: 'random, fixed:K or mean' },
        batching: {
          type: 'object',
          description: 'dynamic batching of requests that drew the same member',
          properties: {
            maxBatchImages: { type: 'integer', description: 'images in one batched member run (1: batching off)' },
            queueDelayUs: { type: 'integer', description: 'how long a batch that is not full may wait, microseconds' },
          },
        },
        evaluation: { type: 'object', additionalProperties: true },
        benchmark: {
          type: 'object',
          description: 'present only for packages made for benchmarks: randomWeights means no trained classifier',
          properties: { randomWeights: { type: 'boolean' }, arch: { type: 'string' }, seed: { type: 'integer' } },
        },
      },
    },
    503: { description: 'still loading', ...errorBody },
  },
} as const;
