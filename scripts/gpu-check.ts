/**
 * The measuring half of scripts/gpu-check.sh (which prepares the machine and starts the service).
 *
 *   parity --model DIR [--device cuda:ID] [--runs N]
 *       every member on the CUDA and the CPU provider over the package's golden inputs: the largest
 *       logit difference against a tolerance of REL_TOLERANCE x the logit scale, and against the
 *       package's golden.atol (what the service checks at load); then one member run (batch 1) N
 *       times on each provider, members drawn at random as the service draws them: p50/p99.
 *       Exit 0: within golden.atol; 3: within the tolerance but beyond golden.atol (the service
 *       would refuse to start); 1: beyond the tolerance, or an error.
 *   http --model DIR --url URL [--requests N] [--wait-s S] [--server-pid PID] [--expect-provider cuda]
 *       waits for /readyz, checks that /models reports the expected provider, then POSTs the
 *       package's first golden PNG to /classify N times in sequence: p50/p99 of the whole request.
 *
 * A benchmark prints figures; only the checks above decide the exit status, never a latency.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { randomInt } from 'node:crypto';
import type { Device } from '../src/config.js';
import { readPackage } from '../src/ensemble/manifest.js';
import { createSession, sessionSpec, type MemberSession } from '../src/ensemble/runtime.js';

/** CUDA may differ from the CPU by 0.1% of the largest logit (at least 1e-3 absolute). */
const REL_TOLERANCE = 1e-3;
const WARMUP_RUNS = 20;
const WITHIN_TOLERANCE_BEYOND_ATOL = 3;

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    model: { type: 'string' },
    device: { type: 'string', default: 'cuda:0' },
    runs: { type: 'string', default: '200' },
    url: { type: 'string', default: 'http://127.0.0.1:18080' },
    requests: { type: 'string', default: '200' },
    'wait-s': { type: 'string', default: '600' },
    'server-pid': { type: 'string' },
    'expect-provider': { type: 'string', default: 'cuda' },
  },
});

function fail(message: string): never {
  process.stderr.write(`gpu-check: FAIL: ${message}\n`);
  process.exit(1);
}

function positiveInt(name: string, raw: string | undefined): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) fail(`--${name}: '${raw}' is not an integer >= 1`);
  return n;
}

function percentiles(samplesMs: number[]): string {
  const sorted = [...samplesMs].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  return `p50 ${at(0.5).toFixed(2)} ms, p99 ${at(0.99).toFixed(2)} ms over ${sorted.length}`;
}

const elapsedMs = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e6;

async function parity(modelDir: string, device: Device, runs: number): Promise<number> {
  const pkg = await readPackage(modelDir);
  if (pkg.manifest.kind !== 'ensemble') fail('parity needs a kind ensemble package');
  const spec = sessionSpec(pkg.manifest);
  const inputs = pkg.golden.map((g) => g.input);
  const n = inputs.length;
  const batch = new Float32Array(n * inputs[0].length);
  inputs.forEach((x, i) => batch.set(x, i * x.length));
  const open = async (kind: 'cpu' | 'cuda') => Promise.all(pkg.members.map(async (m, i) => {
    const created = await createSession(m, spec, kind === 'cpu' ? { kind: 'cpu' } : device, 1, `member ${i} (${kind})`);
    if (created.provider !== kind) fail(`member ${i}: asked for ${kind}, got ${created.provider}`);
    return created.session;
  }));
  const cpu = await open('cpu');
  const cuda = await open('cuda');
  let maxDiff = 0;
  let scale = 0;
  for (let m = 0; m < cpu.length; m++) {
    const a = cpu[m].run(batch, n);
    const b = cuda[m].run(batch, n);
    for (let k = 0; k < a.length; k++) {
      maxDiff = Math.max(maxDiff, Math.abs(a[k] - b[k]));
      scale = Math.max(scale, Math.abs(a[k]));
    }
  }
  const tolerance = REL_TOLERANCE * Math.max(1, scale);
  const atol = pkg.manifest.golden.atol;
  const tf32 = process.env.NVIDIA_TF32_OVERRIDE === '0' ? 'TF32 off (NVIDIA_TF32_OVERRIDE=0)' : 'TF32 as onnxruntime sets it (on)';
  console.log(`parity, ${tf32}: max |cuda - cpu| = ${maxDiff.toExponential(2)} over ${cpu.length} members x ${n} golden images; `
    + `logit scale ${scale.toFixed(3)}, tolerance ${tolerance.toExponential(2)}: ${maxDiff <= tolerance ? 'ok' : 'BEYOND'}; `
    + `golden.atol ${atol}: ${maxDiff <= atol ? 'ok' : 'BEYOND (the service would refuse to load)'}`);

  const one = new Float32Array(batch.subarray(0, inputs[0].length));
  for (const [kind, sessions] of [['cuda', cuda], ['cpu', cpu]] as [string, MemberSession[]][]) {
    for (let i = 0; i < WARMUP_RUNS; i++) sessions[i % sessions.length].run(one, 1);
    const samples: number[] = [];
    for (let i = 0; i < runs; i++) {
      const session = sessions[randomInt(sessions.length)];
      const start = process.hrtime.bigint();
      session.run(one, 1);
      samples.push(elapsedMs(start));
    }
    console.log(`raw member, ${kind === 'cpu' ? 'cpu (1 thread)' : `cuda, ${tf32}`}, batch 1: ${percentiles(samples)}`);
  }
  for (const s of [...cpu, ...cuda]) s.release();
  if (!(maxDiff <= tolerance)) return 1;
  return maxDiff <= atol ? 0 : WITHIN_TOLERANCE_BEYOND_ATOL;
}

async function http(modelDir: string, url: string, requests: number, waitS: number, provider: string,
  serverPid?: number): Promise<number> {
  const deadline = Date.now() + waitS * 1000;
  for (;;) {
    if (serverPid !== undefined) {
      try {
        process.kill(serverPid, 0);
      } catch {
        fail('the service exited before it was ready (see its log)');
      }
    }
    const ready = await fetch(`${url}/readyz`).then((r) => r.ok, () => false);
    if (ready) break;
    if (Date.now() > deadline) fail(`the service was not ready after ${waitS} s`);
    await new Promise((r) => setTimeout(r, 500));
  }
  const models = await (await fetch(`${url}/models`)).json() as { provider?: string; members?: number };
  if (models.provider !== provider) fail(`/models reports provider '${models.provider}', expected ${provider}`);
  const pkg = await readPackage(modelDir);
  const png = await readFile(path.join(modelDir, pkg.golden[0].file));
  const classify = async () => {
    const res = await fetch(`${url}/classify`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: png });
    const body = await res.text();
    if (res.status !== 200) fail(`/classify answered ${res.status}: ${body.slice(0, 300)}`);
  };
  for (let i = 0; i < WARMUP_RUNS; i++) await classify();
  const samples: number[] = [];
  for (let i = 0; i < requests; i++) {
    const start = process.hrtime.bigint();
    await classify();
    samples.push(elapsedMs(start));
  }
  console.log(`/classify random, one ${pkg.manifest.input.shape.join('x')} PNG, sequential, provider ${provider}, `
    + `${models.members} members: ${percentiles(samples)}`);
  return 0;
}

async function main(): Promise<number> {
  const mode = positionals[0];
  if (mode !== 'parity' && mode !== 'http') fail(`usage: node dist/scripts/gpu-check.js parity|http --model DIR [...]; got '${mode ?? ''}'`);
  if (!values.model) fail('--model DIR is required');
  const modelDir = path.resolve(values.model);
  if (mode === 'http') {
    const pid = values['server-pid'] === undefined ? undefined : positiveInt('server-pid', values['server-pid']);
    return http(modelDir, values.url!, positiveInt('requests', values.requests), positiveInt('wait-s', values['wait-s']),
      values['expect-provider']!, pid);
  }
  const m = /^cuda(?::(\d+))?$/.exec(values.device!);
  if (!m) fail(`--device: '${values.device}' is not cuda or cuda:<id>`);
  return parity(modelDir, { kind: 'cuda', id: Number(m[1] ?? 0) }, positiveInt('runs', values.runs));
}

// A session that cannot be created (no CUDA provider, a missing CUDA library) ends here, in one line.
process.exitCode = await main().catch((err: Error) => fail(err.message));
