/**
 * CPU time of a process tree, per thread, read from /proc (Linux only): what the sweep charges to
 * each server for the images it answered.
 *
 * Each thread's time comes from /proc/<pid>/task/<tid>/schedstat (its first field: nanoseconds on a
 * CPU, user and kernel together). /proc/<pid>/stat's utime + stime count the same time in clock
 * ticks (`getconf CLK_TCK`, usually 100 a second: 10 ms steps, too coarse for a window of a few
 * seconds split over thousands of requests), so they serve only as a cross-check, and to count
 * threads that ended inside a window, which schedstat can no longer see.
 *
 * A Node server's event loop is its main thread (tid == pid); its worker threads, libuv's pool,
 * V8's helpers and onnxruntime's threads are the other tasks of the same process. A Python server
 * (uvicorn, MLServer) is a tree of processes: `sampleTree` follows parent ids through /proc/<pid>/stat.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** The fields of /proc/<pid>/stat that this module reads. */
export interface StatLine {
  readonly pid: number;
  /** The command name, up to 15 bytes; may hold spaces and parentheses. */
  readonly comm: string;
  readonly state: string;
  readonly ppid: number;
  /** User and kernel time, in clock ticks. */
  readonly utimeTicks: number;
  readonly stimeTicks: number;
}

/**
 * Parse one /proc/<pid>/stat line. The command name sits between the first '(' and the LAST ')':
 * it may itself contain ') ' (a thread may name itself anything), so splitting on spaces is wrong.
 */
export function parseStat(line: string): StatLine {
  const open = line.indexOf('(');
  const close = line.lastIndexOf(')');
  if (open < 0 || close < open) throw new Error(`not a /proc stat line: '${line.slice(0, 80)}'`);
  // Fields after the name, numbered as in proc(5) from field 3 (state) on.
  const rest = line.slice(close + 2).trim().split(/\s+/);
  const field = (n: number) => {
    const v = rest[n - 3];
    if (v === undefined) throw new Error(`/proc stat line has no field ${n}: '${line.slice(0, 80)}'`);
    return v;
  };
  return {
    pid: Number(line.slice(0, open).trim()),
    comm: line.slice(open + 1, close),
    state: field(3),
    ppid: Number(field(4)),
    utimeTicks: Number(field(14)),
    stimeTicks: Number(field(15)),
  };
}

/** Nanoseconds on a CPU from a /proc schedstat line ("run_ns wait_ns timeslices"). */
export function parseSchedstat(text: string): number {
  const ns = Number(text.trim().split(/\s+/)[0]);
  if (!Number.isFinite(ns)) throw new Error(`not a /proc schedstat line: '${text.slice(0, 80)}'`);
  return ns;
}

let ticks: number | undefined;
/** Clock ticks per second of utime/stime (`getconf CLK_TCK`; 100 where getconf is missing). */
export function clockTicksPerSecond(): number {
  if (ticks === undefined) {
    try {
      ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    } catch {
      ticks = Number.NaN;
    }
    if (!Number.isInteger(ticks) || ticks <= 0) ticks = 100;
  }
  return ticks;
}

/** null when the file is gone: the process or thread ended between listing and reading. */
function readOrNull(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

export interface ThreadSample {
  readonly pid: number;
  readonly tid: number;
  readonly comm: string;
  readonly cpuNs: number;
}

export interface ProcessSample {
  readonly pid: number;
  readonly ppid: number;
  readonly comm: string;
  /** utime + stime of the whole process (its ended threads included), in nanoseconds, 1/CLK_TCK steps. */
  readonly statNs: number;
  readonly threads: readonly ThreadSample[];
}

export interface TreeSample {
  readonly rootPid: number;
  /** performance.now() when the sample was taken. */
  readonly atMs: number;
  readonly processes: readonly ProcessSample[];
}

/** One process and its threads, or null when it has ended. */
export function sampleProcess(pid: number): ProcessSample | null {
  const stat = readOrNull(`/proc/${pid}/stat`);
  if (stat === null) return null;
  const s = parseStat(stat);
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return null;
  }
  const threads: ThreadSample[] = [];
  for (const name of tids) {
    const tid = Number(name);
    const sched = readOrNull(`/proc/${pid}/task/${tid}/schedstat`);
    const comm = readOrNull(`/proc/${pid}/task/${tid}/comm`);
    if (sched === null || comm === null) continue; // the thread ended meanwhile
    threads.push({ pid, tid, comm: comm.trim(), cpuNs: parseSchedstat(sched) });
  }
  return { pid, ppid: s.ppid, comm: s.comm, statNs: ((s.utimeTicks + s.stimeTicks) * 1e9) / clockTicksPerSecond(), threads };
}

/** `pid` and every process below it (children, grandchildren...), from the ppid of each /proc/<n>/stat. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readOrNull(`/proc/${name}/stat`);
    if (stat === null) continue;
    const { ppid } = parseStat(stat);
    const list = children.get(ppid);
    if (list) list.push(Number(name));
    else children.set(ppid, [Number(name)]);
  }
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    out.push(p);
    queue.push(...(children.get(p) ?? []));
  }
  return out;
}

/** Every thread of `rootPid` and of the processes below it. */
export function sampleTree(rootPid: number): TreeSample {
  const atMs = performance.now();
  const processes = descendants(rootPid).map(sampleProcess).filter((p): p is ProcessSample => p !== null);
  return { rootPid, atMs, processes };
}

export interface CpuDelta {
  readonly wallMs: number;
  /** Every thread of every process in the tree, nanoseconds; threads and processes born inside the window count whole. */
  readonly totalNs: number;
  /** The root process's main thread (for Node: the event loop). */
  readonly mainThreadNs: number;
  /** The same window from utime + stime (ticks), which also counts threads that ended in it. */
  readonly statNs: number;
  /** totalNs by thread name, e.g. { node: ..., 'python3': ... }: where the time went. */
  readonly byComm: Readonly<Record<string, number>>;
  /** totalNs by process id: whether a multi-process server (uvicorn's workers) used each process. */
  readonly byProcess: Readonly<Record<number, number>>;
  readonly processes: number;
}

/** CPU spent between two samples of the same tree. A thread seen only in `before` ended and is lost to totalNs. */
export function cpuDelta(before: TreeSample, after: TreeSample): CpuDelta {
  const key = (t: ThreadSample) => `${t.pid}/${t.tid}`;
  const earlier = new Map(before.processes.flatMap((p) => p.threads.map((t) => [key(t), t.cpuNs] as const)));
  const earlierStat = new Map(before.processes.map((p) => [p.pid, p.statNs]));
  let totalNs = 0;
  let mainThreadNs = 0;
  let statNs = 0;
  const byComm: Record<string, number> = {};
  const byProcess: Record<number, number> = {};
  for (const p of after.processes) {
    statNs += p.statNs - (earlierStat.get(p.pid) ?? 0);
    for (const t of p.threads) {
      const ns = t.cpuNs - (earlier.get(key(t)) ?? 0);
      totalNs += ns;
      byComm[t.comm] = (byComm[t.comm] ?? 0) + ns;
      byProcess[p.pid] = (byProcess[p.pid] ?? 0) + ns;
      if (t.pid === after.rootPid && t.tid === after.rootPid) mainThreadNs = ns;
    }
  }
  return { wallMs: after.atMs - before.atMs, totalNs, mainThreadNs, statNs, byComm, byProcess, processes: after.processes.length };
}

/** This thread's own CPU time in nanoseconds (/proc/thread-self: right inside a worker thread too). */
export function threadCpuNs(): number {
  return parseSchedstat(readFileSync('/proc/thread-self/schedstat', 'utf8'));
}
