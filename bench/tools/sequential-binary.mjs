// One client sending sequential one-image v2 binary-tensor requests (3x32x32) for SECONDS; prints
// {"n": requests, "bad": non-200 answers}. Used by bench/tools/tier-up.sh.
//   npm run build && node bench/tools/sequential-binary.mjs PORT SECONDS MODEL
import http from 'node:http';
import { v2Binary } from '../../dist/bench/load.js';

const [port, seconds, model] = [Number(process.argv[2]), Number(process.argv[3]), process.argv[4]];
const body = v2Binary('input', [1, 3, 32, 32], Array.from({ length: 3072 }, (_, i) => (i % 9) / 9));
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const post = () => new Promise((resolve, reject) => {
  const req = http.request({ port, path: `/v2/models/${model}/infer`, method: 'POST', agent,
    headers: { ...body.headers, 'content-length': body.data.length } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
  req.on('error', reject);
  req.end(body.data);
});
const end = Date.now() + seconds * 1000;
let n = 0;
let bad = 0;
while (Date.now() < end) {
  if ((await post()) !== 200) bad++;
  n++;
}
console.log(JSON.stringify({ n, bad }));
agent.destroy();
