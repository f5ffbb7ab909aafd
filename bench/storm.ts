/**
 * Retry-storm and slow-reader load against a running server (a program that prints figures, not a
 * test). Issue 29's scenarios:
 *
 *   node dist/bench/storm.js --url http://127.0.0.1:8080 --clients 16 --seconds 10
 *   node dist/bench/storm.js --url ... --clients 256 --seconds 10            # resend at once after a 503
 *   node dist/bench/storm.js --url ... --clients 256 --seconds 10 --honour   # wait Retry-After (capped at 50 ms)
 *
 * Each client is one keep-alive connection sending POST /classify with one 28x28 grey PNG; a probe
 * on its own connection times GET /healthz every 100 ms. Prints answers/s, 503s/s, the latency of
 * 503s (p50, p99, max) and of /healthz as this process sees them (on a small machine its own event
 * loop is part of it), and with --pid the server's RSS and CPU time per request.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { percentile } from './stats.js';

const { values } = parseArgs({
  options: {
    url: { type: 'string', default: 'http://127.0.0.1:8080' },
    clients: { type: 'string', default: '16' },
    seconds: { type: 'string', default: '10' },
    honour: { type: 'boolean', default: false },
    pid: { type: 'string' },
  },
});
const url = new URL(values.url!);
const clients = Number(values.clients);
const seconds = Number(values.seconds);

const rssMb = () => {
  if (!values.pid) return null;
  const status = readFileSync(`/proc/${values.pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  return { rssMb: Math.round(kb('VmRSS') / 1024), peakMb: Math.round(kb('VmHWM') / 1024) };
};

/** CPU seconds the server has used (user + system), from /proc. */
const cpuS = () => {
  if (!values.pid) return NaN;
  const f = readFileSync(`/proc/${values.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (100 Hz)
};

const quantile = (xs: number[], q: number) => percentile([...xs].sort((a, b) => a - b), q);

function request(agent: http.Agent, method: string, path: string, body?: Buffer): Promise<{ status: number; retryAfterS: number }> {
  return new Promise((resolve) => {
    const req = http.request({ host: url.hostname, port: url.port, method, path, agent,
      headers: body ? { 'content-type': 'image/png', 'content-length': body.length } : {} }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, retryAfterS: Number(res.headers['retry-after'] ?? 0) }));
    });
    req.on('error', () => resolve({ status: 0, retryAfterS: 0 }));
    req.end(body);
  });
}

// 8-bit grey, as a client of a grey model sends it (sharp writes a one-channel raw image as RGB
// unless told): the decoder's fast path, so the figures are the HTTP path's, not libvips'.
const image = await sharp(Buffer.alloc(28 * 28, 90), { raw: { width: 28, height: 28, channels: 1 } }).toColourspace('b-w').png().toBuffer();
const deadline = performance.now() + seconds * 1000;
const counts = new Map<number, number>();
const refusedMs: number[] = [];
const answeredMs: number[] = [];

async function client() {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  while (performance.now() < deadline) {
    const t0 = performance.now();
    const r = await request(agent, 'POST', '/classify', image);
    const ms = performance.now() - t0;
    counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
    if (r.status === 503) {
      refusedMs.push(ms);
      if (values.honour) await new Promise((res) => setTimeout(res, Math.min(50, r.retryAfterS * 1000)));
    } else if (r.status === 200) {
      answeredMs.push(ms);
    } else if (r.status === 0) {
      await new Promise((res) => setTimeout(res, 10));
    }
  }
  agent.destroy();
}

async function probe() {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const ms: number[] = [];
  while (performance.now() < deadline) {
    const t0 = performance.now();
    await request(agent, 'GET', '/healthz');
    ms.push(performance.now() - t0);
    await new Promise((res) => setTimeout(res, 100));
  }
  agent.destroy();
  return ms;
}

const rssBefore = rssMb();
const cpuBefore = cpuS();
const [healthMs] = await Promise.all([probe(), ...Array.from({ length: clients }, client)]);
const r = (x: number) => Math.round(x * 100) / 100;
console.log(JSON.stringify({
  clients, seconds, honour: values.honour,
  answersPerS: Math.round((counts.get(200) ?? 0) / seconds),
  refusedPerS: Math.round((counts.get(503) ?? 0) / seconds),
  statuses: Object.fromEntries(counts),
  answerMs: { p50: r(quantile(answeredMs, 0.5)), p99: r(quantile(answeredMs, 0.99)) },
  refusalMs: { p50: r(quantile(refusedMs, 0.5)), p99: r(quantile(refusedMs, 0.99)), max: r(Math.max(0, ...refusedMs)) },
  healthzMs: { p50: r(quantile(healthMs, 0.5)), max: r(Math.max(...healthMs)) },
  serverCpuPerS: r((cpuS() - cpuBefore) / seconds),
  serverCpuUsPerRequest: Math.round(((cpuS() - cpuBefore) * 1e6) / [...counts.values()].reduce((a, b) => a + b, 0)),
  rssBefore, rssAfter: rssMb(),
}));
