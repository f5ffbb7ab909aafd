/**
 * The compose topology, run for real without Docker: scripts/replicas.sh starts nginx (Debian's
 * package) with deploy/nginx.conf in front of three redserve processes on loopback ports. Under a
 * steady load through nginx: requests spread over the replicas; one replica killed with SIGKILL
 * loses no request (nginx retries each one it could not complete on another replica); another
 * stopped with SIGTERM drains without a failed request; the survivor keeps serving. The counts
 * are printed as test comments.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { parseMetrics, ROOT, sample, TINY } from './helpers.js';

const run = promisify(execFile);
const NGINX_PORT = 18580;
const REPLICA_PORT = 18581;
// A fixed folder: should this process be killed before its teardown, the next run's start stops
// the processes the last one left (the script stops whatever the folder's pid files name).
const dir = path.join(os.tmpdir(), 'redserve-replicas-test');
await mkdir(dir, { recursive: true });
const script = path.join(ROOT, 'scripts', 'replicas.sh');
const env = {
  ...process.env, NGINX_PORT: String(NGINX_PORT), REPLICA_PORT: String(REPLICA_PORT),
  REDSERVE_MODEL: TINY, REDSERVE_FLAGS: '--workers 1 --drain-timeout-ms 10000',
};
const png = await readFile(path.join(TINY, 'golden', '0.png'));

t.setTimeout(300_000);
t.teardown(() => run('bash', [script, 'stop', dir], { env }));
process.once('exit', () => { try { execFileSync('bash', [script, 'stop', dir], { env }); } catch { /* already stopped */ } });

const started = await run('bash', [script, 'start', dir], { env, timeout: 120_000 });
const pids = [...started.stdout.matchAll(/^replica(\d)=\S+ metrics=(\S+) pid=(\d+)$/gm)]
  .map((m) => ({ index: Number(m[1]), metrics: m[2], pid: Number(m[3]) }));

/** Classify requests through nginx, `concurrency` at a time, until `stop()`; statuses counted. */
function load(concurrency: number) {
  const counts = new Map<number | string, number>();
  let running = true;
  const loops = Array.from({ length: concurrency }, async () => {
    while (running) {
      let key: number | string;
      try {
        const res = await fetch(`http://127.0.0.1:${NGINX_PORT}/classify?topK=1`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: png });
        await res.arrayBuffer();
        key = res.status;
      } catch (err) {
        key = (err as Error).message;
      }
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  });
  return {
    counts,
    total: () => [...counts.values()].reduce((a, b) => a + b, 0),
    async stop() { running = false; await Promise.all(loops); return counts; },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The number of /classify 200s a replica has answered, from its own metrics. */
async function served(metrics: string): Promise<number> {
  const text = await (await fetch(`http://${metrics}/metrics`)).text();
  const n = sample(parseMetrics(text), 'redserve_http_requests_total', { route: '/classify', status: '200' });
  return Number.isNaN(n) ? 0 : n;
}
/** nginx's log since `from` lines: requests that needed a second upstream attempt. */
async function retried(from: number): Promise<{ lines: number; retried: number; failed: number }> {
  const lines = (await readFile(path.join(dir, 'access.log'), 'utf8')).split('\n').filter(Boolean);
  const window = lines.slice(from);
  return { lines: lines.length, retried: window.filter((l) => l.includes(',')).length, failed: window.filter((l) => !l.startsWith('200 ')).length };
}
/** Running (not gone, not a zombie: the replicas' parent, the script, has exited). */
async function alive(pid: number): Promise<boolean> {
  try {
    return !/^\d+ \(.*\) Z/.test(await readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

t.test('nginx with deploy/nginx.conf spreads requests over three replicas', async (t) => {
  t.equal(pids.length, 3, started.stdout);
  const before = await Promise.all(pids.map((p) => served(p.metrics)));
  const l = load(4);
  while (l.total() < 60) await sleep(50);
  const counts = await l.stop();
  const after = await Promise.all(pids.map((p) => served(p.metrics)));
  const per = after.map((a, i) => a - before[i]);
  t.comment(`spread: ${l.total()} requests, statuses ${JSON.stringify([...counts])}, per replica ${per.join(' / ')}`);
  t.same([...counts.keys()], [200], 'every request answered 200');
  t.ok(per.every((n) => n >= l.total() / 6), `each replica answered at least a sixth (${per.join(' / ')})`);
});

t.test('SIGKILL on a replica under load: nginx retries what it could not complete, no request fails', async (t) => {
  const { lines: from } = await retried(0);
  const l = load(4);
  while (l.total() < 20) await sleep(20);
  const atKill = l.total();
  process.kill(pids[0].pid, 'SIGKILL');
  while (l.total() < atKill + 60) await sleep(20);
  const counts = await l.stop();
  const log = await retried(from);
  t.comment(`SIGKILL: ${l.total()} requests (${atKill} before the kill), statuses ${JSON.stringify([...counts])}, `
    + `${log.retried} retried on another replica by nginx, ${log.failed} failed`);
  t.notOk(await alive(pids[0].pid), 'the replica is gone');
  t.same([...counts.keys()], [200], 'no request failed');
  t.equal(log.failed, 0, 'nginx answered every request 200');
});

t.test('SIGTERM on a replica under load: it drains and exits 0 without a failed request; the survivor serves', async (t) => {
  const { lines: from } = await retried(0);
  const survivorBefore = await served(pids[2].metrics);
  const l = load(4);
  while (l.total() < 20) await sleep(20);
  const atTerm = l.total();
  process.kill(pids[1].pid, 'SIGTERM');
  while (await alive(pids[1].pid)) await sleep(20);
  const atExit = l.total();
  while (l.total() < atExit + 30) await sleep(20);
  const counts = await l.stop();
  const log = await retried(from);
  const replicaLog = await readFile(path.join(dir, 'replica-1.log'), 'utf8');
  t.comment(`SIGTERM: ${l.total()} requests (${atTerm} before the signal, ${atExit - atTerm} while draining), `
    + `statuses ${JSON.stringify([...counts])}, ${log.retried} retried by nginx, ${log.failed} failed`);
  t.match(replicaLog, /drained; exiting/, 'the replica drained and exited by itself');
  t.same([...counts.keys()], [200], 'no request failed');
  const survivor = (await served(pids[2].metrics)) - survivorBefore;
  t.ok(survivor > 0, `the survivor answered ${survivor} of them`);
  const last = await fetch(`http://127.0.0.1:${NGINX_PORT}/classify`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: png });
  t.equal(last.status, 200, 'one replica of three left: still serving');
  await last.arrayBuffer();
});
