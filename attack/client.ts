/**
 * The HTTP side of the attacker: reads a running service's /models and sends pixel-space images to
 * /classify as JSON tensors, exactly as any outside client could. One image per request, so one
 * HTTP request is one query and one member draw; nothing is retried (a retry would be a hidden
 * query), so any failure stops the run with a message naming it.
 */
import type { Answer } from './adaptive.js';

/** The input contract that GET /models publishes (docs/model-format.md, `input`). */
export interface InputSpec {
  readonly name: string;
  /** [C, H, W] */
  readonly shape: readonly [number, number, number];
  readonly channels: 'gray' | 'rgb';
  readonly scale: number;
  readonly mean: readonly number[];
  readonly std: readonly number[];
  readonly resize: { readonly fit: 'fill' | 'contain' | 'cover'; readonly kernel: 'nearest' | 'linear' | 'cubic' | 'lanczos3'; readonly background: number };
}


/** What a `--detect log --detect-header on` service sets on answers to a client it has flagged. */
export const DETECTION_HEADER = 'x-redserve-detection';
/** The error code of a query a `--detect reject` service refuses. */
export const REFUSED_CODE = 'query_attack_suspected';

/** What GET /models says about the target (recorded in the report as it came). */
export interface ModelInfo {
  readonly name: string;
  readonly version?: string;
  readonly kind?: string;
  readonly members: number;
  readonly sampling: string;
  readonly provider?: string;
  readonly input: InputSpec;
  readonly labels: readonly string[];
  readonly [key: string]: unknown;
}

/** A bad flag, an unreachable or unexpected target: the CLI prints the message on one line. */
export class AttackError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AttackError';
  }
}

const REQUEST_TIMEOUT_MS = 60_000;

/** Normalise a --url value to its origin plus path, without a trailing slash. */
export function parseTargetUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new AttackError(`--url: '${raw}' is not a URL (expected http://host:port)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new AttackError(`--url: '${raw}' must use http or https`);
  }
  if (url.search || url.hash) throw new AttackError(`--url: '${raw}' must not carry a query or fragment`);
  return url.href.replace(/\/+$/, '');
}

export class TargetClient {
  /** POST /classify requests sent (every one counts as a query). */
  classifyRequests = 0;
  /** Other requests (GET /models). */
  metadataRequests = 0;
  /**
   * Sent as X-Forwarded-For when set: a service started with --trust-proxy then sees each value as
   * its own client, which is how a detection run gives every attack run a fresh identity.
   */
  identity: string | null = null;
  /** The detection header of the last answer, or null when it had none. */
  lastDetection: string | null = null;
  private constructor(readonly url: string, readonly info: ModelInfo) {}

  /** Read /models once; refuses a target that is not ready or does not look like redserve. */
  static async connect(rawUrl: string): Promise<TargetClient> {
    const url = parseTargetUrl(rawUrl);
    const res = await request(`${url}/models`, { method: 'GET' });
    const body = await readJson(res, `${url}/models`);
    if (res.status !== 200) {
      throw new AttackError(`${url}/models answered ${res.status}${describe(body)}`);
    }
    const info = body as ModelInfo;
    const shape = info?.input?.shape;
    if (!Array.isArray(shape) || shape.length !== 3 || !Array.isArray(info.labels) || typeof info.input.scale !== 'number') {
      throw new AttackError(`${url}/models does not describe an input shape, scale and labels; is this a redserve service?`);
    }
    const client = new TargetClient(url, info);
    client.metadataRequests = 1;
    return client;
  }

  get classes(): number {
    return this.info.labels.length;
  }

  /** The pixel range [0, 255 * scale] in which eps is measured (normally [0, 1]). */
  get pixelMax(): number {
    return 255 * this.info.input.scale;
  }

  /** Pixel-space CHW image -> the nested [C][H][W] tensor the model takes, normalised by the manifest. */
  toTensor(x: ArrayLike<number>): number[][][] {
    const [c, h, w] = this.info.input.shape;
    const { mean, std } = this.info.input;
    return Array.from({ length: c }, (_, ch) => Array.from({ length: h }, (_, row) => {
      const line = new Array<number>(w);
      for (let col = 0; col < w; col++) line[col] = (x[ch * h * w + row * w + col] - mean[ch]) / std[ch];
      return line;
    }));
  }

  /** One query: the probabilities of every class for one pixel-space image. */
  async classify(x: ArrayLike<number>): Promise<Float64Array> {
    const answer = await this.answer(x);
    if ('refused' in answer) {
      throw new AttackError(`${this.url}/classify refused the query as a suspected attack (${REFUSED_CODE}); `
        + 'only the adaptive attacks resample refused queries');
    }
    return answer.probs;
  }

  /** One query, refusals by a detecting service included (each is a request, so a query). */
  async answer(x: ArrayLike<number>): Promise<Answer> {
    this.classifyRequests++;
    const endpoint = `${this.url}/classify?topK=all`;
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.identity !== null) headers['x-forwarded-for'] = this.identity;
    const res = await request(endpoint, { method: 'POST', headers, body: JSON.stringify({ tensors: [this.toTensor(x)] }) });
    const body = await readJson(res, endpoint);
    this.lastDetection = res.headers.get(DETECTION_HEADER);
    if (res.status === 429 && (body as { error?: string } | null)?.error === REFUSED_CODE) return { refused: true };
    if (res.status !== 200) throw new AttackError(`${endpoint} answered ${res.status}${describe(body)}`);
    const predictions = (body as { results?: { predictions?: { index: number; probability: number }[] }[] })
      ?.results?.[0]?.predictions;
    if (!Array.isArray(predictions) || predictions.length !== this.classes) {
      throw new AttackError(`${endpoint} did not return ${this.classes} class probabilities`);
    }
    const probs = new Float64Array(this.classes);
    for (const p of predictions) probs[p.index] = p.probability;
    return { probs };
  }
}

async function request(url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  } catch (err) {
    const e = err as Error & { cause?: { code?: string; message?: string } };
    const why = e.name === 'TimeoutError' ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` : (e.cause?.code ?? e.cause?.message ?? e.message);
    throw new AttackError(`cannot reach ${url}: ${why}`);
  }
}

async function readJson(res: Response, url: string): Promise<unknown> {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new AttackError(`${url} answered ${res.status} with a body that is not JSON`);
  }
}

function describe(body: unknown): string {
  const b = body as { error?: string; message?: string } | null;
  return b && typeof b.message === 'string' ? ` (${b.error ?? 'error'}: ${b.message})` : '';
}
