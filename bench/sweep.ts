/**
 * The concurrency sweep (`npm run bench -- --suite sweep`, or `--quick`): for every workload
 * (bench/workloads.ts), closed-loop load at each concurrency (default 1, 4, 16, 64), each client
 * sending one-image Open Inference Protocol (v2) JSON requests back to back over keep-alive
 * connections, against, in one run on this machine:
 *
 *   raw batched        onnxruntime in this process, batches of `concurrency` images, one session
 *                      per member on as many intra-op threads as the servers have workers
 *   raw batched, parallel  as many threads as the servers have workers, each with its own sessions
 *                      on one intra-op thread (as redserve's workers run them), `concurrency`
 *                      images in flight between them: the machine's limit, with no HTTP, JSON or
 *                      queue (bench/raw.ts)
 *   bare Fastify route a Fastify server that answers every request with a constant (bench/bare-server.ts):
 *                      the ceiling of any Fastify service here with this load generator
 *   redserve random    dist/src/server.js, random sampling, dynamic batching on (the defaults)
 *   redserve random, binary  the same server, the tensor sent as raw FP32 bytes (the v2 binary
 *                      tensor extension, Triton's client default) instead of a JSON number array
 *   redserve unbatched the same with --max-batch-images 1
 *   redserve mean      mean sampling (every member per image), batching on
 *   fastapi peer       the same ONNX members in Python onnxruntime behind FastAPI/uvicorn, one
 *                      drawn member per image, no batching (bench/peer/)
 *   mlserver random, mlserver mean  MLServer with adaptive batching and a custom runtime over the
 *                      same members (bench/mlserver/runtime.py)
 *
 * plus, per workload, an overload point (far more clients than the queue bound) and an open-loop
 * point for redserve and the FastAPI peer. Every server runs as a child process with the same worker
 * count; the load generator is this process, which also reads each server's CPU time over each
 * measured window (bench/cpu.ts). Results: bench.md and bench.json in the output folder, and a plot
 * per workload (bench/plot.py).
 */
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { readPackage } from '../src/ensemble/manifest.js';
import { closedLoop, openLoop, v2Binary, v2Json, type Measurement, type RequestBody } from './load.js';
import { rawBatched, rawParallel } from './raw.js';
import { machine, markdown, T, targetLines, type Point, type ReportOptions, type WorkloadInfo } from './report.js';
import { QUIET_LOAD, watchLoad, type OtherLoad } from './quiet.js';
import { fmt } from './stats.js';
import { ensureMlserver, ensurePeer, mlserverModel, startBare, startMlserver, startPeer, startRedserve, type Started } from './servers.js';
import { PYTHON, ROOT, SetupError, type Workload } from './workloads.js';

/** The Python servers a sweep can compare redserve with. */
export const PEERS = ['fastapi', 'mlserver'] as const;
export type Peer = (typeof PEERS)[number];

export interface SweepOptions {
  readonly workloads: readonly Workload[];
  readonly concurrency: readonly number[];
  readonly durationS: number;
  readonly warmupS: number;
  readonly workers: number;
  readonly peers: readonly Peer[];
  readonly overloadConcurrency: number;
  readonly overloadMaxQueue: number;
  /** Open-loop overload: arrivals per second as a multiple of the target's throughput at concurrency 16. */
  readonly overloadFactor: number;
  readonly outDir: string;
  readonly command: string;
  /** Write the report even when the machine was not quiet at the start (it then says so at its top). */
  readonly allowLoad: boolean;
}

/** Images per request in the open-loop overload test. */
const OPEN_LOOP_IMAGES = 16;

/** A server row: how to start it, which body to send and to which path. */
interface ServerRow { readonly target: string; start(): Promise<Started>; readonly body: RequestBody; readonly path: string }

export async function runSweep(options: SweepOptions): Promise<void> {
  const log = (line: string) => process.stdout.write(`${line}\n`);
  if (options.peers.includes('fastapi')) ensurePeer();
  const mlserverVersion = options.peers.includes('mlserver') ? ensureMlserver(log) : 'not run';
  // The quiet-machine rule (bench/quiet.ts): look at the machine for 2 s before anything starts.
  const quiet = watchLoad();
  await new Promise((r) => setTimeout(r, 2000));
  const atStart = quiet();
  const notQuiet = atStart.loadBefore > QUIET_LOAD || atStart.otherBusy.length > 0
    ? `load average ${atStart.loadBefore.toFixed(2)} (quiet: at most ${QUIET_LOAD})${atStart.otherBusy.length ? `; busy: ${atStart.otherBusy.join(', ')}` : ''}`
    : null;
  if (notQuiet && !options.allowLoad && path.resolve(options.outDir) === path.join(ROOT, 'reports')) {
    throw new SetupError(`the machine is not quiet: ${notQuiet}. Figures taken now are not comparable; pause the other load `
      + '(kill -STOP PID), or write elsewhere (--out DIR), or pass --allow-load (the report then says so at its top)');
  }
  const envStart = [
    ...(notQuiet ? [`**NOT COMPARABLE: the machine was not quiet at the start (${notQuiet}).**`, ''] : []),
    ...machine().map((l) => l.replace('- machine:', '- machine at the start:').replace('- other load during the run:', '- other load at the start:')),
  ];
  const points: Point[] = [];
  const infos: WorkloadInfo[] = [];
  const record = (workload: string, target: string, concurrency: number, m: Measurement, extra: Partial<Point> = {}) => {
    const p: Point = { workload, target, concurrency, ...m, ...extra };
    points.push(p);
    log(`${workload.padEnd(9)} ${target.padEnd(38)} c=${String(concurrency).padStart(3)}  ${p.rps.toFixed(0).padStart(6)} img/s  `
      + `p50 ${fmt(p.p50, 2).padStart(7)}  p99 ${fmt(p.p99, 2).padStart(7)} ms  CPU ${fmt(p.cpu?.cpuUsPerImage, 0).padStart(6)} µs/img`
      + `  (main thread ${fmt(p.cpu?.mainThreadUsPerImage, 0)})  rejected ${p.rejected}`);
  };
  const w = options.workers;

  // Every package first (generating the missing ones): a failure then costs no measurement.
  const dirs: string[] = [];
  for (const workload of options.workloads) dirs.push(await workload.resolve(log));
  for (const [i, workload] of options.workloads.entries()) {
    const modelDir = dirs[i];
    const pkg = await readPackage(modelDir);
    const { manifest } = pkg;
    infos.push({ name: workload.name, description: workload.description, httpBound: workload.httpBound,
      packageDir: path.relative(ROOT, modelDir), members: manifest.kind === 'ensemble' ? manifest.members.length : 0, inputShape: manifest.input.shape });
    const shape = [1, ...manifest.input.shape];
    const body = v2Json(manifest.input.name, shape, pkg.golden[0].input);
    const binaryBody = v2Binary(manifest.input.name, shape, pkg.golden[0].input);
    const inferPath = `/v2/models/${manifest.name}/infer`;
    // Every point records the other load over its own window (bench/quiet.ts).
    const watched = async (run: () => Promise<Measurement>): Promise<Measurement & OtherLoad> => {
      const done = watchLoad();
      const m = await run();
      return { ...m, ...done() };
    };
    const load = (url: string, b: RequestBody, c: number, cpuPid?: number) =>
      watched(() => closedLoop(url, b, { c, warmupS: options.warmupS, durationS: options.durationS, cpuPid }));

    for (const c of options.concurrency) record(workload.name, T.raw, c, await watched(() => rawBatched(modelDir, w, c, options.warmupS, options.durationS)));
    for (const c of options.concurrency) record(workload.name, T.rawParallel, c, await watched(() => rawParallel(modelDir, w, c, options.warmupS, options.durationS)));

    const rows: ServerRow[] = [
      { target: T.bare, start: () => startBare(), body, path: inferPath },
      { target: T.random, start: () => startRedserve(modelDir, w, []), body, path: inferPath },
      { target: T.randomBinary, start: () => startRedserve(modelDir, w, []), body: binaryBody, path: inferPath },
      { target: T.unbatched, start: () => startRedserve(modelDir, w, ['--max-batch-images', '1']), body, path: inferPath },
      { target: T.mean, start: () => startRedserve(modelDir, w, ['--sampling', 'mean']), body, path: inferPath },
      ...(options.peers.includes('fastapi') ? [
        { target: T.fastapi, start: () => startPeer(modelDir, w), body, path: inferPath },
        { target: T.pythonRaw, start: () => startPeer(modelDir, w, 'raw:app'), body, path: inferPath },
      ] : []),
      ...(options.peers.includes('mlserver') ? (['random', 'mean'] as const).map((s) => ({
        target: s === 'random' ? T.mlserverRandom : T.mlserverMean, start: () => startMlserver(modelDir, w, s), body,
        path: `/v2/models/${mlserverModel(s)}/infer`,
      })) : []),
    ];
    // Every server up at once, and their points interleaved (each concurrency visits the rows in
    // turn, alternating the direction), so that drift over the run hits redserve and the peers alike.
    const servers: Started[] = [];
    try {
      for (const row of rows) servers.push(await row.start());
      for (const [k, c] of options.concurrency.entries()) {
        const order = rows.map((_, i) => i);
        if (k % 2 === 1) order.reverse();
        for (const i of order) {
          record(workload.name, rows[i].target, c, await load(`${servers[i].url}${rows[i].path}`, rows[i].body, c, servers[i].pid));
        }
      }
    } finally {
      for (const server of servers) await server.stop();
    }

    const overload: [string, () => Promise<Started>][] = [
      [`${T.random} (overload)`, () => startRedserve(modelDir, w, ['--max-queue', String(options.overloadMaxQueue)])],
      ...(options.peers.includes('fastapi') ? [[`${T.fastapi} (overload)`, () => startPeer(modelDir, w)] as [string, () => Promise<Started>]] : []),
    ];
    for (const [target, start] of overload) {
      const server = await start();
      try {
        record(workload.name, target, options.overloadConcurrency, await load(`${server.url}${inferPath}`, body, options.overloadConcurrency, server.pid));
      } finally {
        await server.stop();
      }
    }

    // Open loop at a multiple of each target's own capacity. Requests carry OPEN_LOOP_IMAGES images so
    // that the offered rate stays within what this one load-generating process can send on time.
    const heavy = v2Json(manifest.input.name, [OPEN_LOOP_IMAGES, ...manifest.input.shape],
      Array.from({ length: OPEN_LOOP_IMAGES }, () => Array.from(pkg.golden[0].input)).flat());
    const openTargets: [string, () => Promise<Started>][] = [
      [`${T.random} (open-loop overload)`, () => startRedserve(modelDir, w, ['--max-queue', String(options.overloadMaxQueue)])],
      ...(options.peers.includes('fastapi') ? [[`${T.fastapi} (open-loop overload)`, () => startPeer(modelDir, w)] as [string, () => Promise<Started>]] : []),
    ];
    for (const [target, start] of openTargets) {
      const server = await start();
      try {
        const url = `${server.url}${inferPath}`;
        const capacity = (await load(url, heavy, 16)).rps;
        const rate = Math.max(1, Math.round(capacity * options.overloadFactor));
        const point = await openLoop(url, heavy, rate, options.warmupS, options.durationS);
        record(workload.name, target, 0, { ...point, rps: point.rps * OPEN_LOOP_IMAGES },
          { offeredRate: rate, imagesPerRequest: OPEN_LOOP_IMAGES, capacity, dropped: point.dropped, generatorLagP99: point.generatorLagP99 });
      } finally {
        await server.stop();
      }
    }
  }

  const envEnd = machine().filter((l) => l.startsWith('- machine')).map((l) => l.replace(/^- machine: .*load average/, '- load average at the end:'));
  const report: ReportOptions = {
    command: options.command, concurrency: options.concurrency, warmupS: options.warmupS, durationS: options.durationS, workers: w,
    overloadConcurrency: options.overloadConcurrency, overloadMaxQueue: options.overloadMaxQueue, overloadFactor: options.overloadFactor,
    openLoopImages: OPEN_LOOP_IMAGES, mlserver: mlserverVersion,
  };
  const targets = [T.raw, T.rawParallel, T.bare, T.random, T.randomBinary, T.unbatched, T.mean, T.fastapi, T.pythonRaw, T.mlserverRandom, T.mlserverMean];
  await mkdir(options.outDir, { recursive: true });
  const json = path.join(options.outDir, 'bench.json');
  // Everything markdown() reads, so that bench/render.ts can write bench.md again from this file alone.
  await writeFile(json, `${JSON.stringify({ command: options.command, mlserver: mlserverVersion, report, envStart, envEnd, targets, workloads: infos, points }, null, 1)}\n`);
  await writeFile(path.join(options.outDir, 'bench.md'), markdown(points, infos, report, envStart, envEnd, targets));
  for (const info of infos) {
    try {
      execFileSync(PYTHON, [path.join(ROOT, 'bench', 'plot.py'), json, info.name, path.join(options.outDir, `bench-${info.name}.png`)], { stdio: 'inherit' });
    } catch (err) {
      process.stderr.write(`plot of ${info.name} not written: ${(err as Error).message}\n`);
    }
  }
  log(['', ...targetLines(points, infos, options.concurrency), '', `wrote ${path.join(options.outDir, 'bench.md')}`].join('\n'));
}
