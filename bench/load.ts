/**
 * The sweep's load generators, run in the benchmark process against a server in a child process:
 * closed loop (`c` clients sending back to back over keep-alive connections) and open loop (a fixed
 * arrival rate, latency counted from each scheduled arrival). Both can read the server's CPU time
 * (bench/cpu.ts) over exactly the measured window.
 */
import http from 'node:http';
import { cpuDelta, sampleTree, type CpuDelta } from './cpu.js';
import { percentile } from './stats.js';

/** A request body and the headers that describe it. */
export interface RequestBody { readonly data: Buffer; readonly headers: Readonly<Record<string, string>> }

/** CPU per answered image over the measured window, microseconds; from bench/cpu.ts. */
export interface CpuFigures {
  /** Every thread of the server's process tree. */
  readonly cpuUsPerImage: number;
  /** The root process's main thread: a Node server's event loop. */
  readonly mainThreadUsPerImage: number;
  /** Cores kept busy on average (CPU time over wall time). */
  readonly cores: number;
  /** CPU time by thread name over the window, ms: where it went. */
  readonly byCommMs: Readonly<Record<string, number>>;
  /** Cores each process of the server kept busy, busiest first, those above PROCESS_BUSY_CORES
   * only: one entry for a Node server, one per worker process that did work for uvicorn or MLServer. */
  readonly processCores?: readonly number[];
}

/** A process that kept less than this share of a core busy did no work worth listing. */
const PROCESS_BUSY_CORES = 0.02;

export interface Measurement {
  /** Answered images per second. */
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  ok: number;
  /** Answers other than 200 (shed: 503). */
  rejected: number;
  rejectedP99: number | null;
  cpu?: CpuFigures;
}

/** An Open Inference Protocol request as JSON (`data` inline). */
export function v2Json(name: string, shape: readonly number[], data: ArrayLike<number>): RequestBody {
  return {
    data: Buffer.from(JSON.stringify({ inputs: [{ name, shape, datatype: 'FP32', data: Array.from(data) }] })),
    headers: { 'content-type': 'application/json' },
  };
}

/** The same request with the tensor as raw FP32 bytes after the JSON header (the binary tensor
 * extension, which Triton's Python client uses by default), asking for the output the same way. */
export function v2Binary(name: string, shape: readonly number[], data: ArrayLike<number>): RequestBody {
  const bytes = Buffer.from(Float32Array.from(data).buffer);
  const header = Buffer.from(JSON.stringify({
    inputs: [{ name, shape, datatype: 'FP32', parameters: { binary_data_size: bytes.length } }],
    outputs: [{ name: 'probabilities', parameters: { binary_data: true } }],
  }));
  return {
    data: Buffer.concat([header, bytes]),
    headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(header.length) },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function cpuFigures(delta: CpuDelta, images: number): CpuFigures {
  const perImage = (ns: number) => (images > 0 ? ns / 1000 / images : Number.NaN);
  return {
    cpuUsPerImage: perImage(delta.totalNs),
    mainThreadUsPerImage: perImage(delta.mainThreadNs),
    cores: delta.wallMs > 0 ? delta.totalNs / 1e6 / delta.wallMs : Number.NaN,
    byCommMs: Object.fromEntries(Object.entries(delta.byComm).filter(([, ns]) => ns > 0).map(([comm, ns]) => [comm, Math.round(ns / 1e4) / 100])),
    processCores: delta.wallMs > 0
      ? Object.values(delta.byProcess).map((ns) => ns / 1e6 / delta.wallMs).filter((c) => c >= PROCESS_BUSY_CORES).sort((a, b) => b - a)
      : [],
  };
}

/** The server's CPU over a window: `start()` at its beginning, `end(images)` at its end. No pid: no figures. */
function cpuWindow(pid: number | undefined) {
  let before: ReturnType<typeof sampleTree> | undefined;
  return {
    start() { if (pid !== undefined) before = sampleTree(pid); },
    end(images: number): CpuFigures | undefined {
      return before ? cpuFigures(cpuDelta(before, sampleTree(pid!)), images) : undefined;
    },
  };
}

function send(agent: http.Agent, target: URL, body: RequestBody, done: (ok: boolean) => void): void {
  const req = http.request({
    host: target.hostname, port: target.port, path: target.pathname, method: 'POST', agent,
    headers: { ...body.headers, 'content-length': body.data.length },
  }, (res) => {
    res.resume();
    res.on('end', () => done(res.statusCode === 200));
  });
  req.on('error', () => done(false));
  req.end(body.data);
}

export interface ClosedLoopOptions {
  readonly c: number;
  readonly warmupS: number;
  readonly durationS: number;
  /** The server's pid, to read its process tree's CPU time over the measured window. */
  readonly cpuPid?: number;
  readonly imagesPerRequest?: number;
}

/** Closed-loop load: `c` clients, each sending `body` back to back, for warmup + duration. */
export async function closedLoop(url: string, body: RequestBody, o: ClosedLoopOptions): Promise<Measurement> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.c });
  const target = new URL(url);
  const okLat: number[] = [];
  const badLat: number[] = [];
  let measuring = false;
  let running = true;
  const one = () => new Promise<void>((resolve) => {
    const t0 = performance.now();
    send(agent, target, body, (ok) => {
      if (measuring) (ok ? okLat : badLat).push(performance.now() - t0);
      resolve();
    });
  });
  const clients = Array.from({ length: o.c }, async () => { while (running) await one(); });
  await sleep(o.warmupS * 1000);
  const cpu = cpuWindow(o.cpuPid);
  cpu.start();
  measuring = true;
  const t0 = performance.now();
  await sleep(o.durationS * 1000);
  measuring = false;
  const seconds = (performance.now() - t0) / 1000;
  const images = okLat.length * (o.imagesPerRequest ?? 1);
  const cpuFigs = cpu.end(images);
  running = false;
  await Promise.all(clients);
  agent.destroy();
  okLat.sort((a, b) => a - b);
  badLat.sort((a, b) => a - b);
  return {
    rps: images / seconds, p50: percentile(okLat, 0.5), p90: percentile(okLat, 0.9), p99: percentile(okLat, 0.99),
    ok: okLat.length, rejected: badLat.length, rejectedP99: badLat.length ? percentile(badLat, 0.99) : null,
    ...(cpuFigs && { cpu: cpuFigs }),
  };
}

export interface OpenLoopMeasurement extends Measurement {
  arrivals: number;
  dropped: number;
  generatorLagP99: number;
}

/**
 * Open-loop load: requests arrive at `rate` per second whatever happens to earlier ones (each
 * latency counts from its scheduled arrival, so a server that falls behind cannot hide it), for
 * warmup + duration. Arrivals past `maxOutstanding` unanswered requests are counted as rejected at
 * the client (the generator's own bound; memory stays finite either way). Throughput is the
 * window's answered requests over the time from the window's start to the last of those answers.
 */
export async function openLoop(url: string, body: RequestBody, rate: number, warmupS: number, durationS: number,
  maxOutstanding = 4096): Promise<OpenLoopMeasurement> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
  const target = new URL(url);
  const okLat: number[] = [];
  const badLat: number[] = [];
  let outstanding = 0;
  let dropped = 0;
  let arrivals = 0;
  let lastAnswer = 0;
  const measureFrom = performance.now() + warmupS * 1000;
  const end = measureFrom + durationS * 1000;
  const lag: number[] = [];
  const arrive = (scheduled: number) => {
    const counted = scheduled >= measureFrom && scheduled < end;
    if (counted) {
      arrivals++;
      lag.push(performance.now() - scheduled);
    }
    if (outstanding >= maxOutstanding) {
      if (counted) dropped++;
      return;
    }
    outstanding++;
    send(agent, target, body, (ok) => {
      outstanding--;
      if (counted) {
        (ok ? okLat : badLat).push(performance.now() - scheduled);
        if (ok) lastAnswer = performance.now();
      }
    });
  };
  const start = performance.now();
  let sent = 0;
  while (performance.now() < end) {
    const due = Math.floor(((performance.now() - start) / 1000) * rate);
    for (; sent < due; sent++) arrive(start + (sent / rate) * 1000);
    await sleep(1);
  }
  while (outstanding > 0) await sleep(10);
  agent.destroy();
  okLat.sort((a, b) => a - b);
  badLat.sort((a, b) => a - b);
  lag.sort((a, b) => a - b);
  // Answered per second over the time it took to answer them: a server that queues everything
  // answers the window's arrivals long after the window, and must not be credited with their rate.
  const answeringS = Math.max(durationS, (lastAnswer - measureFrom) / 1000);
  return {
    rps: okLat.length / answeringS, p50: percentile(okLat, 0.5), p90: percentile(okLat, 0.9), p99: percentile(okLat, 0.99),
    ok: okLat.length, rejected: badLat.length, rejectedP99: badLat.length ? percentile(badLat, 0.99) : null, arrivals, dropped,
    generatorLagP99: percentile(lag, 0.99),
  };
}
