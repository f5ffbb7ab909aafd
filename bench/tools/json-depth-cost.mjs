// CPU per call of the JSON nesting check on a 3x32x32 v2 body: the Set-per-character version it replaced, today's, and JSON.parse.
// usage: npm run build && node bench/tools/json-depth-cost.mjs
import { checkJsonDepth as now } from '../../dist/src/http/json-depth.js';
const OPEN = new Set([0x5b, 0x7b]); const CLOSE = new Set([0x5d, 0x7d]);
function old(text) { let depth = 0, inString = false; for (let i = 0; i < text.length; i++) { const c = text.charCodeAt(i);
  if (inString) { if (c === 0x5c) i++; else if (c === 0x22) inString = false; } else if (c === 0x22) inString = true;
  else if (OPEN.has(c)) { if (++depth > 64) throw new Error('deep'); } else if (CLOSE.has(c)) depth--; } }
const body = JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', data: Array.from({ length: 3072 }, (_, i) => Math.sin(i) * 2.1) }] });
const time = (f, n) => { const t = process.cpuUsage(); for (let i = 0; i < n; i++) f(body); const d = process.cpuUsage(t); return (d.user + d.system) / n; };
for (let i = 0; i < 3; i++) { time(old, 200); time(now, 200); }
const rows = [];
for (let r = 0; r < 5; r++) rows.push([time(old, 2000), time(now, 2000)]);
const parse = time((b) => JSON.parse(b), 2000);
console.log(`body ${body.length} chars; per call, 5 interleaved rounds of 2000 (us): old ${rows.map(r => r[0].toFixed(1)).join(' ')} | new ${rows.map(r => r[1].toFixed(1)).join(' ')} | JSON.parse ${parse.toFixed(1)}`);
