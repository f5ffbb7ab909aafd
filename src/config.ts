/**
 * Service configuration: read once at start-up from flags and environment variables (flags win),
 * validated, frozen, and passed down. Nothing else reads process.env or process.argv.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError } from './errors.js';

export type Device = { readonly kind: 'auto' | 'cpu' } | { readonly kind: 'cuda'; readonly id: number };
export type Sampling =
  | { readonly mode: 'random' }
  | { readonly mode: 'fixed'; readonly member: number }
  | { readonly mode: 'mean' };

export const DETECT_MODES = ['off', 'log', 'reject'] as const;
export type DetectMode = (typeof DETECT_MODES)[number];

/** Query-attack detection (src/detect/), from the --detect-* flags. */
export interface DetectSettings {
  /** Fingerprint: bucket width in 8-bit pixel levels (0-255 scale), 1..255. */
  readonly quantStep: number;
  /** Fingerprint: window length in tensor elements. */
  readonly window: number;
  /** Fingerprint: hashes kept (the top-k). */
  readonly hashes: number;
  readonly mode: DetectMode;
  /** Shared kept hashes that make two queries near duplicates. */
  readonly threshold: number;
  /** Fingerprints kept per client. */
  readonly history: number;
  /** Clients tracked; past it the least recently seen client is forgotten. */
  readonly clients: number;
  /** Fingerprints kept across all clients (0: no global store). */
  readonly globalSize: number;
  /** Distinct other clients whose stored queries a client must have matched before a match across clients flags it. */
  readonly globalOwners: number;
  /** Slots of the global store one client may hold. */
  readonly globalQuota: number;
  /** Exact re-uploads of one tensor a client may send before it is flagged. */
  readonly repeats: number;
  /** Seconds a flagged client stays flagged (and, in reject mode, refused). */
  readonly cooldownS: number;
  /** In log mode, tell the client in a response header that it is flagged. */
  readonly header: boolean;
}

export const MODEL_CONTROLS = ['none', 'explicit', 'poll'] as const;
export type ModelControl = (typeof MODEL_CONTROLS)[number];

export interface Config {
  /** The one package served (--model), unless `modelRepository` is set. */
  readonly modelDir: string;
  /** Serve every package folder under this folder (src/repository.ts); null: serve `modelDir`. */
  readonly modelRepository: string | null;
  /** What may change the served models after start-up: nothing, the repository API, or polling the folder. */
  readonly modelControl: ModelControl;
  /** Seconds between scans of the repository folder under --model-control poll. */
  readonly repositoryPollS: number;
  /** Models loaded at once (each has its own --workers workers). */
  readonly maxModels: number;
  readonly port: number;
  readonly host: string;
  /** Port of the Open Inference Protocol's gRPC form (bound on `host`); null: no gRPC server. */
  readonly grpcPort: number | null;
  readonly device: Device;
  readonly sampling: Sampling;
  readonly workers: number;
  /** onnxruntime intra-op threads per worker. */
  readonly threadsPerWorker: number;
  readonly maxBodyBytes: number;
  readonly maxImagesPerRequest: number;
  /** Decoded pixel limit per image (width * height), the guard against decompression bombs. */
  readonly maxInputPixels: number;
  /** Decoded pixels of all the images of one request together (their headers are read first). */
  readonly maxRequestPixels: number;
  /** Inference requests admitted (body received, not yet answered), and separately inference jobs
   * waiting for a worker, before new requests get 503. */
  readonly maxQueue: number;
  /** Open connections; Node closes the ones past it at once. */
  readonly maxConnections: number;
  /** Dynamic batching: images in one batched member run (1: no batching). */
  readonly maxBatchImages: number;
  /** Dynamic batching: how long a batch that is not full may wait for more jobs of its member. */
  readonly queueDelayUs: number;
  /** An inference request not answered this long after its body arrived gets 503 timeout; also
   * the limit for receiving a request. */
  readonly requestTimeoutMs: number;
  /** A request body not received in full this long after its headers gets 408 body_timeout. */
  readonly bodyTimeoutMs: number;
  /** On SIGTERM, how long in-flight requests may take to finish before the process exits anyway (code 1). */
  readonly drainTimeoutMs: number;
  /** SHA-256 (hex) of each accepted API key; empty: no key needed. The keys themselves are never kept. */
  readonly apiKeySha256: readonly string[];
  /** Per-client token bucket (client = API key, else address); null: no limit. */
  readonly rateLimit: { readonly perSecond: number; readonly burst: number } | null;
  /** Fastify's trustProxy: false, a hop count, or addresses/CIDRs whose X-Forwarded-For is believed. */
  readonly trustProxy: boolean | number | readonly string[];
  /** Port of the Prometheus /metrics server; null: no metrics server. */
  readonly metricsPort: number | null;
  /** Bind address of the metrics server. Loopback by default: with little traffic, the per-member
   * draw counter read around one's own request tells which member answered it. */
  readonly metricsHost: string;
  readonly logLevel: string;
  /** OTLP/HTTP traces endpoint (e.g. http://collector:4318/v1/traces); null: no tracing, nothing sent. */
  readonly otlpEndpoint: string | null;
  /** Stateful query-attack detection (src/detect); mode 'off' leaves the request path as it was. */
  readonly detect: DetectSettings;
}

export const DEFAULTS = {
  modelDir: 'models/fmnist-baseline',
  repositoryPollS: 15,
  maxModels: 8,
  port: 8080,
  host: '0.0.0.0',
  maxBodyBytes: 8 * 1024 * 1024,
  maxImagesPerRequest: 64,
  maxInputPixels: 4096 * 4096,
  maxRequestPixels: 2 * 4096 * 4096,
  maxQueue: 256,
  maxConnections: 4096,
  maxBatchImages: 64,
  queueDelayUs: 500,
  requestTimeoutMs: 30_000,
  bodyTimeoutMs: 10_000,
  drainTimeoutMs: 25_000,
  metricsPort: 9464,
  metricsHost: '127.0.0.1',
  logLevel: 'info',
  // Detection defaults come from the Fashion-MNIST measurements in reports/detection.md.
  detectQuantStep: 50,
  detectWindow: 20,
  detectHashes: 50,
  detectThreshold: 28,
  detectHistory: 64,
  detectClients: 4096,
  detectGlobal: 20_000,
  detectGlobalOwners: 2,
  detectGlobalQuota: 64,
  detectRepeats: 5,
  detectCooldownS: 600,
} as const;

/** Each option: its flag, its environment variable, and its help line. */
const OPTIONS = {
  model: { env: 'REDSERVE_MODEL', help: `model package folder (default ${DEFAULTS.modelDir})` },
  'model-repository': { env: 'REDSERVE_MODEL_REPOSITORY', help: 'serve every package folder under this folder, <name>/ or <name>/<version>/ (default off: serve --model)' },
  'model-control': { env: 'REDSERVE_MODEL_CONTROL', help: 'none | explicit (repository load/unload API) | poll (watch the folder) (default none)' },
  'repository-poll-s': { env: 'REDSERVE_REPOSITORY_POLL_S', help: `seconds between scans under --model-control poll (default ${DEFAULTS.repositoryPollS})` },
  'max-models': { env: 'REDSERVE_MAX_MODELS', help: `models loaded at once, each with its own --workers workers (default ${DEFAULTS.maxModels})` },
  port: { env: 'PORT', help: `TCP port (default ${DEFAULTS.port})` },
  host: { env: 'HOST', help: `bind address (default ${DEFAULTS.host})` },
  'grpc-port': { env: 'REDSERVE_GRPC_PORT', help: 'Open Inference Protocol gRPC port on --host, or off (default off)' },
  device: { env: 'REDSERVE_DEVICE', help: 'auto | cpu | cuda[:id] (default auto: CUDA if available, else CPU)' },
  sampling: { env: 'REDSERVE_SAMPLING', help: 'random | fixed:K | mean (default random)' },
  workers: { env: 'REDSERVE_WORKERS', help: 'inference worker threads (default: CPU cores, at most 4)' },
  'threads-per-worker': { env: 'REDSERVE_THREADS_PER_WORKER', help: 'onnxruntime threads per worker (default 1)' },
  'max-body-bytes': { env: 'REDSERVE_MAX_BODY_BYTES', help: `request body limit (default ${DEFAULTS.maxBodyBytes})` },
  'max-images': { env: 'REDSERVE_MAX_IMAGES', help: `images per request (default ${DEFAULTS.maxImagesPerRequest})` },
  'max-input-pixels': { env: 'REDSERVE_MAX_INPUT_PIXELS', help: `decoded pixels per image (default ${DEFAULTS.maxInputPixels})` },
  'max-request-pixels': { env: 'REDSERVE_MAX_REQUEST_PIXELS', help: `decoded pixels of all images of one request (default ${DEFAULTS.maxRequestPixels})` },
  'max-queue': { env: 'REDSERVE_MAX_QUEUE', help: `admitted inference requests (body complete), and queued jobs, before 503 (default ${DEFAULTS.maxQueue})` },
  'max-connections': { env: 'REDSERVE_MAX_CONNECTIONS', help: `open connections, past it new ones are closed (default ${DEFAULTS.maxConnections})` },
  'max-batch-images': { env: 'REDSERVE_MAX_BATCH_IMAGES', help: `images per batched member run, 1 = no batching (default ${DEFAULTS.maxBatchImages})` },
  'queue-delay-us': { env: 'REDSERVE_QUEUE_DELAY_US', help: `wait for a batch to fill, microseconds (default ${DEFAULTS.queueDelayUs})` },
  'request-timeout-ms': { env: 'REDSERVE_REQUEST_TIMEOUT_MS', help: `inference deadline per request, then 503 (default ${DEFAULTS.requestTimeoutMs})` },
  'body-timeout-ms': { env: 'REDSERVE_BODY_TIMEOUT_MS', help: `time to receive a request body after its headers, then 408 (default ${DEFAULTS.bodyTimeoutMs})` },
  'drain-timeout-ms': { env: 'REDSERVE_DRAIN_TIMEOUT_MS', help: `on SIGTERM, time allowed for in-flight requests (default ${DEFAULTS.drainTimeoutMs})` },
  'api-key-file': { env: 'REDSERVE_API_KEY_FILE', help: 'file of accepted API keys, one a line (default: no key needed)' },
  'rate-limit': { env: 'REDSERVE_RATE_LIMIT', help: 'requests per second per client, 0 = off (default 0)' },
  'rate-burst': { env: 'REDSERVE_RATE_BURST', help: 'requests a client may save up (default: the rate, at least 1)' },
  'trust-proxy': { env: 'REDSERVE_TRUST_PROXY', help: 'off | hops | addresses/CIDRs (comma-separated) whose X-Forwarded-For is believed (default off)' },
  'metrics-port': { env: 'REDSERVE_METRICS_PORT', help: `Prometheus /metrics port, or off (default ${DEFAULTS.metricsPort}; keep it internal)` },
  'metrics-host': { env: 'REDSERVE_METRICS_HOST', help: `bind address of /metrics (default ${DEFAULTS.metricsHost}: this machine only)` },
  'log-level': { env: 'LOG_LEVEL', help: `pino level (default ${DEFAULTS.logLevel})` },
  'otlp-endpoint': { env: 'REDSERVE_OTLP_ENDPOINT', help: 'OpenTelemetry traces over OTLP/HTTP to this URL, e.g. http://collector:4318/v1/traces (default off: no traces, nothing sent)' },
  detect: { env: 'REDSERVE_DETECT', help: 'query-attack detection: off | log | reject (default off)' },
  'detect-quant-step': { env: 'REDSERVE_DETECT_QUANT_STEP', help: `fingerprint bucket width in 8-bit levels (default ${DEFAULTS.detectQuantStep})` },
  'detect-window': { env: 'REDSERVE_DETECT_WINDOW', help: `fingerprint window, tensor elements (default ${DEFAULTS.detectWindow})` },
  'detect-hashes': { env: 'REDSERVE_DETECT_HASHES', help: `hashes kept per fingerprint (default ${DEFAULTS.detectHashes})` },
  'detect-threshold': { env: 'REDSERVE_DETECT_THRESHOLD', help: `shared hashes that flag a near duplicate (default ${DEFAULTS.detectThreshold})` },
  'detect-history': { env: 'REDSERVE_DETECT_HISTORY', help: `fingerprints kept per client (default ${DEFAULTS.detectHistory})` },
  'detect-clients': { env: 'REDSERVE_DETECT_CLIENTS', help: `clients tracked, least recently seen forgotten (default ${DEFAULTS.detectClients})` },
  'detect-global': { env: 'REDSERVE_DETECT_GLOBAL', help: `fingerprints kept across clients, 0 = none (default ${DEFAULTS.detectGlobal})` },
  'detect-global-owners': { env: 'REDSERVE_DETECT_GLOBAL_OWNERS', help: `other clients a client's queries must match before a match across clients flags it (default ${DEFAULTS.detectGlobalOwners})` },
  'detect-global-quota': { env: 'REDSERVE_DETECT_GLOBAL_QUOTA', help: `fingerprints one client may hold in the global store (default ${DEFAULTS.detectGlobalQuota})` },
  'detect-repeats': { env: 'REDSERVE_DETECT_REPEATS', help: `exact re-uploads of one input allowed (default ${DEFAULTS.detectRepeats})` },
  'detect-cooldown-s': { env: 'REDSERVE_DETECT_COOLDOWN_S', help: `seconds a flagged client stays flagged (default ${DEFAULTS.detectCooldownS})` },
  'detect-header': { env: 'REDSERVE_DETECT_HEADER', help: 'log mode: on | off, tell flagged clients in X-Redserve-Detection (default off)' },
} as const;

type OptionName = keyof typeof OPTIONS;

/** Every flag with its environment variable and help line (the README's flag table is checked against it). */
export const FLAGS: readonly { readonly flag: string; readonly env: string; readonly help: string }[] =
  Object.entries(OPTIONS).map(([flag, o]) => ({ flag: `--${flag}`, env: o.env, help: o.help }));

/** Every environment variable the service reads (deployment files are checked against it). */
export const ENV_VARS: readonly string[] = FLAGS.map((f) => f.env);

export function usage(): string {
  const lines = FLAGS.map((f) => `  ${f.flag.padEnd(22)} ${f.env.padEnd(28)} ${f.help}`);
  return `usage: npm start -- [flags]\n  flag                   environment variable\n${lines.join('\n')}`;
}

function integer(name: string, raw: string, min: number, max: number): number {
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(`--${name}: '${raw}' is not an integer in [${min}, ${max}]`);
  const v = Number(raw);
  if (v < min || v > max) throw new ConfigError(`--${name}: ${v} is out of range [${min}, ${max}]`);
  return v;
}

export function parseDevice(raw: string): Device {
  if (raw === 'auto' || raw === 'cpu') return { kind: raw };
  const m = /^cuda(?::(\d+))?$/.exec(raw);
  if (m) return { kind: 'cuda', id: m[1] === undefined ? 0 : Number(m[1]) };
  throw new ConfigError(`--device: '${raw}' is not one of auto, cpu, cuda, cuda:<id>`);
}

export function parseSampling(raw: string): Sampling {
  if (raw === 'random' || raw === 'mean') return { mode: raw };
  const m = /^fixed:(\d+)$/.exec(raw);
  if (m) return { mode: 'fixed', member: Number(m[1]) };
  throw new ConfigError(`--sampling: '${raw}' is not one of random, fixed:<member index>, mean`);
}

/** API keys file: one key a line; blank lines and lines starting with # are skipped. Returns SHA-256 digests. */
function readApiKeys(file: string | undefined): string[] {
  if (file === undefined) return [];
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`--api-key-file: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const keys = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  if (keys.length === 0) throw new ConfigError(`--api-key-file: ${file} holds no key`);
  const short = keys.findIndex((k) => k.length < 16 || /\s/.test(k));
  if (short >= 0) throw new ConfigError(`--api-key-file: key ${short + 1} is shorter than 16 characters or contains spaces`);
  // HTTP headers carry bytes that Node reads as latin1: a key outside printable ASCII could never match.
  const nonAscii = keys.findIndex((k) => /[^\x21-\x7e]/.test(k));
  if (nonAscii >= 0) {
    throw new ConfigError(`--api-key-file: key ${nonAscii + 1} has a character outside printable ASCII (0x21-0x7e); `
      + 'a key in an HTTP header could never match it');
  }
  return keys.map((k) => createHash('sha256').update(k, 'utf8').digest('hex'));
}

export function parseTrustProxy(raw: string): boolean | number | string[] {
  if (raw === 'off' || raw === 'false') return false;
  if (raw === 'on' || raw === 'true') return true;
  if (/^\d+$/.test(raw)) return Number(raw);
  const list = raw.split(',').map((s) => s.trim()).filter(Boolean);
  if (list.length === 0 || !list.every((a) => /^[0-9a-fA-F:.]+(\/\d{1,3})?$/.test(a))) {
    throw new ConfigError(`--trust-proxy: '${raw}' is not off, on, a hop count, or comma-separated addresses/CIDRs`);
  }
  return list;
}

function parseEndpoint(raw: string | undefined): string | null {
  if (raw === undefined || raw === 'off') return null;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`--otlp-endpoint: '${raw}' is not a URL (e.g. http://collector:4318/v1/traces)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(`--otlp-endpoint: '${raw}' is not an http or https URL (OTLP/HTTP)`);
  }
  return url.href;
}

export function parseModelControl(raw: string): ModelControl {
  if ((MODEL_CONTROLS as readonly string[]).includes(raw)) return raw as ModelControl;
  throw new ConfigError(`--model-control: '${raw}' is not one of ${MODEL_CONTROLS.join(', ')}`);
}

export function parseDetectMode(raw: string): DetectMode {
  if ((DETECT_MODES as readonly string[]).includes(raw)) return raw as DetectMode;
  throw new ConfigError(`--detect: '${raw}' is not one of ${DETECT_MODES.join(', ')}`);
}

function onOff(name: string, raw: string): boolean {
  if (raw === 'on' || raw === 'true') return true;
  if (raw === 'off' || raw === 'false') return false;
  throw new ConfigError(`--${name}: '${raw}' is not on or off`);
}

const isFolder = (p: string) => statSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;

/** An empty bind address would make Node listen on every address: refuse it. */
function nonEmpty(name: string, raw: string): string {
  if (raw.trim() === '') throw new ConfigError(`--${name}: an empty address would bind every interface; give one (e.g. 127.0.0.1)`);
  return raw.trim();
}

/** Build the frozen config from argv (without node and script) and an environment. */
export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv): Config {
  let values: Partial<Record<OptionName, string>>;
  try {
    const options = Object.fromEntries(Object.keys(OPTIONS).map((k) => [k, { type: 'string' as const }]));
    values = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values as typeof values;
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}\n${usage()}`);
  }
  const get = (name: OptionName): string | undefined => values[name] ?? env[OPTIONS[name].env] ?? undefined;
  const num = (name: OptionName, fallback: number, min: number, max: number): number => {
    const raw = get(name);
    return raw === undefined ? fallback : integer(name, raw, min, max);
  };
  const cores = os.availableParallelism();
  const perSecond = num('rate-limit', 0, 0, 1_000_000);
  if (perSecond === 0 && get('rate-burst') !== undefined) throw new ConfigError('--rate-burst: needs --rate-limit above 0');
  const rateLimit = perSecond > 0 ? { perSecond, burst: num('rate-burst', Math.max(1, perSecond), 1, 10_000_000) } : null;
  const repository = get('model-repository');
  if (repository !== undefined && get('model') !== undefined) {
    throw new ConfigError('--model and --model-repository: give one (a repository serves every package folder under it)');
  }
  if (repository !== undefined && repository.trim() === '') throw new ConfigError('--model-repository: empty; give a folder');
  if (repository !== undefined && !isFolder(repository)) throw new ConfigError(`--model-repository: ${repository} is not a folder`);
  const modelControl = parseModelControl(get('model-control') ?? 'none');
  if (repository === undefined && modelControl !== 'none') {
    throw new ConfigError(`--model-control ${modelControl}: needs --model-repository (one --model has nothing to load or poll)`);
  }
  if (modelControl !== 'poll' && get('repository-poll-s') !== undefined) {
    throw new ConfigError('--repository-poll-s: only with --model-control poll');
  }
  const config: Config = {
    modelDir: path.resolve(get('model') ?? DEFAULTS.modelDir),
    modelRepository: repository === undefined ? null : path.resolve(repository),
    modelControl,
    repositoryPollS: num('repository-poll-s', DEFAULTS.repositoryPollS, 1, 86_400),
    maxModels: num('max-models', DEFAULTS.maxModels, 1, 1024),
    port: num('port', DEFAULTS.port, 0, 65535),
    host: get('host') ?? DEFAULTS.host,
    grpcPort: (get('grpc-port') ?? 'off') === 'off' ? null : num('grpc-port', 0, 0, 65535),
    device: parseDevice(get('device') ?? 'auto'),
    sampling: parseSampling(get('sampling') ?? 'random'),
    workers: num('workers', Math.min(cores, 4), 1, 64),
    threadsPerWorker: num('threads-per-worker', 1, 1, 64),
    maxBodyBytes: num('max-body-bytes', DEFAULTS.maxBodyBytes, 1024, 1024 * 1024 * 1024),
    maxImagesPerRequest: num('max-images', DEFAULTS.maxImagesPerRequest, 1, 4096),
    maxInputPixels: num('max-input-pixels', DEFAULTS.maxInputPixels, 1, 2 ** 31),
    maxRequestPixels: num('max-request-pixels', DEFAULTS.maxRequestPixels, 1, 2 ** 40),
    maxQueue: num('max-queue', DEFAULTS.maxQueue, 1, 1_000_000),
    maxConnections: num('max-connections', DEFAULTS.maxConnections, 1, 10_000_000),
    maxBatchImages: num('max-batch-images', DEFAULTS.maxBatchImages, 1, 65_536),
    queueDelayUs: num('queue-delay-us', DEFAULTS.queueDelayUs, 0, 10_000_000),
    requestTimeoutMs: num('request-timeout-ms', DEFAULTS.requestTimeoutMs, 1, 3_600_000),
    bodyTimeoutMs: num('body-timeout-ms', DEFAULTS.bodyTimeoutMs, 1, 3_600_000),
    drainTimeoutMs: num('drain-timeout-ms', DEFAULTS.drainTimeoutMs, 0, 3_600_000),
    apiKeySha256: readApiKeys(get('api-key-file')),
    rateLimit,
    trustProxy: parseTrustProxy(get('trust-proxy') ?? 'off'),
    metricsPort: get('metrics-port') === 'off' ? null : num('metrics-port', DEFAULTS.metricsPort, 0, 65535),
    metricsHost: nonEmpty('metrics-host', get('metrics-host') ?? DEFAULTS.metricsHost),
    logLevel: get('log-level') ?? DEFAULTS.logLevel,
    otlpEndpoint: parseEndpoint(get('otlp-endpoint')),
    detect: detectSettings(get, num),
  };
  const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
  if (!levels.includes(config.logLevel)) {
    throw new ConfigError(`--log-level: '${config.logLevel}' is not one of ${levels.join(', ')}`);
  }
  return Object.freeze(config);
}

function detectSettings(get: (name: OptionName) => string | undefined,
  num: (name: OptionName, fallback: number, min: number, max: number) => number): DetectSettings {
  const mode = parseDetectMode(get('detect') ?? 'off');
  const hashes = num('detect-hashes', DEFAULTS.detectHashes, 1, 1024);
  const threshold = num('detect-threshold', DEFAULTS.detectThreshold, 1, 1024);
  if (threshold > hashes) throw new ConfigError(`--detect-threshold: ${threshold} is out of range [1, ${hashes}] (--detect-hashes)`);
  const header = onOff('detect-header', get('detect-header') ?? 'off');
  if (header && mode !== 'log') throw new ConfigError('--detect-header: only with --detect log (in reject mode the 429 tells the client)');
  return Object.freeze({
    mode,
    quantStep: num('detect-quant-step', DEFAULTS.detectQuantStep, 1, 255),
    window: num('detect-window', DEFAULTS.detectWindow, 1, 4096),
    hashes,
    threshold,
    history: num('detect-history', DEFAULTS.detectHistory, 1, 100_000),
    clients: num('detect-clients', DEFAULTS.detectClients, 1, 10_000_000),
    globalSize: num('detect-global', DEFAULTS.detectGlobal, 0, 10_000_000),
    globalOwners: num('detect-global-owners', DEFAULTS.detectGlobalOwners, 1, 1024),
    globalQuota: num('detect-global-quota', DEFAULTS.detectGlobalQuota, 1, 10_000_000),
    repeats: num('detect-repeats', DEFAULTS.detectRepeats, 0, 1_000_000),
    cooldownS: num('detect-cooldown-s', DEFAULTS.detectCooldownS, 0, 7 * 24 * 3600),
    header,
  });
}

/** Defaults plus overrides, frozen, for a program that embeds the service in-process (bench programs,
 * tests): loopback, an ephemeral port, two workers, no logs. */
export function embeddedConfig(overrides: Partial<Config> & { modelDir: string }): Config {
  return Object.freeze({
    ...loadConfig([], {}),
    host: '127.0.0.1',
    port: 0,
    workers: 2,
    logLevel: 'silent',
    ...overrides,
  });
}
