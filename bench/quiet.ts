/**
 * The quiet-machine rule: a benchmark point means something only if nothing else used the machine
 * while it ran. `watchLoad` reads every process's CPU time from /proc before and after a point, and
 * names the ones outside this benchmark's own process tree (the load generator here, the servers it
 * started) that used more than a tenth of a core meanwhile, with the load average at both ends.
 */
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';

/** The other load over one point. */
export interface OtherLoad {
  /** 1-minute load average at the start and at the end. */
  readonly loadBefore: number;
  readonly loadAfter: number;
  /** Processes outside the benchmark that used more than BUSY_CORES of a core: "comm (pid) 0.42 cores". */
  readonly otherBusy: readonly string[];
}

/** A process using more than this many cores over a point counts as other load. */
export const BUSY_CORES = 0.1;
/** The 1-minute load average above which the machine is not quiet enough to start a benchmark. */
export const QUIET_LOAD = 1.0;

const TICKS_PER_S = 100; // USER_HZ on Linux

interface Proc { readonly ppid: number; readonly comm: string; readonly ticks: number }

function processes(): Map<number, Proc> {
  const out = new Map<number, Proc>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const fields = stat.slice(close + 2).split(' ');
      // After "pid (comm) ": state ppid ... utime (field 14) stime (15), i.e. indices 11 and 12 here.
      out.set(Number(name), { ppid: Number(fields[1]), comm, ticks: Number(fields[11]) + Number(fields[12]) });
    } catch {
      // the process exited between readdir and read
    }
  }
  return out;
}

/** This process and every descendant (the servers and peers the benchmark started). */
function ownTree(procs: Map<number, Proc>): Set<number> {
  const own = new Set<number>([process.pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, p] of procs) {
      if (!own.has(pid) && own.has(p.ppid)) {
        own.add(pid);
        grew = true;
      }
    }
  }
  return own;
}

/** Start watching; the returned function ends the window and says what else ran. */
export function watchLoad(): () => OtherLoad {
  const loadBefore = os.loadavg()[0];
  const before = processes();
  const started = performance.now();
  return () => {
    const after = processes();
    const seconds = (performance.now() - started) / 1000;
    const own = ownTree(after);
    const otherBusy: string[] = [];
    for (const [pid, p] of after) {
      if (own.has(pid)) continue;
      const cores = (p.ticks - (before.get(pid)?.ticks ?? 0)) / TICKS_PER_S / seconds;
      if (cores > BUSY_CORES) otherBusy.push(`${p.comm} (${pid}) ${cores.toFixed(2)} cores`);
    }
    return { loadBefore, loadAfter: os.loadavg()[0], otherBusy };
  };
}
