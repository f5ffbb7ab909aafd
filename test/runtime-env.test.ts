/**
 * A started server sends nothing anywhere and writes nothing outside its own folders: the process
 * runs with HOME, TMPDIR and its working directory pointed at empty temp folders, answers a
 * request, and stays up past the moment (about 10 s after start) at which onnxruntime's telemetry
 * would resolve its host; then the folders must still be empty and the process must have opened no
 * network connection. Connections are read from strace where it can run, else from the process's
 * sockets in /proc, sampled (what CI has with nothing installed by hand; it sees lasting connections,
 * not a DNS query of a few milliseconds, but telemetry also leaves its event store under HOME).
 */
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { png, ROOT, TINY } from './helpers.js';

const SERVER = path.join(ROOT, 'dist', 'src', 'server.js');
/** Past onnxruntime's first telemetry attempt (10 s after start). */
const WATCH_MS = 12_000;

const straceWorks = (() => {
  try {
    execFileSync('strace', ['-qq', '-o', '/dev/null', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

async function listAll(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) out.push(path.join(e.parentPath, e.name));
  return out;
}

/** Sockets of `pid` that have a remote end, other than connections to `localPort` (accepted clients). */
async function connectedSockets(pid: number, localPort: number): Promise<string[]> {
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
    const m = /^socket:\[(\d+)\]$/.exec(await readlink(`/proc/${pid}/fd/${fd}`).catch(() => ''));
    if (m) inodes.add(m[1]);
  }
  const found: string[] = [];
  for (const table of ['tcp', 'tcp6', 'udp', 'udp6']) {
    const text = await readFile(`/proc/${pid}/net/${table}`, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !inodes.has(f[9])) continue;
      const [, localHex] = f[1].split(':');
      const [remoteAddr, remoteHex] = f[2].split(':');
      if (/^0+$/.test(remoteAddr) && remoteHex === '0000') continue; // listening or unconnected
      if (parseInt(localHex, 16) === localPort) continue;
      found.push(`${table} ${f[1]} -> ${f[2]}`);
    }
  }
  return found;
}

t.test('a started server opens no outbound connection and writes no file outside its folders', async (t) => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'redserve-egress-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const dirs = { home: path.join(root, 'home'), tmp: path.join(root, 'tmp'), cwd: path.join(root, 'cwd') };
  for (const d of Object.values(dirs)) await mkdir(d);
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: dirs.home, TMPDIR: dirs.tmp };
  const args = [SERVER, '--model', TINY, '--port', '0', '--host', '127.0.0.1', '--metrics-port', 'off', '--workers', '1'];
  const traceFile = path.join(root, 'strace.txt');
  const child = straceWorks
    ? spawn('strace', ['-f', '-qq', '-e', 'trace=connect', '-o', traceFile, process.execPath, ...args], { cwd: dirs.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, args, { cwd: dirs.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(child, 'exit');
  const started = Date.now();
  let url = '';
  let pid = 0;
  let log = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    log += chunk.toString();
    const m = /"pid":(\d+).*Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(log);
    if (m && !url) [pid, url] = [Number(m[1]), m[2]];
  });
  child.stderr!.on('data', (chunk: Buffer) => { log += chunk.toString(); });
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL'); });

  const sockets: string[] = [];
  let ready = false;
  while (Date.now() - started < WATCH_MS || !ready) {
    if (child.exitCode !== null) throw new Error(`server exited ${child.exitCode}: ${log}`);
    if (Date.now() - started > 60_000) throw new Error(`server not ready: ${log}`);
    if (url && !ready && (await fetch(`${url}/readyz`).catch(() => null))?.status === 200) {
      ready = true;
      const res = await fetch(`${url}/classify`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: new Uint8Array(await png(28, 28, 1)) });
      t.equal(res.status, 200, 'the server answers');
    }
    if (pid && !straceWorks) sockets.push(...await connectedSockets(pid, Number(new URL(url).port)));
    await new Promise((r) => setTimeout(r, 20));
  }
  process.kill(pid, 'SIGTERM');
  await exited;

  if (straceWorks) {
    const connects = (await readFile(traceFile, 'utf8')).split('\n').filter((l) => /connect\(.*AF_INET6?\b/.test(l));
    t.same(connects, [], 'no connect() to any network address (strace)');
  } else {
    t.same([...new Set(sockets)], [], 'no socket with a remote end but the clients of the server (/proc)');
  }
  for (const [name, dir] of Object.entries(dirs)) t.same(await listAll(dir), [], `nothing written under ${name}`);
});
