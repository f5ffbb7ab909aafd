/**
 * The process (dist/src/server.js): SIGTERM drains in-flight requests and exits 0; a drain that
 * outlasts --drain-timeout-ms exits 1; bad flags and bad packages stop start-up with a message.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { cudaProviderInstalled } from '../src/ensemble/runtime.js';
import { copyPackage, editManifest, parseMetrics, ROOT, sample, SHIPPED } from './helpers.js';

const SERVER = path.join(ROOT, 'dist', 'src', 'server.js');

interface Running {
  child: ChildProcess;
  url: string;
  metricsUrl: string;
  lines: string[];
  exited: Promise<number | null>;
}

/** Start the server on free ports; resolves once /readyz answers 200. */
async function start(args: string[]): Promise<Running> {
  const child = spawn(process.execPath, [SERVER, '--port', '0', '--metrics-port', '0', '--host', '127.0.0.1', ...args], {
    cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  let url = '';
  let metricsUrl = '';
  let buffered = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    const parts = buffered.split('\n');
    buffered = parts.pop()!;
    for (const line of parts) {
      lines.push(line);
      const msg = JSON.parse(line) as { msg: string; url?: string };
      const listening = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(msg.msg);
      if (listening && !url) url = listening[1];
      if (msg.url?.endsWith('/metrics')) metricsUrl = msg.url;
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => lines.push(chunk.toString()));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited ${child.exitCode}: ${lines.join('\n')}`);
    if (Date.now() > deadline) throw new Error(`server not ready: ${lines.join('\n')}`);
    if (url && metricsUrl) {
      const res = await fetch(`${url}/readyz`).catch(() => null);
      if (res?.status === 200) break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, url, metricsUrl, lines, exited };
}

async function metric(r: Running, name: string): Promise<number> {
  return sample(parseMetrics(await (await fetch(r.metricsUrl)).text()), name);
}

/** A JSON body of 64 pre-processed images, enough work to keep one worker busy for a while. */
const heavyBody = JSON.stringify({ tensors: Array(64).fill([Array.from({ length: 28 }, () => new Array(28).fill(0.5))]) });

t.test('metrics bind to loopback unless --metrics-host says otherwise, even when the service binds every address', async (t) => {
  const r = await start(['--model', SHIPPED, '--workers', '1', '--host', '0.0.0.0']);
  t.teardown(() => { r.child.kill('SIGKILL'); });
  const res = await fetch(r.metricsUrl);
  t.equal(res.status, 200, 'scrapeable from this machine');
  // The addresses the kernel holds listening sockets on, read from /proc (Fastify's log names
  // 127.0.0.1 even for a server bound to every address).
  const listening = async (port: number) => {
    const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
    const rows = (await Promise.all(['/proc/net/tcp', '/proc/net/tcp6'].map((f) => readFile(f, 'utf8').catch(() => ''))))
      .join('\n').split('\n').map((l) => l.trim().split(/\s+/));
    return rows.filter((c) => c[1]?.endsWith(`:${hexPort}`) && c[3] === '0A').map((c) => c[1].split(':')[0]);
  };
  if (process.platform === 'linux') {
    const metricsAt = await listening(Number(new URL(r.metricsUrl).port));
    t.same(metricsAt, ['0100007F'], `metrics listen on 127.0.0.1 only (${metricsAt.join(', ')})`);
    const serviceAt = await listening(Number(new URL(r.url).port));
    t.ok(serviceAt.includes('00000000') || serviceAt.some((a) => /^0+$/.test(a)), `the service listens on every address (${serviceAt.join(', ')})`);
  }
  r.child.kill('SIGTERM');
  await r.exited;
});

t.test('SIGTERM: in-flight requests all finish with 200, new connections are refused, exit 0', async (t) => {
  const r = await start(['--model', SHIPPED, '--workers', '1', '--log-level', 'info']);
  t.teardown(() => { r.child.kill('SIGKILL'); });
  const requests = Array.from({ length: 40 }, () =>
    fetch(`${r.url}/classify`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: heavyBody })
      .then((res) => res.status, (err: Error) => `failed: ${err.message}`));
  // Signal once the server has received every request (each in flight or answered), so that all
  // 40 count as in flight for the server; one sent after the signal would rightly be refused.
  let inflightAtSignal = 0;
  for (;;) {
    const m = parseMetrics(await (await fetch(r.metricsUrl)).text());
    inflightAtSignal = sample(m, 'redserve_http_inflight_requests');
    const answered = sample(m, 'redserve_http_requests_total', { route: '/classify' }) || 0;
    if (inflightAtSignal + answered >= 40) break;
    await new Promise((res) => setTimeout(res, 2));
  }
  r.child.kill('SIGTERM');
  t.ok(inflightAtSignal > 1, `${inflightAtSignal} requests were in flight at the signal`);
  const statuses = await Promise.all(requests);
  t.same(new Set(statuses), new Set([200]), `all 40 in-flight requests answered 200 (${statuses.filter((s) => s !== 200).length} not)`);
  t.equal(await r.exited, 0, 'exit code 0');
  const after = await fetch(`${r.url}/healthz`).then((res) => res.status, () => 'refused');
  t.equal(after, 'refused', 'no new connections after the drain');
  const log = r.lines.join('\n');
  t.match(log, /shutting down: finishing in-flight requests/);
  t.match(log, /drained; exiting/);
});

t.test('SIGTERM when idle exits 0 at once; a drain longer than --drain-timeout-ms exits 1', async (t) => {
  const idle = await start(['--model', SHIPPED, '--workers', '1', '--log-level', 'info']);
  const started = Date.now();
  idle.child.kill('SIGTERM');
  t.equal(await idle.exited, 0);
  t.ok(Date.now() - started < 5000, 'promptly');

  const slow = await start(['--model', SHIPPED, '--workers', '1', '--log-level', 'info', '--drain-timeout-ms', '1']);
  t.teardown(() => { slow.child.kill('SIGKILL'); });
  // Eight clients keep one heavy request each outstanding until the server exits, so a backlog of
  // work (far more than 1 ms) is in flight whenever the signal lands, however loaded the machine.
  let exited = false;
  void slow.exited.then(() => { exited = true; });
  const client = async () => {
    while (!exited) {
      const res = await fetch(`${slow.url}/classify`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: heavyBody })
        .catch(() => null);
      if (res === null) return;
      await res.arrayBuffer();
    }
  };
  const pending = Array.from({ length: 8 }, client);
  while ((await metric(slow, 'redserve_workers_busy')) !== 1) await new Promise((res) => setTimeout(res, 2));
  slow.child.kill('SIGTERM');
  t.equal(await slow.exited, 1, 'exit code 1');
  t.match(slow.lines.join('\n'), /outlasted the drain timeout/);
  await Promise.all(pending);
});

t.test('--device auto without the CUDA provider installed: one warning that says so, no native load errors',
  { skip: cudaProviderInstalled() !== false && 'the CUDA provider is installed here (or this is not Linux)' }, async (t) => {
    const r = await start(['--model', SHIPPED, '--workers', '2', '--device', 'auto', '--log-level', 'info']);
    r.child.kill('SIGTERM');
    await r.exited;
    const log = r.lines.join('\n');
    t.notMatch(log, /Failed to load library|providers_shared/, 'onnxruntime never tried to load the missing library');
    t.equal(r.lines.filter((l) => l.includes('falling back to CPU')).length, 1, 'one fallback warning');
    t.match(log, /CUDA execution provider is not installed/);
  });

t.test('bad flags exit 2 and a bad package exits 1, each with a message', async (t) => {
  const bad = spawn(process.execPath, [SERVER, '--workers', 'many'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  bad.stderr.on('data', (c: Buffer) => { err += c.toString(); });
  t.equal((await once(bad, 'exit'))[0], 2);
  t.match(err, /--workers: 'many' is not an integer/);

  const dir = await copyPackage();
  await editManifest(dir, (m) => { m.labels = ['only one']; });
  const broken = spawn(process.execPath, [SERVER, '--model', dir, '--port', '0', '--metrics-port', 'off', '--host', '127.0.0.1'],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  broken.stdout.on('data', (c: Buffer) => { out += c.toString(); });
  t.equal((await once(broken, 'exit'))[0], 1);
  t.match(out, /cannot serve the model package/);
});
