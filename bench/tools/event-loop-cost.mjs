// Event-loop CPU per one-image v2 JSON request (fmnist-baseline) of a server started as a child.
// usage: node bench/tools/event-loop-cost.mjs LABEL REQUESTS CONCURRENCY -- CMD ARGS...   (CMD must take --port/--host)
import { spawn } from 'node:child_process';
import http from 'node:http';
import { readFileSync } from 'node:fs';
const [label, nStr, cStr, , ...cmd] = process.argv.slice(2);
const port = 18000 + Math.floor(Math.random() * 1000);
const child = spawn(cmd[0], [...cmd.slice(1), '--port', String(port), '--host', '127.0.0.1'], { stdio: ['ignore', 'ignore', 'inherit'] });
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const get = (p) => new Promise((res) => http.get({ port, path: p, agent }, (r) => { r.resume(); res(r.statusCode); }).on('error', () => res(0)));
while ((await get('/readyz')) !== 200) await sleep(100);
const body = Buffer.from(JSON.stringify({ inputs: [{ name: 'input', shape: [1, 1, 28, 28], datatype: 'FP32', data: Array.from({ length: 784 }, (_, i) => (i % 7) / 7) }] }));
const post = () => new Promise((res, rej) => {
  const req = http.request({ port, path: '/v2/models/fmnist-baseline/infer', method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': body.length } }, (r) => { r.resume(); r.on('end', () => res(r.statusCode)); });
  req.on('error', rej); req.end(body);
});
const cpu = () => {
  const main = Number(readFileSync(`/proc/${child.pid}/task/${child.pid}/schedstat`, 'utf8').split(' ')[0]);
  let all = 0; for (const t of (readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ').slice(11, 13))) all += Number(t);
  return { main, all };
};
async function run(n, c) { let i = 0; let bad = 0; await Promise.all(Array.from({ length: c }, async () => { while (i++ < n) { if ((await post()) !== 200) bad++; } })); return bad; }
const st = await post(); if (st !== 200) { console.error('status', st); }
await run(500, Number(cStr));
const a = cpu(); const t0 = performance.now();
const bad = await run(Number(nStr), Number(cStr));
const b = cpu(); const t1 = performance.now();
const n = Number(nStr);
console.log(`${label}: event loop ${((b.main - a.main) / 1e3 / n).toFixed(1)} us/req, process ${((b.all - a.all) * 1e4 / n).toFixed(0)} us/req (10ms ticks), ${(n / (t1 - t0) * 1000).toFixed(0)} req/s, non-200 ${bad}`);
child.kill('SIGTERM'); await sleep(300); process.exit(0);
