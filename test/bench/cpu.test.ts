/**
 * bench/cpu.ts: /proc parsing on sample lines, and CPU deltas of this very process checked against
 * getrusage (process.cpuUsage) over a busy loop. The loop's length is counted in CPU time, not wall
 * time, so a loaded machine slows the test without failing it.
 */
import t from 'tap';
import { clockTicksPerSecond, cpuDelta, descendants, parseSchedstat, parseStat, sampleTree, threadCpuNs } from '../../bench/cpu.js';

t.test('a stat line whose command name holds spaces and parentheses', async (t) => {
  const line = '4242 (my (odd) name) ) S 17 4242 4242 0 -1 4194560 1 0 0 0 731 52 0 0 20 0 3 0 1000 1 1 18446744073709551615\n';
  t.same(parseStat(line), { pid: 4242, comm: 'my (odd) name) ', state: 'S', ppid: 17, utimeTicks: 731, stimeTicks: 52 });
  t.throws(() => parseStat('garbage'), /not a \/proc stat line/);
  t.throws(() => parseStat('1 (x) S 0'), /has no field 14/);
});

t.test('a schedstat line gives its first field in nanoseconds', async (t) => {
  t.equal(parseSchedstat('123456789 2000 17\n'), 123456789);
  t.throws(() => parseSchedstat('x y z'), /not a \/proc schedstat line/);
});

t.test('clock ticks are a positive integer', async (t) => {
  const hz = clockTicksPerSecond();
  t.ok(Number.isInteger(hz) && hz > 0, `CLK_TCK = ${hz}`);
});

t.test('this process is its own tree, with its main thread', async (t) => {
  t.equal(descendants(process.pid)[0], process.pid);
  const sample = sampleTree(process.pid);
  const self = sample.processes.find((p) => p.pid === process.pid);
  t.ok(self, 'the root process is sampled');
  t.ok(self!.threads.some((th) => th.tid === process.pid), 'its main thread is among its threads');
});

t.test('a busy loop: the deltas agree with getrusage', async (t) => {
  const busyUs = 100_000;
  const before = sampleTree(process.pid);
  const thread0 = threadCpuNs();
  const usage0 = process.cpuUsage();
  let x = 0;
  // Check the clock only every 100k iterations: getrusage itself costs kernel time.
  while (process.cpuUsage(usage0).user < busyUs) for (let i = 0; i < 100_000; i++) x += Math.sqrt(i);
  const used = process.cpuUsage(usage0);
  const threadNs = threadCpuNs() - thread0;
  const delta = cpuDelta(before, sampleTree(process.pid));
  t.ok(x > 0);
  const rusageNs = (used.user + used.system) * 1000;
  // The main thread did the loop; the process's other threads (V8, libuv) were close to idle.
  t.ok(delta.mainThreadNs > 0.8 * rusageNs && delta.mainThreadNs <= rusageNs * 1.05 + 2e6,
    `main thread ${(delta.mainThreadNs / 1e6).toFixed(1)} ms against getrusage ${(rusageNs / 1e6).toFixed(1)} ms`);
  t.ok(Math.abs(delta.totalNs - rusageNs) < 0.15 * rusageNs + 5e6,
    `all threads ${(delta.totalNs / 1e6).toFixed(1)} ms against getrusage ${(rusageNs / 1e6).toFixed(1)} ms`);
  t.ok(Math.abs(threadNs - delta.mainThreadNs) < 0.1 * rusageNs + 2e6, '/proc/thread-self is the main thread here');
  // utime + stime move in 1/CLK_TCK steps: within two ticks plus 15%.
  const tickNs = 1e9 / clockTicksPerSecond();
  t.ok(Math.abs(delta.statNs - rusageNs) < 2 * tickNs + 0.15 * rusageNs,
    `utime + stime ${(delta.statNs / 1e6).toFixed(0)} ms against getrusage ${(rusageNs / 1e6).toFixed(1)} ms`);
  t.ok(delta.byComm && Object.values(delta.byComm).reduce((a, b) => a + b, 0) === delta.totalNs, 'byComm adds up to the total');
  t.equal(Object.values(delta.byProcess).reduce((a, b) => a + b, 0), delta.totalNs, 'byProcess adds up to the total');
});

t.test('a busy child process is counted as a process of its own (uvicorn\'s workers are)', async (t) => {
  const { spawn } = await import('node:child_process');
  const { cpuFigures } = await import('../../bench/load.js');
  const busy = spawn(process.execPath, ['-e', 'const end = Date.now() + 3000; let x = 0; while (Date.now() < end) x += Math.sqrt(x + 1);']);
  t.teardown(() => { busy.kill(); });
  await new Promise((r) => setTimeout(r, 200));
  const from = sampleTree(process.pid);
  t.ok(from.processes.some((p) => p.pid === busy.pid), 'the child is in the tree');
  await new Promise((r) => setTimeout(r, 500));
  const delta = cpuDelta(from, sampleTree(process.pid));
  const childNs = delta.byProcess[busy.pid!] ?? 0;
  // On a loaded machine the child gets less than a core: a fifth of one is enough to tell it apart.
  t.ok(childNs > 0.1e9, `the busy child's own time: ${(childNs / 1e6).toFixed(0)} ms of 500`);
  const figures = cpuFigures(delta, 1);
  t.ok(figures.processCores!.some((c) => Math.abs(c - childNs / 1e6 / delta.wallMs) < 1e-9), 'and among the cores per process');
  t.same(figures.processCores, [...figures.processCores!].sort((a, b) => b - a), 'busiest first');
});
