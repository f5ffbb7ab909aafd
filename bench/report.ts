/**
 * The sweep's report: the ratios issues 18 and 32 judge redserve by, computed per workload from the
 * measured points, with their targets beside them, written as reports/bench.md and bench.json.
 * Pure functions of the points (no I/O but `machine`), so that they can be tested on made-up points.
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import type { CpuFigures, Measurement } from './load.js';
import type { OtherLoad } from './quiet.js';
import { fmt } from './stats.js';

export interface Point extends Measurement, Partial<OtherLoad> {
  workload: string;
  target: string;
  concurrency: number;
  /** Open-loop points only: offered requests per second, images per request, the target's closed-loop
   * capacity with that body, arrivals the generator itself dropped, and how late it sent (p99, ms). */
  offeredRate?: number;
  imagesPerRequest?: number;
  capacity?: number;
  dropped?: number;
  generatorLagP99?: number;
}

export interface WorkloadInfo {
  readonly name: string;
  readonly description: string;
  readonly httpBound: boolean;
  /** The package folder, relative to the repository. */
  readonly packageDir: string;
  readonly members: number;
  readonly inputShape: readonly number[];
}

/** The sweep's rows, by the name they carry in the points. */
export const T = {
  raw: 'raw batched',
  rawParallel: 'raw batched, parallel',
  bare: 'bare Fastify route',
  random: 'redserve random',
  randomBinary: 'redserve random, binary',
  unbatched: 'redserve unbatched',
  mean: 'redserve mean',
  fastapi: 'fastapi peer',
  pythonRaw: 'python raw ASGI peer',
  mlserverRandom: 'mlserver random',
  mlserverMean: 'mlserver mean',
} as const;

/** Targets of the event loop (the main thread's CPU) are only meaningful for a Node server. */
export const NODE_SERVERS: ReadonlySet<string> = new Set([T.bare, T.random, T.randomBinary, T.unbatched, T.mean]);

/** A bound a ratio must meet: at least `min`, or below `below`, or at most `max`. */
export interface Target { readonly min?: number; readonly max?: number; readonly below?: number }

export type RatioKey = 'randomOverMean' | 'p50Overhead' | 'cpuOverhead' | 'eventLoop' | 'eventLoopRef' | 'eventLoopBinary'
  | 'vsLimit' | 'vsMlserver' | 'p99VsMlserver' | 'vsFastapi' | 'p99VsFastapi';

/** What every workload owes against the peers (issue 32): twice their images/s, and a lower p99. */
const PEER_TARGETS = { vsMlserver: { min: 2 }, p99VsMlserver: { below: 1 }, vsFastapi: { min: 2 }, p99VsFastapi: { below: 1 } } as const;
/** The event loop's CPU per request against the bare route's, on every workload (issue 32). */
const EVENT_LOOP_TARGETS = { eventLoop: { max: 2 }, eventLoopRef: { max: 2 }, eventLoopBinary: { max: 1.5 } } as const;

/**
 * The targets per workload: issue 32's (the limit, the event loop, the peers, and ResNet-20's
 * batching), and issue 18's that it left standing (ResNet-18's random / mean and p50). `vsLimit` is
 * the machine's limit for a model-bound workload (raw parallel) and the bare route for fmnist.
 */
export const TARGETS: Readonly<Record<string, Partial<Record<RatioKey, Target>>>> = {
  fmnist: { vsLimit: { min: 0.5 }, ...EVENT_LOOP_TARGETS, ...PEER_TARGETS },
  resnet20: { vsLimit: { min: 0.9 }, randomOverMean: { min: 6 }, cpuOverhead: { max: 1.3 }, ...EVENT_LOOP_TARGETS, ...PEER_TARGETS },
  resnet18: { vsLimit: { min: 0.9 }, randomOverMean: { min: 6 }, p50Overhead: { max: 1.15 }, ...EVENT_LOOP_TARGETS, ...PEER_TARGETS },
};

export interface RatioRow {
  readonly key?: RatioKey;
  readonly label: string;
  /** NaN where a row it needs was not measured. */
  readonly value: number;
  readonly target?: Target;
  /** undefined without a target or without a value. */
  readonly met?: boolean;
  /** For a ratio between two targets: the cores each kept busy (did both use the machine?) and
   * what bounds the other side. */
  readonly note?: string;
}

export function targetText(t?: Target): string {
  if (!t) return '';
  if (t.min !== undefined) return `>= ${t.min}`;
  if (t.max !== undefined) return `<= ${t.max}`;
  return `< ${t.below}`;
}

export function meets(value: number, t: Target): boolean {
  return (t.min === undefined || value >= t.min) && (t.max === undefined || value <= t.max) && (t.below === undefined || value < t.below);
}

/** The concurrency the ratios between servers are read at: 16 when measured, else the middle one. */
export function referenceConcurrency(concurrency: readonly number[]): number {
  const sorted = [...concurrency].sort((a, b) => a - b);
  return sorted.includes(16) ? 16 : sorted[Math.floor((sorted.length - 1) / 2)];
}

/** a / b, or NaN (shown as '-') where either side is missing or b is not positive: a row that answered nothing. */
export const div = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : Number.NaN);

const cpuOf = (p: Point | undefined, f: (c: CpuFigures) => number) => (p?.cpu ? f(p.cpu) : Number.NaN);

/** Cores busy below this share of the machine's: the target did not use the whole machine. */
const WHOLE_MACHINE_SHARE = 0.8;

/**
 * Every ratio of one workload, in report order, with the targets that apply to it. `httpBound`:
 * the limit redserve is held to is the bare route (a model too small to matter), else the raw
 * parallel row (the machine's limit for these members). `machineCores`: what "used the machine" is
 * measured against (this machine's, unless told).
 */
export function ratios(points: readonly Point[], workload: string, concurrency: readonly number[], httpBound = false,
  machineCores = os.cpus().length): RatioRow[] {
  const at = (target: string, c: number) => points.find((p) => p.workload === workload && p.target === target && p.concurrency === c);
  const cRef = referenceConcurrency(concurrency);
  const cLow = Math.min(...concurrency);
  const rps = (target: string, c = cRef) => at(target, c)?.rps ?? Number.NaN;
  const p50 = (target: string, c = cLow) => at(target, c)?.p50 ?? Number.NaN;
  const p99 = (target: string, c = cRef) => at(target, c)?.p99 ?? Number.NaN;
  const cpu = (target: string, c: number) => cpuOf(at(target, c), (x) => x.cpuUsPerImage);
  const loop = (target: string, c: number) => cpuOf(at(target, c), (x) => x.mainThreadUsPerImage);
  const cores = (target: string) => cpuOf(at(target, cRef), (x) => x.cores);
  const targets = TARGETS[workload] ?? {};
  const row = (key: RatioKey | undefined, label: string, value: number, note?: string): RatioRow => {
    const target = key ? targets[key] : undefined;
    return { key, label, value, target, met: target && Number.isFinite(value) ? meets(value, target) : undefined, ...(note ? { note } : {}) };
  };
  /** Cores busy on both sides, whether each used the machine, and whether the other side was bound
   * by its member runs (it used the machine and came within half of the limit). */
  const whole = WHOLE_MACHINE_SHARE * machineCores;
  const versus = (other: string, bound = true) => {
    const [mine, theirs] = [cores(T.random), cores(other)];
    if (!Number.isFinite(mine) || !Number.isFinite(theirs)) return undefined;
    const short = [...(mine < whole ? ['redserve'] : []), ...(theirs < whole ? [other] : [])];
    const used = short.length === 0 ? 'both used the machine' : `${short.join(' and ')} did not use the machine`;
    const limit = div(rps(other), rps(T.rawParallel));
    const memberBound = bound && !httpBound && theirs >= whole && limit >= 0.5 ? `; ${other} at ${fmt(limit, 2)} of the limit: member-bound` : '';
    return `cores busy ${fmt(mine, 2)} vs ${fmt(theirs, 2)}: ${used}${memberBound}`;
  };
  const limit = httpBound ? T.bare : T.rawParallel;
  return [
    row('vsLimit', httpBound ? `redserve random / bare route (the limit of this HTTP-bound workload), images/s at c=${cRef}`
      : `redserve random / raw batched, parallel (the machine's limit), images/s at c=${cRef}`, div(rps(T.random), rps(limit)), versus(limit, false)),
    row('randomOverMean', `redserve random / redserve mean, images/s at c=${cRef}`, div(rps(T.random), rps(T.mean))),
    row('p50Overhead', `redserve random p50 / (raw member p50 + bare route p50) at c=${cLow}`,
      div(p50(T.random), p50(T.rawParallel) + p50(T.bare))),
    row('cpuOverhead', `redserve random CPU per image / (raw member + bare route CPU per image) at c=${cLow}`,
      div(cpu(T.random, cLow), cpu(T.rawParallel, cLow) + cpu(T.bare, cLow))),
    ...(cRef !== cLow ? [row(undefined, `same at c=${cRef} (redserve batches across members, the raw row runs one member per batch)`,
      div(cpu(T.random, cRef), cpu(T.rawParallel, cRef) + cpu(T.bare, cRef)))] : []),
    row('eventLoop', `redserve random / bare route, event-loop CPU per request at c=${cLow}`, div(loop(T.random, cLow), loop(T.bare, cLow))),
    ...(cRef !== cLow ? [row('eventLoopRef', `same at c=${cRef}`, div(loop(T.random, cRef), loop(T.bare, cRef)))] : []),
    row('eventLoopBinary', `same at c=${cLow}, binary tensor requests`, div(loop(T.randomBinary, cLow), loop(T.bare, cLow))),
    row('vsMlserver', `redserve random / MLServer random, images/s at c=${cRef}`, div(rps(T.random), rps(T.mlserverRandom)), versus(T.mlserverRandom)),
    row('p99VsMlserver', `redserve random p99 / MLServer random p99 at c=${cRef}`, div(p99(T.random), p99(T.mlserverRandom))),
    row('vsFastapi', `redserve random / FastAPI peer, images/s at c=${cRef}`, div(rps(T.random), rps(T.fastapi)), versus(T.fastapi)),
    row('p99VsFastapi', `redserve random p99 / FastAPI peer p99 at c=${cRef}`, div(p99(T.random), p99(T.fastapi))),
    row(undefined, `redserve random / raw ASGI Python peer (the floor of a Python peer), images/s at c=${cRef}`,
      div(rps(T.random), rps(T.pythonRaw)), versus(T.pythonRaw)),
    row(undefined, `redserve mean / MLServer mean, images/s at c=${cRef}`, div(rps(T.mean), rps(T.mlserverMean))),
    ...(httpBound ? [row(undefined, `redserve random / raw batched, parallel (the machine's limit), images/s at c=${cRef}`, div(rps(T.random), rps(T.rawParallel)))]
      : [row(undefined, `redserve random / bare route, images/s at c=${cRef}`, div(rps(T.random), rps(T.bare)))]),
    row(undefined, httpBound ? `redserve random, binary / bare route, images/s at c=${cRef}`
      : `redserve random, binary / raw batched, parallel, images/s at c=${cRef}`, div(rps(T.randomBinary), rps(limit))),
    row(undefined, `bare route (answers a constant) / raw batched, parallel, images/s at c=${cRef}`, div(rps(T.bare), rps(T.rawParallel))),
    row(undefined, `redserve random batched / unbatched, images/s at c=${cRef}`, div(rps(T.random), rps(T.unbatched))),
  ];
}

export function machine(): string[] {
  const cpus = os.cpus();
  const training = (() => {
    try {
      return execFileSync('ps', ['-eo', 'pid,stat,pcpu,args'], { encoding: 'utf8' }).split('\n')
        .filter((l) => l.includes('redtrain') && !l.includes(' ps ') && !l.includes('bench-package')).map((l) => l.trim().replace(/\s+/g, ' ').slice(0, 140));
    } catch { return []; }
  })();
  return [
    `- machine: ${cpus.length} x ${cpus[0]?.model ?? 'unknown CPU'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`,
    training.length
      ? `- other load during the run: ${training.length} redtrain process(es) (PyTorch training) were running:\n${training.map((l) => `    - \`${l}\``).join('\n')}`
      : '- other load during the run: no redtrain process was running',
  ];
}


export interface ReportOptions {
  readonly command: string;
  readonly concurrency: readonly number[];
  readonly warmupS: number;
  readonly durationS: number;
  readonly workers: number;
  readonly overloadConcurrency: number;
  readonly overloadMaxQueue: number;
  readonly overloadFactor: number;
  readonly openLoopImages: number;
  readonly mlserver: string;
}

function ratioTable(rows: readonly RatioRow[]): string[] {
  return [
    '| ratio | measured | target | met | cores busy at the reference concurrency |',
    '|---|---:|---|---|---|',
    ...rows.map((r) => `| ${r.label} | ${fmt(r.value, 2)} | ${targetText(r.target)} | ${r.met === undefined ? '' : r.met ? 'yes' : 'NO'} | ${r.note ?? ''} |`),
  ];
}

/** Cores busy, and for a server of several busy processes each one's share: did every worker get work? */
function coresCell(p: Point): string {
  const each = p.cpu?.processCores ?? [];
  return `${fmt(p.cpu?.cores, 2)}${each.length > 1 ? ` (${each.map((c) => fmt(c, 2)).join(' + ')})` : ''}`;
}

function workloadSection(points: readonly Point[], w: WorkloadInfo, o: ReportOptions, targets: readonly string[]): string[] {
  const mine = points.filter((p) => p.workload === w.name);
  const closed = targets.flatMap((t) => mine.filter((p) => p.target === t));
  const overload = mine.filter((p) => p.target.endsWith('(overload)'));
  const open = mine.filter((p) => p.target.endsWith('(open-loop overload)'));
  return [
    `## ${w.name}${w.httpBound ? ' (HTTP-bound)' : ''}`,
    '',
    `${w.description}. ${w.members} members, requests of one ${w.inputShape.join('x')} image.`,
    ...(w.httpBound ? ['', 'One small image per request costs more in HTTP and JSON than in the model: these rows measure the',
      'HTTP path; their limit is the bare route, not the members.'] : []),
    '',
    '| target | concurrency | images/s | p50 ms | p90 ms | p99 ms | CPU µs/image | event loop µs/image | cores busy (per process) | rejected | load before -> after | other busy processes |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|',
    ...closed.map((p) => `| ${p.target} | ${p.concurrency} | ${p.rps.toFixed(0)} | ${fmt(p.p50, 2)} | ${fmt(p.p90, 2)} | ${fmt(p.p99, 2)} `
      + `| ${fmt(p.cpu?.cpuUsPerImage, 0)} | ${NODE_SERVERS.has(p.target) ? fmt(p.cpu?.mainThreadUsPerImage, 0) : '-'} | ${coresCell(p)} | ${p.rejected} `
      + `| ${fmt(p.loadBefore, 2)} -> ${fmt(p.loadAfter, 2)} | ${p.otherBusy === undefined ? '-' : p.otherBusy.length ? p.otherBusy.join('; ') : 'none'} |`),
    '',
    ...ratioTable(ratios(points, w.name, o.concurrency, w.httpBound)),
    '',
    ...(overload.length ? [
      `Overload: ${o.overloadConcurrency} closed-loop clients that resend at once after a 503; redserve with --max-queue ${o.overloadMaxQueue}.`,
      '',
      '| target | clients | answered images/s | p50 ms | p99 ms | rejected (503) | p99 of a rejection, ms |',
      '|---|---:|---:|---:|---:|---:|---:|',
      ...overload.map((p) => `| ${p.target} | ${p.concurrency} | ${p.rps.toFixed(0)} | ${fmt(p.p50, 2)} | ${fmt(p.p99, 2)} | ${p.rejected} | ${fmt(p.rejectedP99, 2)} |`),
      '',
    ] : []),
    ...(open.length ? [
      `Open loop: ${o.openLoopImages}-image requests offered at ${o.overloadFactor}x each target's closed-loop rate (16 clients).`,
      '',
      '| target | images/request | closed-loop req/s (16 clients) | offered req/s | answered images/s | p50 ms | p99 ms | rejected (503 or error) | p99 of a rejection, ms | generator lag p99, ms |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...open.map((p) => `| ${p.target} | ${p.imagesPerRequest ?? 1} | ${fmt(p.capacity, 0)} | ${fmt(p.offeredRate, 0)} | ${p.rps.toFixed(0)} | ${fmt(p.p50, 2)} | ${fmt(p.p99, 2)} | ${p.rejected} | ${fmt(p.rejectedP99, 2)} | ${fmt(p.generatorLagP99, 1)} |`),
      '',
    ] : []),
    `![${w.name}: throughput and p99 latency against concurrency](bench-${w.name}.png)`,
    '',
  ];
}

/** Every workload's targeted ratios, one line each, for the console. */
export function targetLines(points: readonly Point[], workloads: readonly WorkloadInfo[], concurrency: readonly number[]): string[] {
  return workloads.flatMap((w) => ratios(points, w.name, concurrency, w.httpBound).filter((r) => r.target).map((r) =>
    `${w.name.padEnd(9)} ${r.label}: ${fmt(r.value, 2)}  (target ${targetText(r.target)}${r.met === undefined ? '' : r.met ? ', met' : ', NOT met'})`));
}

/** reports/bench.md: method, the targets of every workload at a glance, then each workload's rows. */
export function markdown(points: readonly Point[], workloads: readonly WorkloadInfo[], o: ReportOptions,
  envStart: readonly string[], envEnd: readonly string[], targets: readonly string[]): string {
  const summary = workloads.flatMap((w) => ratios(points, w.name, o.concurrency, w.httpBound).filter((r) => r.target)
    .map((r) => `| ${w.name} | ${r.label} | ${fmt(r.value, 2)} | ${targetText(r.target)} | ${r.met === undefined ? '-' : r.met ? 'yes' : 'NO'} | ${r.note ?? ''} |`));
  return [
    '# Benchmark: workloads x servers x concurrency',
    '',
    `Produced by \`${o.command}\` (bench/sweep.ts). Closed-loop clients on keep-alive connections send`,
    'one-image Open Inference Protocol (v2) JSON requests (FP32 [1, C, H, W]; the "binary" row sends the tensor',
    `as FP32 bytes, the v2 binary tensor extension); ${o.warmupS} s warm-up then ${o.durationS} s measured per point;`,
    `concurrency ${o.concurrency.join(', ')}; ${o.workers} workers everywhere (redserve worker threads, uvicorn worker`,
    `processes each with its own listener on the port (bench/peer/serve.py), MLServer parallel_workers, threads of the`,
    `raw parallel row), one onnxruntime thread each. "cores busy" shows each busy process's share where a server has several.`,
    o.mlserver === 'not run' ? 'MLServer was not run (--peers).'
      : `MLServer ${o.mlserver} runs bench/mlserver/runtime.py with adaptive batching (max_batch_size and max_batch_time equal to redserve's --max-batch-images and --queue-delay-us defaults); its draw is per image, as redserve's.`,
    'The load generator runs in the benchmark process on the same machine.',
    '',
    'CPU is read from /proc over each measured window (bench/cpu.ts): every thread of the server\'s process',
    'tree (uvicorn\'s and MLServer\'s worker processes included) per answered image; "event loop" is a Node',
    'server\'s main thread alone. For the raw rows it is the threads that ran the members. "raw member" in the',
    'ratios is the raw parallel row at concurrency 1: one member run on one image on one thread.',
    '',
    ...envStart,
    ...envEnd,
    '',
    '## Targets',
    '',
    '| workload | ratio | measured | target | met | cores busy at the reference concurrency |',
    '|---|---|---:|---|---|---|',
    ...summary,
    '',
    ...workloads.flatMap((w) => workloadSection(points, w, o, targets)),
  ].join('\n');
}
