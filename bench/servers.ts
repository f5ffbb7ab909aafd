/**
 * The servers the benchmarks measure, each started as a child process on free loopback ports and
 * stopped after: redserve (dist/src/server.js), a bare Fastify route (bench/bare-server.ts), the
 * FastAPI/uvicorn peer (bench/peer/) and MLServer with a custom runtime (bench/mlserver/). The
 * Python peers' packages are installed on first use: the FastAPI peer's into .venv, MLServer's into
 * its own .venv-mlserver (its pins clash with the training package's).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { DEFAULTS } from '../src/config.js';
// Sets ORT_DISABLE_TELEMETRY here too, so every peer this program starts inherits it.
import { RUNTIME_ENV } from '../src/runtime-env.js';
import { descendants } from './cpu.js';
import { sleep } from './load.js';
import { PYTHON, ROOT, SetupError } from './workloads.js';

export interface Started {
  readonly child: ChildProcess;
  /** The server's root process, whose tree bench/cpu.ts reads. */
  readonly pid: number;
  readonly url: string;
  stop(): Promise<void>;
}

const MLSERVER_VENV = path.join(ROOT, '.venv-mlserver');
const MLSERVER_PYTHON = path.join(MLSERVER_VENV, 'bin', 'python');
const MLSERVER_DIR = path.join(ROOT, 'bench', 'mlserver');


export async function freePort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

/** `n` distinct free ports (each listener stays open until all are found, so none repeats). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, async () => {
    const server = http.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return server;
  }));
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

interface ProcessOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** Seconds to wait for readiness (a Python server importing its stack on a busy machine is slow). */
  readonly readyTimeoutS?: number;
  readonly cleanup?: () => Promise<void>;
}

async function startProcess(cmd: string, args: string[], readyUrl: string, url: string, o: ProcessOptions = {}): Promise<Started> {
  const child = spawn(cmd, args, { cwd: o.cwd ?? ROOT, env: { ...process.env, ...RUNTIME_ENV, ...o.env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => { stderr = (stderr + c.toString()).slice(-4000); });
  const timeoutS = o.readyTimeoutS ?? 120;
  const deadline = Date.now() + timeoutS * 1000;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      // Its worker processes too: a server killed before it could stop them would leave them running.
      const tree = descendants(child.pid!).filter((pid) => pid !== child.pid);
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(30_000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      for (const pid of tree) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Already gone: the server stopped it.
        }
      }
    }
    await o.cleanup?.();
  };
  for (;;) {
    if (child.exitCode !== null) {
      await o.cleanup?.();
      throw new Error(`${path.basename(cmd)} ${args.slice(0, 2).join(' ')} exited ${child.exitCode}: ${stderr}`);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      await o.cleanup?.();
      throw new Error(`${path.basename(cmd)} ${args.slice(0, 2).join(' ')} not ready after ${timeoutS} s: ${stderr}`);
    }
    const ok = await new Promise<boolean>((resolve) => {
      http.get(readyUrl, (res) => { res.resume(); resolve(res.statusCode === 200); }).on('error', () => resolve(false));
    });
    if (ok) break;
    await sleep(100);
  }
  return { child, pid: child.pid!, url, stop };
}

export async function startRedserve(modelDir: string, workers: number, flags: string[]): Promise<Started> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  return startProcess(process.execPath, [path.join(ROOT, 'dist', 'src', 'server.js'), '--model', modelDir, '--port', String(port),
    '--host', '127.0.0.1', '--workers', String(workers), '--metrics-port', 'off', '--log-level', 'warn', ...flags],
  `${url}/readyz`, url);
}

export async function startBare(): Promise<Started> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  return startProcess(process.execPath, [path.join(ROOT, 'dist', 'bench', 'bare-server.js'), '--port', String(port), '--host', '127.0.0.1'],
    `${url}/readyz`, url);
}

/** Install the FastAPI peer's pinned packages into .venv when they are missing. */
export function ensurePeer(): void {
  if (!existsSync(PYTHON)) throw new SetupError('.venv is missing: run scripts/setup.sh first (the FastAPI peer needs its onnxruntime), or pass --peers mlserver');
  try {
    execFileSync(PYTHON, ['-c', 'import fastapi, uvicorn, onnxruntime, numpy'], { stdio: 'ignore' });
  } catch {
    process.stderr.write('installing bench/requirements.txt into .venv for the FastAPI peer\n');
    execFileSync(PYTHON, ['-m', 'pip', 'install', '-q', '-r', path.join(ROOT, 'bench', 'requirements.txt')], { stdio: 'inherit' });
  }
}

/** The Python peer: FastAPI (`app:app`), or the bare ASGI floor (`raw:app`), under uvicorn workers. */
export async function startPeer(modelDir: string, workers: number, app: 'app:app' | 'raw:app' = 'app:app'): Promise<Started> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  // serve.py: N uvicorn workers, each with its own listener on the port and TCP_NODELAY (see its docstring).
  return startProcess(PYTHON, [path.join(ROOT, 'bench', 'peer', 'serve.py'), '--host', '127.0.0.1',
    '--port', String(port), '--workers', String(workers), '--app', app], `${url}/v2/health/ready`, url,
  { env: { REDSERVE_PEER_MODEL: modelDir } });
}

/**
 * Create .venv-mlserver from bench/mlserver/requirements.txt on first use (with the interpreter of
 * .venv), or bring it up to date when the requirements changed since it was installed, and return
 * MLServer's version.
 */
export function ensureMlserver(log: (line: string) => void): string {
  const requirements = path.join(MLSERVER_DIR, 'requirements.txt');
  const wanted = createHash('sha256').update(readFileSync(requirements)).digest('hex');
  const stamp = path.join(MLSERVER_VENV, 'requirements.sha256');
  const version = () => execFileSync(MLSERVER_PYTHON, ['-c', 'import mlserver, onnxruntime, numpy; print(mlserver.__version__)'],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  if (existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === wanted) {
    try {
      return version();
    } catch {
      // Broken: install again below.
    }
  }
  if (!existsSync(PYTHON)) throw new SetupError('.venv is missing: run scripts/setup.sh first (its Python creates .venv-mlserver), or pass --peers fastapi');
  log(`${existsSync(MLSERVER_PYTHON) ? 'updating' : 'creating'} .venv-mlserver from bench/mlserver/requirements.txt (a few minutes)`);
  try {
    if (!existsSync(MLSERVER_PYTHON)) execFileSync(PYTHON, ['-m', 'venv', MLSERVER_VENV], { stdio: 'inherit' });
    execFileSync(MLSERVER_PYTHON, ['-m', 'pip', 'install', '-q', '-r', requirements], { stdio: 'inherit' });
    const installed = version();
    writeFileSync(stamp, `${wanted}\n`);
    return installed;
  } catch (err) {
    throw new SetupError(`MLServer: could not install bench/mlserver/requirements.txt into .venv-mlserver (${(err as Error).message.split('\n')[0]}); `
      + 'remove .venv-mlserver to start over, or pass --peers fastapi');
  }
}

export type MlserverSampling = 'random' | 'mean';

/** The model MLServer serves for a sampling mode (the name in /v2/models/<name>/infer). */
export const mlserverModel = (sampling: MlserverSampling) => `red-${sampling}`;

/**
 * MLServer's server-wide settings.json and the model's model-settings.json, for one model per
 * server (each row starts its own, as redserve's rows do): ports from the caller, metrics off,
 * `parallel_workers` = the benchmark's worker count (MLServer's guidance: one per core), adaptive
 * batching with redserve's own batching defaults (src/config.ts: --max-batch-images, --queue-delay-us).
 */
export function mlserverSettings(o: { modelDir: string; sampling: MlserverSampling; workers: number; httpPort: number; grpcPort: number; metricsPort: number; metricsDir: string }) {
  return {
    settings: {
      debug: false,
      host: '127.0.0.1',
      http_port: o.httpPort,
      grpc_port: o.grpcPort,
      // No /metrics endpoint (redserve runs with --metrics-port off); the port is still set to a free
      // one, and the directory to this server's own, in case this MLServer version opens them anyway.
      metrics_endpoint: null,
      metrics_port: o.metricsPort,
      metrics_dir: o.metricsDir,
      parallel_workers: o.workers,
      load_models_at_startup: true,
    },
    model: {
      name: mlserverModel(o.sampling),
      implementation: 'runtime.RedEnsembleRuntime',
      max_batch_size: DEFAULTS.maxBatchImages,
      max_batch_time: DEFAULTS.queueDelayUs / 1e6,
      parameters: { uri: o.modelDir, extra: { sampling: o.sampling } },
    },
  };
}

export async function startMlserver(modelDir: string, workers: number, sampling: MlserverSampling): Promise<Started> {
  const [httpPort, grpcPort, metricsPort] = await freePorts(3);
  const repo = await mkdtemp(path.join(os.tmpdir(), 'redserve-mlserver-'));
  const { settings, model } = mlserverSettings({ modelDir, sampling, workers, httpPort, grpcPort, metricsPort, metricsDir: path.join(repo, '.metrics') });
  await mkdir(path.join(repo, model.name));
  await writeFile(path.join(repo, 'settings.json'), `${JSON.stringify(settings, null, 2)}\n`);
  await writeFile(path.join(repo, model.name, 'model-settings.json'), `${JSON.stringify(model, null, 2)}\n`);
  const url = `http://127.0.0.1:${httpPort}`;
  return startProcess(path.join(MLSERVER_VENV, 'bin', 'mlserver'), ['start', repo], `${url}/v2/models/${model.name}/ready`, url, {
    cwd: repo,
    // The runtime module, for the main process and for every parallel worker it spawns.
    env: { PYTHONPATH: MLSERVER_DIR },
    readyTimeoutS: 300,
    cleanup: () => rm(repo, { recursive: true, force: true }),
  });
}
