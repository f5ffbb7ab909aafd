/**
 * The models this process serves, each in its life: loading, ready, unavailable (failed or
 * unloaded), and the process's drain before it stops. `--model DIR` is a repository of one model;
 * `--model-repository DIR` serves every package folder under DIR:
 *
 *   DIR/<name>/manifest.json             one version, the manifest's
 *   DIR/<name>/<version>/manifest.json   several versions; the highest is served
 *
 * A model's name is its folder's name and must be its manifest's `name`; a versioned folder's name
 * must be its manifest's `version` (a mismatch is refused, with both names, rather than served under
 * one and answered under the other).
 *
 * At most one version of a model serves at a time. Loading a model (at start-up, by the repository
 * API, or when polling finds a new version) builds the new version beside the serving one (its
 * members checked against their golden logits and warm: loadEnsemble), then swaps it in at once;
 * the old one stops taking requests and is closed once the requests that hold it have finished.
 * A version that fails to load leaves the serving one in place and its reason in the index.
 * Unloading works the same way without a successor.
 *
 * Requests hold a model through `use`, which counts them: that count is what unloading and swapping
 * wait for, so no admitted request ever meets a closed worker pool.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Config, ModelControl } from './config.js';
import type { Ensemble } from './ensemble/ensemble.js';
import { ConfigError, ForbiddenError, NotFoundError, UnavailableError } from './errors.js';

/** The states of Triton's repository index. */
export type ModelStateName = 'LOADING' | 'READY' | 'UNAVAILABLE' | 'UNLOADING';

export interface IndexEntry {
  readonly name: string;
  /** The serving version, or the one being loaded or that failed; '' before anything was found. */
  readonly version: string;
  readonly state: ModelStateName;
  /** Why it is not ready ('' when it is). */
  readonly reason: string;
}

/** A package folder found in the repository. */
export interface Found {
  readonly name: string;
  readonly version: string;
  readonly dir: string;
  /** Changes when the package is replaced in place (export swaps the folder, so its manifest is new). */
  readonly stamp: string;
}

export interface RepositoryLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** One loaded version and the requests holding it. */
class Loaded {
  holders = 0;
  private idle: (() => void) | null = null;

  constructor(readonly found: Found, readonly ensemble: Ensemble) {}

  get version(): string {
    return this.found.version;
  }

  hold(): void {
    this.holders++;
  }

  release(): void {
    this.holders--;
    if (this.holders === 0 && this.idle) this.idle();
  }

  /** Close once no request holds this version any more. */
  async retire(): Promise<void> {
    if (this.holders > 0) await new Promise<void>((resolve) => { this.idle = resolve; });
    await this.ensemble.close();
  }
}

class Model {
  serving: Loaded | null = null;
  state: ModelStateName = 'LOADING';
  version = '';
  reason = '';
  /** Serving, or being loaded: what --max-models counts. */
  claimed = false;
  /** Found when the server started (readiness waits for it). */
  atStartup = false;
  /** Unloaded, or its folder left the repository: requests get 404, not a retry-later. */
  gone = false;
  /** The stamp of the last version that failed to load: polling does not retry it until it changes. */
  failedStamp = '';
  /** The load or unload in progress; the next one waits for it. */
  busy: Promise<void> = Promise.resolve();

  constructor(readonly name: string) {}
}

/** Compare version folder names: dotted numbers numerically (2 < 10, 1.2.0 < 1.10.0), else as text. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.');
  const pb = b.split('.');
  const numeric = (parts: string[]) => parts.every((p) => /^\d+$/.test(p));
  if (numeric(pa) && numeric(pb)) {
    for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
      const d = Number(pa[i] ?? 0) - Number(pb[i] ?? 0);
      if (d !== 0) return d;
    }
    return 0;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

const isDir = async (p: string) => (await stat(p).catch(() => null))?.isDirectory() ?? false;
const isFile = async (p: string) => (await stat(p).catch(() => null))?.isFile() ?? false;

async function manifestNameVersion(dir: string): Promise<{ name: unknown; version: unknown }> {
  const raw: unknown = JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8'));
  const m = (raw ?? {}) as { name?: unknown; version?: unknown };
  return { name: m.name, version: m.version };
}

/**
 * The highest version of each model folder under `root`: name -> Found, or name -> the reason the
 * folder cannot be served. Folders without a manifest at either level are not models and are skipped.
 */
export async function scanRepository(root: string): Promise<Map<string, Found | string>> {
  const out = new Map<string, Found | string>();
  const names = (await readdir(root, { withFileTypes: true })).filter((d) => d.isDirectory() && !d.name.startsWith('.'))
    .map((d) => d.name).sort();
  for (const name of names) {
    const modelDir = path.join(root, name);
    let found: Omit<Found, 'stamp'>;
    if (await isFile(path.join(modelDir, 'manifest.json'))) {
      found = { name, version: '', dir: modelDir };
    } else {
      const versions: string[] = [];
      for (const entry of await readdir(modelDir, { withFileTypes: true })) {
        if (entry.isDirectory() && !entry.name.startsWith('.') && await isFile(path.join(modelDir, entry.name, 'manifest.json'))) {
          versions.push(entry.name);
        }
      }
      if (versions.length === 0) continue;
      const highest = versions.sort(compareVersions).at(-1)!;
      found = { name, version: highest, dir: path.join(modelDir, highest) };
    }
    try {
      const m = await manifestNameVersion(found.dir);
      const stamp = `${found.dir}@${(await stat(path.join(found.dir, 'manifest.json'))).mtimeMs}`;
      if (m.name !== name) {
        out.set(name, `${found.dir}: the manifest names the model '${String(m.name)}', its folder '${name}' (they must agree)`);
        continue;
      }
      if (found.version !== '' && m.version !== found.version) {
        out.set(name, `${found.dir}: the manifest's version is '${String(m.version)}', its folder '${found.version}' (they must agree)`);
        continue;
      }
      out.set(name, { ...found, version: String(m.version), stamp });
    } catch (err) {
      out.set(name, `${found.dir}/manifest.json: ${(err as Error).message}`);
    }
  }
  return out;
}

export interface RepositoryOptions {
  /** The repository folder, or null for `--model DIR` (one model, `single`). */
  readonly root: string | null;
  readonly single: string | null;
  readonly control: ModelControl;
  readonly maxModels: number;
  /** How often `poll` control rescans the folder. */
  readonly pollMs: number;
}

/** The repository a config asks for: --model-repository DIR, or the one --model. */
export function repositoryOptions(config: Config): RepositoryOptions {
  return {
    root: config.modelRepository, single: config.modelDir, control: config.modelControl,
    maxModels: config.maxModels, pollMs: config.repositoryPollS * 1000,
  };
}

/** A repository that is never started: every model route answers 503 not_ready (the OpenAPI
 * document is generated from such a server, and tests of the loading state use one). */
export function unstartedRepository(config: Config): ModelRepository {
  const quiet = () => undefined;
  return new ModelRepository(repositoryOptions(config), () => Promise.reject(new Error('never started')),
    { info: quiet, warn: quiet, error: quiet });
}

export class ModelRepository {
  private readonly models = new Map<string, Model>();
  private defaultName: string | null = null;
  private drainingSince: number | null = null;
  private started = false;
  private readonly readyListeners: ((name: string, ensemble: Ensemble) => void)[] = [];
  private pollTimer: NodeJS.Timeout | null = null;
  private polling: Promise<void> | null = null;

  constructor(private readonly options: RepositoryOptions,
    private readonly loadDir: (dir: string, name: string) => Promise<Ensemble>,
    private readonly log: RepositoryLog) {}

  /** Find and load every model; resolves when each has loaded or failed. With `--model DIR`,
   * rejects when that one cannot be served (the process then stops, as it always did). */
  async start(): Promise<void> {
    if (this.options.root === null) {
      const dir = this.options.single!;
      // The name the metrics and the index use; loading (readPackage) names any problem with the package.
      const named = await manifestNameVersion(dir).catch(() => ({ name: undefined, version: undefined }));
      const model = this.modelFor(typeof named.name === 'string' ? named.name : path.basename(path.resolve(dir)));
      model.atStartup = true;
      this.defaultName = model.name;
      let failure: unknown = null;
      await this.replace(model, { name: model.name, version: String(named.version ?? ''), dir, stamp: dir }, (err) => { failure = err; });
      this.started = true;
      if (failure !== null) throw failure;
      return;
    }
    if (!await isDir(this.options.root)) throw new ConfigError(`--model-repository ${this.options.root}: not a folder`);
    const found = await scanRepository(this.options.root);
    if (found.size === 0) this.log.warn({ repository: this.options.root }, 'no model packages found in the repository');
    this.defaultName = [...found.keys()][0] ?? null;
    for (const name of found.keys()) this.modelFor(name).atStartup = true;
    await Promise.all([...found].map(([name, f]) => this.loadFound(name, f)));
    this.started = true;
    if (this.options.control === 'poll') this.startPolling();
  }

  /** The model a request names, or the default (the only one with --model, else the first by name). */
  private named(name?: string): Model {
    if (!this.started && this.models.size === 0) throw new UnavailableError('not_ready', 'the model is still loading');
    const key = name ?? this.defaultName;
    const model = key === null ? undefined : this.models.get(key);
    if (!model) {
      const names = [...this.models.keys()].sort().map((n) => `'${n}'`).join(', ');
      throw new NotFoundError('unknown_model', `unknown model '${name}'; this server serves ${names || 'no model'}`);
    }
    return model;
  }

  /** Call `listener` when a model (or a new version of it) is ready, before any request can reach it. */
  onReady(listener: (name: string, ensemble: Ensemble) => void): void {
    this.readyListeners.push(listener);
  }

  /** Ready for traffic: started, not draining, and every model found at start-up serving. Models
   * added later, or unloaded, do not count: a bad new folder must not take a serving replica out. */
  get allReady(): boolean {
    return this.started && !this.draining && [...this.models.values()].every((m) => !m.atStartup || m.gone || m.serving !== null);
  }

  /** The name requests without a model name go to. */
  get defaultModel(): string | null {
    return this.defaultName;
  }

  /** True from SIGTERM on: readiness turns 503; in-flight work finishes. */
  get draining(): boolean {
    return this.drainingSince !== null;
  }

  startDraining(): void {
    this.drainingSince ??= performance.now();
    this.stopPolling();
  }

  /** The loaded ensemble of a model (and version, when named); throws not_found or not_ready. */
  ready(name?: string, version?: string): Ensemble {
    const model = this.named(name);
    const loaded = model.serving;
    if (loaded && (version === undefined || loaded.version === version)) return loaded.ensemble;
    if (model.gone) throw new NotFoundError('unknown_model', `model '${model.name}' is not served here: ${model.reason}`);
    if (version !== undefined && !(model.state === 'LOADING' && model.version === version)) {
      throw new NotFoundError('unknown_version', `model '${model.name}' has no version '${version}'; it serves ${loaded ? `version '${loaded.version}'` : 'none'}`);
    }
    // Why a load failed is for the operator (the repository index, the log), not for every client.
    throw new UnavailableError('not_ready', model.state === 'LOADING' ? 'the model is still loading' : 'the model failed to load');
  }

  /** Readiness (/readyz, /v2/health/ready): throws shutting_down while draining, not_ready until
   * every model found at start-up serves. */
  checkReady(): void {
    if (this.draining) throw new UnavailableError('shutting_down', 'the server is draining before it stops');
    if (this.allReady) return;
    this.ready(); // the default model's own reason, when it has one
    throw new UnavailableError('not_ready', 'a model found at start-up is not serving (POST /v2/repository/index says why)');
  }

  /** `ready` while the server is not draining. */
  serving(name?: string, version?: string): Ensemble {
    const ensemble = this.ready(name, version);
    if (this.draining) throw new UnavailableError('shutting_down', 'the server is draining before it stops');
    return ensemble;
  }

  /** Run `fn` on the serving version, holding it until `fn` settles (unload and swap wait for it). */
  async use<T>(name: string | undefined, version: string | undefined, fn: (ensemble: Ensemble) => Promise<T>): Promise<T> {
    this.ready(name, version);
    const loaded = this.named(name).serving!;
    loaded.hold();
    try {
      return await fn(loaded.ensemble);
    } finally {
      loaded.release();
    }
  }

  /** Would the model's job queue refuse a one-image request now? */
  saturated(name: string): boolean {
    return this.models.get(name)?.serving?.ensemble.saturated() ?? false;
  }

  /** Every model with its state (Triton's repository index). */
  index(): IndexEntry[] {
    return [...this.models.values()].sort((a, b) => (a.name < b.name ? -1 : 1))
      .map((m) => ({ name: m.name, version: m.serving?.version ?? m.version, state: m.state, reason: m.reason }));
  }

  /** The ready ensembles, by name (for /models, metadata and metrics). */
  loaded(): { name: string; version: string; ensemble: Ensemble }[] {
    return [...this.models.values()].filter((m) => m.serving)
      .map((m) => ({ name: m.name, version: m.serving!.version, ensemble: m.serving!.ensemble }));
  }

  /** Load (or reload) a model from the repository folder: its highest version, beside the serving one. */
  async load(name: string): Promise<IndexEntry> {
    this.requireExplicit('load');
    const found = (await scanRepository(this.options.root!)).get(name);
    if (found === undefined) {
      throw new NotFoundError('unknown_model', `no package folder '${name}' in the model repository`);
    }
    await this.loadFound(name, found);
    return this.index().find((e) => e.name === name)!;
  }

  /** Stop serving a model: new requests get 404 at once; it closes once its in-flight requests finish. */
  async unload(name: string): Promise<IndexEntry> {
    this.requireExplicit('unload');
    await this.retire(this.named(name), 'unloaded');
    return this.index().find((e) => e.name === name)!;
  }

  /** Stop polling, and close every model's workers: after the requests that hold them, or with
   * `now` at once (their queued and running jobs fail with 503: a hard stop). */
  async close(options: { now?: boolean } = {}): Promise<void> {
    this.stopPolling();
    if (options.now) {
      await Promise.all([...this.models.values()].map((m) => m.serving?.ensemble.close()));
      return;
    }
    await this.polling;
    await Promise.all([...this.models.values()].map((m) => this.retire(m, 'the server stopped')));
  }

  /** Take a model out of service: no new request gets it; close it once those holding it finish. */
  private retire(model: Model, why: string): Promise<void> {
    return this.serialise(model, async () => {
      const old = model.serving;
      model.serving = null;
      model.claimed = false;
      model.gone = true;
      model.state = 'UNLOADING';
      model.reason = why;
      if (old) await old.retire();
      model.state = 'UNAVAILABLE';
      if (old) this.log.info({ model: model.name, version: old.version, why }, 'model unloaded');
    });
  }

  private requireExplicit(what: string): void {
    if (this.options.control !== 'explicit' || this.options.root === null) {
      throw new ForbiddenError('model_control', `${what} is off: the server runs with --model-control ${this.options.control}`
        + (this.options.root === null ? ' and one --model' : '') + ' (start it with --model-repository DIR --model-control explicit)');
    }
  }

  private modelFor(name: string): Model {
    let model = this.models.get(name);
    if (!model) {
      model = new Model(name);
      this.models.set(name, model);
    }
    return model;
  }

  private async loadFound(name: string, found: Found | string): Promise<void> {
    const model = this.modelFor(name);
    const claimed = [...this.models.values()].filter((m) => m.claimed && m !== model).length;
    if (!model.claimed && typeof found !== 'string' && claimed >= this.options.maxModels) {
      model.state = 'UNAVAILABLE';
      model.reason = `--max-models ${this.options.maxModels} models are loaded already; unload one first`;
      model.atStartup = false; // refused by configuration: readiness does not wait for it
      return;
    }
    if (typeof found === 'string') {
      await this.serialise(model, async () => {
        model.failedStamp = found;
        this.failed(model, '', found);
      });
      return;
    }
    await this.replace(model, found);
  }

  /** Load `found` beside the serving version, then swap it in; on failure the old one keeps serving. */
  private async replace(model: Model, found: Found, onFailure?: (err: unknown) => void): Promise<void> {
    model.claimed = true;
    await this.serialise(model, async () => {
      const before = model.serving;
      if (!before) model.state = 'LOADING';
      model.version = found.version;
      model.reason = before ? `loading version ${found.version}` : '';
      let ensemble: Ensemble;
      try {
        ensemble = await this.loadDir(found.dir, model.name);
      } catch (err) {
        onFailure?.(err);
        model.failedStamp = found.stamp;
        model.claimed = model.serving !== null;
        this.failed(model, found.version, (err as Error).message);
        return;
      }
      for (const listener of this.readyListeners) listener(model.name, ensemble);
      model.serving = new Loaded(found, ensemble);
      model.state = 'READY';
      model.gone = false;
      model.version = found.version;
      model.reason = '';
      this.log.info({ model: model.name, version: found.version, replaced: before?.version ?? null }, 'model serving');
      if (before) await before.retire();
    });
  }

  private failed(model: Model, version: string, reason: string): void {
    const which = version ? `version ${version}` : 'the new package';
    model.reason = model.serving ? `${which} failed to load (version ${model.serving.version} keeps serving): ${reason}` : reason;
    model.state = model.serving ? 'READY' : 'UNAVAILABLE';
    if (model.serving) model.version = model.serving.version;
    this.log.error({ model: model.name, version, reason }, 'model version failed to load');
  }

  /** Run one load or unload of a model at a time, in order. */
  private serialise(model: Model, step: () => Promise<void>): Promise<void> {
    const next = model.busy.then(step);
    model.busy = next.catch(() => undefined);
    return next;
  }

  private startPolling(): void {
    this.pollTimer = setInterval(() => {
      if (this.polling) return;
      this.polling = this.pollOnce().catch((err: Error) => {
        this.log.error({ err: err.message }, 'model repository poll failed');
      }).finally(() => { this.polling = null; });
    }, this.options.pollMs);
    this.pollTimer.unref();
  }

  private stopPolling(): void {
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = null;
  }

  /** Load what is new or changed (a new version, or a package replaced in place); unload what left. */
  async pollOnce(): Promise<void> {
    const found = await scanRepository(this.options.root!);
    for (const [name, f] of found) {
      const model = this.models.get(name);
      const stamp = typeof f === 'string' ? f : f.stamp;
      if (model && (model.serving?.found.stamp === stamp || model.failedStamp === stamp)) continue;
      await this.loadFound(name, f);
    }
    for (const [name, model] of this.models) {
      if (!found.has(name) && !model.gone) await this.retire(model, 'its folder left the repository');
    }
  }
}
