/**
 * Offline evaluation of the detector: the figures and the threshold sweep of reports/detection.md.
 * It runs the detector module directly on tensors made by the service's own pre-processing
 * (src/preprocess), without HTTP, and the attacks in-process against the served model's members
 * (the real package, random draw), so that thousands of runs fit on a small machine. The HTTP
 * path is checked separately with `npm run attack` against a `--detect log` service.
 *
 *   node dist/bench/detect/evaluate.js benign  [--count 10000] --out benign.json
 *   node dist/bench/detect/evaluate.js attacks [--images 20] [--queries 1000] --out attacks.json
 *   node dist/bench/detect/evaluate.js cost    [--count 10000]
 *   node dist/bench/detect/evaluate.js cost-http [--count 2000] [--rounds 3]   (starts its own services)
 *
 * Every query's Observation (hashes shared with the closest earlier query, own and other clients',
 * and exact re-upload counts) is recorded, with the detector's own decision at every threshold
 * (`flaggedUpTo`: the rule is monotone in the threshold), so that bench/detect/plot.py tabulates
 * and plots decisions without deciding anything itself.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { DEFAULT_TRANSFORM, adaptiveClassify, type AdaptiveStats, type Answer } from '../../attack/adaptive.js';
import { hopSkipJump } from '../../attack/hsj.js';
import { FASHION_MNIST_DIR, readIdx, toPixels, type LabeledImage } from '../../attack/images.js';
import { argmax, linfDistance, Oracle, StopAttack, type Classify } from '../../attack/oracle.js';
import { deriveSeed, Rng } from '../../attack/rng.js';
import { squareAttack, type AttackResult } from '../../attack/square.js';
import { embeddedConfig, loadConfig, type DetectSettings } from '../../src/config.js';
import { loadEnsemble, type Ensemble } from '../../src/ensemble/ensemble.js';
import type { InputSpec } from '../../src/ensemble/manifest.js';
import { imageToTensor } from '../../src/preprocess/image.js';
import { Detector, flagOf, type Observation } from '../../src/detect/detector.js';
import { normalisationOf } from '../../src/detect/fingerprint.js';

const LIMITS = { maxInputPixels: 4096 * 4096 };

/** The service's defaults (log mode), with the --detect-* flags this run overrides. */
function settingsFrom(args: Record<string, string | undefined>): DetectSettings {
  const argv = Object.entries(args).filter(([k, v]) => k.startsWith('detect-') && v !== undefined).flatMap(([k, v]) => [`--${k}`, v!]);
  return loadConfig(['--detect', 'log', ...argv], {}).detect;
}

/** One query's observation, compact: [ownShared, repeats, globalShared, globalOwners]. */
type Obs = [number, number, number, number?];
const compact = (o: Observation): Obs => [o.ownShared, o.repeats, o.globalShared, o.globalOwners];

/**
 * The highest threshold at which the detector's rule flags a query with this observation (0: at
 * none). The rule is monotone in the threshold, so the query is flagged at every threshold up to
 * it. The owners were counted at the recording's threshold.
 */
function flaggedUpTo(o: Observation, settings: DetectSettings): number {
  for (let threshold = settings.hashes; threshold >= 1; threshold--) {
    if (flagOf(o, { ...settings, threshold }) !== null) return threshold;
  }
  return 0;
}

async function fmnistRaw(dir: string): Promise<{ images: Uint8Array; labels: Uint8Array; rows: number; cols: number; n: number }> {
  const names = await import('node:fs/promises').then((fs) => fs.readdir(dir));
  const pick = (base: string) => path.join(dir, names.includes(`${base}.gz`) ? `${base}.gz` : base);
  const img = await readIdx(pick('t10k-images-idx3-ubyte'), 3);
  const lab = await readIdx(pick('t10k-labels-idx1-ubyte'), 1);
  return { images: img.data, labels: lab.data, n: img.dims[0], rows: img.dims[1], cols: img.dims[2] };
}

/** Light augmentation as a user's pipeline makes it: shift by up to 2 px, brightness +-10%, JPEG q 70-95. */
async function augment(raw: Buffer, rows: number, cols: number, rng: Rng): Promise<Buffer> {
  const dx = rng.int(5) - 2;
  const dy = rng.int(5) - 2;
  const gain = 0.9 + 0.2 * rng.uniform();
  const quality = 70 + rng.int(26);
  const shifted = Buffer.alloc(raw.length); // background 0, as Fashion-MNIST's is
  for (let row = 0; row < rows; row++) {
    for (let col = 0; col < cols; col++) {
      const r = row - dy;
      const c = col - dx;
      if (r >= 0 && r < rows && c >= 0 && c < cols) shifted[row * cols + col] = raw[r * cols + c];
    }
  }
  return sharp(shifted, { raw: { width: cols, height: rows, channels: 1 } }).linear(gain, 0)
    .toColourspace('b-w').jpeg({ quality }).toBuffer();
}

async function pngOf(raw: Buffer, rows: number, cols: number): Promise<Buffer> {
  return sharp(raw, { raw: { width: cols, height: rows, channels: 1 } }).toColourspace('b-w').png().toBuffer();
}

async function tensorOf(bytes: Buffer, input: InputSpec): Promise<Float32Array> {
  const [c, h, w] = input.shape;
  const out = new Float32Array(c * h * w);
  await imageToTensor(bytes, input, LIMITS, out);
  return out;
}

interface Stream { readonly name: string; readonly clients: string[]; readonly tensors: Float32Array[] }

/** Benign traffic: the test split once, augmented, and with re-uploads; one client, and one client per 100 queries. */
async function benign(args: Record<string, string | undefined>, input: InputSpec): Promise<unknown> {
  const count = Number(args.count ?? 10000);
  const seed = Number(args.seed ?? 0);
  const data = await fmnistRaw(args.fmnist ?? FASHION_MNIST_DIR);
  const size = data.rows * data.cols;
  const rng = new Rng(deriveSeed(seed, 1));
  const plain: Float32Array[] = [];
  const augmented: Float32Array[] = [];
  for (let i = 0; i < count; i++) {
    const raw = Buffer.from(data.images.subarray(i * size, (i + 1) * size));
    plain.push(await tensorOf(await pngOf(raw, data.rows, data.cols), input));
    augmented.push(await tensorOf(await augment(raw, data.rows, data.cols, rng), input));
  }
  // Re-uploads: a fifth of the images are sent again 1 to 3 times, each copy within the next 20 queries.
  const withRepeats: Float32Array[] = [];
  const pending: { at: number; t: Float32Array }[] = [];
  for (let i = 0; i < count; i++) {
    withRepeats.push(plain[i]);
    if (rng.uniform() < 0.2) for (let r = 1 + rng.int(3); r > 0; r--) pending.push({ at: withRepeats.length + rng.int(20), t: plain[i] });
    pending.sort((a, b) => a.at - b.at);
    while (pending.length > 0 && pending[0].at <= withRepeats.length) withRepeats.push(pending.shift()!.t);
  }
  for (const p of pending) withRepeats.push(p.t);
  const one = (n: number) => Array.from({ length: n }, () => 'one');
  const per100 = (n: number) => Array.from({ length: n }, (_, i) => `c${Math.floor(i / 100)}`);
  const streams: Stream[] = [
    { name: 'test split, one client', clients: one(count), tensors: plain },
    { name: 'augmented (shift <= 2 px, brightness +-10%, JPEG q70-95), one client', clients: one(count), tensors: augmented },
    { name: 'test split with re-uploads (20% of images sent 2-4 times), one client', clients: one(withRepeats.length), tensors: withRepeats },
    { name: 'test split, 100 clients of 100 queries', clients: per100(count), tensors: plain },
    { name: 'test split then its augmented copies, one client', clients: one(2 * count), tensors: [...plain, ...augmented] },
  ];
  const settings = settingsFrom(args);
  const norm = normalisationOf(input);
  return {
    settings,
    streams: streams.map((s) => {
      const detector = new Detector(settings, norm);
      const seen = s.tensors.map((t, i) => detector.screen(s.clients[i], t).seen!);
      return {
        name: s.name, queries: seen.length, clients: new Set(s.clients).size, clientOf: s.clients,
        obs: seen.map(compact), flaggedUpTo: seen.map((o) => flaggedUpTo(o, settings)),
      };
    }),
  };
}

type Kind = 'square' | 'square-eot4' | 'hsj' | 'square-adaptive' | 'square-eot4-adaptive' | 'hsj-adaptive' | 'square-sybil';
/**
 * -adaptive: the transforming, resampling attacker of src/attack/adaptive.ts against reject mode.
 * -sybil: every query from a new client identity (an attacker with many keys); only the global
 * store can see it.
 */
const KINDS: readonly Kind[] = ['square', 'square-eot4', 'hsj', 'square-adaptive', 'square-eot4-adaptive', 'hsj-adaptive', 'square-sybil'];

interface Run {
  image: number;
  label: number;
  attack: Kind;
  stop: AttackResult['stop'];
  /** Requests sent (refused ones included for the adaptive attacker). */
  requests: number;
  verified: boolean;
  linf: number;
  refused: number;
  gaveUp: number;
  obs: Obs[];
  flaggedUpTo: number[];
}

/** Fresh draws of the random ensemble, outside the detector (the evaluator's own verification). */
async function wrongVotes(ensemble: Ensemble, x: Float64Array, label: number, r: number, toTensor: (x: Float64Array) => Float32Array): Promise<number> {
  let wrong = 0;
  for (let k = 0; k < r; k++) if (argmax((await ensemble.classify(toTensor(x), 1))[0]) !== label) wrong++;
  return wrong;
}

async function attacks(args: Record<string, string | undefined>, modelDir: string): Promise<unknown> {
  const imageCount = Number(args.images ?? 20);
  const offset = Number(args.offset ?? 0);
  const queries = Number(args.queries ?? 1000);
  const eps = Number(args.eps ?? 0.1);
  const seed = Number(args.seed ?? 0);
  const verify = 11;
  const kinds = (args.attack?.split(',') ?? KINDS) as Kind[];
  const settings = settingsFrom(args);
  // The adaptive attacker meets reject mode without a cool-down: only flagged queries are refused,
  // which is what lets it resample (with a cool-down it would be refused until the cool-down ends).
  const rejecting: DetectSettings = { ...settings, mode: 'reject', cooldownS: 0 };
  const log = { info() {}, debug() {}, warn() {}, error() {} };
  const ensemble = await loadEnsemble(embeddedConfig({ modelDir, workers: 1, sampling: { mode: 'random' } }), log as never);
  const input = ensemble.manifest.input;
  const norm = normalisationOf(input);
  const [c, h, w] = input.shape;
  const toTensor = (x: Float64Array): Float32Array => {
    const t = new Float32Array(x.length);
    for (let ch = 0; ch < c; ch++) for (let i = ch * h * w; i < (ch + 1) * h * w; i++) t[i] = (x[i] - input.mean[ch]) / input.std[ch];
    return t;
  };
  const data = await fmnistRaw(args.fmnist ?? FASHION_MNIST_DIR);
  const size = data.rows * data.cols;
  const runs: Run[] = [];
  const hi = 255 * input.scale;
  try {
    for (let k = 0; k < imageCount; k++) {
      const index = offset + k;
      const raw = Buffer.from(data.images.subarray(index * size, (index + 1) * size));
      const image: LabeledImage = { name: `fmnist-test-${index}`, label: data.labels[index], bytes: await pngOf(raw, data.rows, data.cols) };
      const x0 = await toPixels(image, input);
      if (2 * (await wrongVotes(ensemble, x0, image.label, verify, toTensor)) >= verify) continue; // wrong at start: not attacked
      for (const kind of kinds) {
        const adaptive = kind.endsWith('-adaptive');
        const detector = new Detector(adaptive ? rejecting : settings, norm);
        const obs: Obs[] = [];
        const upTo: number[] = [];
        let sent = 0;
        const screen = (x: Float64Array) => {
          const t = toTensor(x);
          const client = kind === 'square-sybil' ? `sybil-${sent}` : 'attacker';
          sent++;
          const v = detector.screen(client, t);
          obs.push(compact(v.seen!));
          upTo.push(flaggedUpTo(v.seen!, settings));
          return { t, v };
        };
        const oracleRef: { o: Oracle | null } = { o: null };
        const stats: AdaptiveStats = { sent: 0, refused: 0, gaveUp: 0 };
        const rng = new Rng(deriveSeed(seed, index, KINDS.indexOf(kind)));
        let classify: Classify = async (x) => {
          const { t } = screen(x);
          return Float64Array.from((await ensemble.classify(t, 1))[0]);
        };
        if (adaptive) {
          const send = async (x: Float64Array): Promise<Answer> => {
            const { t, v } = screen(x);
            if (v.flagged) return { refused: true };
            return { probs: Float64Array.from((await ensemble.classify(t, 1))[0]) };
          };
          classify = adaptiveClassify(send, input.shape, 0, hi, new Rng(deriveSeed(seed, index, 99)), DEFAULT_TRANSFORM, () => {
            const o = oracleRef.o!;
            if (o.remaining <= 0) throw new StopAttack('budget');
            o.queries++;
          }, stats);
        }
        const oracle = new Oracle(classify, { budget: queries, deadlineMs: Infinity, x0, label: image.label, eps });
        oracleRef.o = oracle;
        const eot = kind.startsWith('square-eot4') ? 4 : 1;
        const result: AttackResult = kind.startsWith('square')
          ? await squareAttack(oracle, x0, image.label, { shape: input.shape, eps, lo: 0, hi, eot, pInit: 0.8, rng })
          : await hopSkipJump(oracle, x0, { eps, lo: 0, hi, eot, rng, gradQueries: 100 });
        const wrong = await wrongVotes(ensemble, result.x, image.label, verify, toTensor);
        runs.push({
          image: index, label: image.label, attack: kind, stop: result.stop, requests: sent,
          verified: 2 * wrong > verify, linf: linfDistance(result.x, x0), refused: stats.refused, gaveUp: stats.gaveUp, obs, flaggedUpTo: upTo,
        });
        process.stderr.write(`image ${index} ${kind}: ${result.stop}, ${sent} requests, ${wrong}/${verify} wrong, refused ${stats.refused}\n`);
      }
    }
  } finally {
    await ensemble.close();
  }
  return { settings, eps, queries, images: imageCount, offset, seed, runs };
}

/** CPU microseconds per screened image (fingerprint + both stores), over the test split, in this process. */
async function cost(args: Record<string, string | undefined>, input: InputSpec): Promise<unknown> {
  const count = Number(args.count ?? 10000);
  const data = await fmnistRaw(args.fmnist ?? FASHION_MNIST_DIR);
  const size = data.rows * data.cols;
  const tensors: Float32Array[] = [];
  for (let i = 0; i < count; i++) tensors.push(await tensorOf(await pngOf(Buffer.from(data.images.subarray(i * size, (i + 1) * size)), data.rows, data.cols), input));
  const settings = settingsFrom(args);
  const norm = normalisationOf(input);
  const rounds: { fingerprintUs: number; screenOneClientUs: number; screenManyClientsUs: number }[] = [];
  for (let round = 0; round < 3; round++) {
    const d1 = new Detector(settings, norm);
    let t0 = process.cpuUsage();
    for (const t of tensors) d1.fingerprinter.compute(t);
    let t1 = process.cpuUsage(t0);
    const fingerprintUs = (t1.user + t1.system) / count;
    t0 = process.cpuUsage();
    for (const t of tensors) d1.screen('one', t);
    t1 = process.cpuUsage(t0);
    const screenOneClientUs = (t1.user + t1.system) / count;
    const d2 = new Detector(settings, norm);
    t0 = process.cpuUsage();
    tensors.forEach((t, i) => d2.screen(`c${i % 1000}`, t));
    t1 = process.cpuUsage(t0);
    rounds.push({ fingerprintUs, screenOneClientUs, screenManyClientsUs: (t1.user + t1.system) / count });
  }
  const heapBefore = process.memoryUsage().heapUsed;
  const d3 = new Detector(settings, norm);
  tensors.forEach((t, i) => d3.screen(`c${i}`, t));
  const heapAfter = process.memoryUsage().heapUsed;
  return { settings, images: count, rounds, heapBytesFor: { clients: count, bytes: heapAfter - heapBefore } };
}

/** utime + stime of a process, all its threads, in microseconds (/proc/PID/stat, clock ticks of 10 ms). */
async function processCpuUs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the command name.
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

/**
 * Server CPU per one-image PNG /classify request, detection off against log mode: a service per
 * setting on a free port, N different test images sent one after another (so no re-upload is
 * flagged), the server's own CPU time read from /proc before and after. Rounds alternate the
 * settings so that the shared machine's drift weighs on both.
 */
async function costHttp(args: Record<string, string | undefined>): Promise<unknown> {
  const count = Number(args.count ?? 2000);
  const rounds = Number(args.rounds ?? 3);
  const data = await fmnistRaw(args.fmnist ?? FASHION_MNIST_DIR);
  const size = data.rows * data.cols;
  const pngs: Buffer[] = [];
  for (let i = 0; i < count; i++) pngs.push(await pngOf(Buffer.from(data.images.subarray(i * size, (i + 1) * size)), data.rows, data.cols));
  const { spawn } = await import('node:child_process');
  const settings = [['--detect', 'off'], ['--detect', 'log']];
  const results: { setting: string; round: number; cpuUsPerRequest: number; flagged: number }[] = [];
  for (let round = 0; round < rounds; round++) {
    for (const [i, flags] of settings.entries()) {
      const port = 18600 + i;
      const child = spawn(process.execPath, ['dist/src/server.js', '--port', String(port), '--host', '127.0.0.1',
        '--metrics-port', 'off', '--workers', '1', '--log-level', 'error', ...flags], { stdio: 'inherit' });
      try {
        const url = `http://127.0.0.1:${port}`;
        for (let t = 0; ; t++) {
          const ready = await fetch(`${url}/readyz`).then((r) => r.ok, () => false);
          if (ready) break;
          if (t > 600) throw new Error(`${url} not ready`);
          await new Promise((r) => setTimeout(r, 100));
        }
        // Warm-up: the first requests pay for JIT compilation on both sides.
        for (let k = 0; k < 200; k++) await fetch(`${url}/classify`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: new Uint8Array(pngs[count - 1 - k]) }).then((r) => r.arrayBuffer());
        const before = await processCpuUs(child.pid!);
        let flagged = 0;
        for (let k = 0; k < count - 200; k++) {
          const res = await fetch(`${url}/classify`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: new Uint8Array(pngs[k]) });
          await res.arrayBuffer();
          if (res.status !== 200) throw new Error(`${url}/classify answered ${res.status}`);
        }
        const after = await processCpuUs(child.pid!);
        results.push({ setting: flags.join(' '), round, cpuUsPerRequest: (after - before) / (count - 200), flagged });
        process.stderr.write(`${flags.join(' ')} round ${round}: ${((after - before) / (count - 200)).toFixed(0)} us CPU per request\n`);
      } finally {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
    }
  }
  return { requestsPerRound: count - 200, results };
}

/**
 * The poisoning attack of issue 29 against --detect reject: one identity uploads `--images` (20)
 * popular test images once; then 20 benign clients each send a JPEG re-encoding (--quality, default 90) of
 * one of them, either each its own image ("distinct") or one drawn at random ("random", so some
 * images are copied twice), followed by 5 unrelated images each. A benign client is locked out
 * when any of its queries is flagged. Run with the service's settings and with
 * --detect-global-owners 1 --detect-global-quota 20000 (what the detector did before).
 */
async function poison(args: Record<string, string | undefined>, input: InputSpec): Promise<unknown> {
  const popular = Number(args.images ?? 20);
  const seed = Number(args.seed ?? 0);
  const settings: DetectSettings = { ...settingsFrom(args), mode: 'reject' };
  const data = await fmnistRaw(args.fmnist ?? FASHION_MNIST_DIR);
  const size = data.rows * data.cols;
  const raw = (i: number) => Buffer.from(data.images.subarray(i * size, (i + 1) * size));
  const png = (i: number) => pngOf(raw(i), data.rows, data.cols);
  const jpeg = (i: number) => sharp(raw(i), { raw: { width: data.cols, height: data.rows, channels: 1 } }).jpeg({ quality: Number(args.quality ?? 90) }).toBuffer();
  const results: Record<string, unknown> = {};
  for (const choice of ['distinct', 'random'] as const) {
    const detector = new Detector(settings, normalisationOf(input));
    for (let i = 0; i < popular; i++) detector.screen('attacker', await tensorOf(await png(i), input));
    const rng = new Rng(seed);
    let lockedOut = 0;
    let lockedOnUnrelated = 0;
    for (let c = 0; c < 20; c++) {
      const pick = choice === 'distinct' ? c % popular : rng.int(popular);
      let flagged = detector.screen(`benign-${c}`, await tensorOf(await jpeg(pick), input)).flagged;
      let unrelated = false;
      for (let k = 0; k < 5; k++) {
        const v = detector.screen(`benign-${c}`, await tensorOf(await png(2000 + c * 5 + k), input));
        unrelated ||= v.flagged;
      }
      flagged ||= unrelated;
      if (flagged) lockedOut++;
      if (unrelated) lockedOnUnrelated++;
    }
    const attacker = detector.screen('attacker', await tensorOf(await png(5000), input));
    results[choice] = { benignClients: 20, lockedOut, lockedOutOnUnrelatedImages: lockedOnUnrelated, attackerFlagged: attacker.flagged };
  }
  return { settings, popular, seed, results };
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    args: process.argv.slice(2), allowPositionals: true, strict: true,
    options: Object.fromEntries(['model', 'fmnist', 'count', 'rounds', 'seed', 'out', 'images', 'offset', 'queries', 'eps', 'attack',
      'detect-quant-step', 'detect-window', 'detect-hashes', 'detect-history', 'detect-global', 'detect-global-owners', 'detect-global-quota', 'quality', 'detect-repeats', 'detect-threshold']
      .map((k) => [k, { type: 'string' as const }])),
  });
  const modelDir = path.resolve((values.model as string | undefined) ?? 'models/fmnist-red');
  const input = (JSON.parse(await readFile(path.join(modelDir, 'manifest.json'), 'utf8')) as { input: InputSpec }).input;
  const args = values as Record<string, string | undefined>;
  const command = positionals[0];
  const result = command === 'benign' ? await benign(args, input)
    : command === 'attacks' ? await attacks(args, modelDir)
      : command === 'cost' ? await cost(args, input)
        : command === 'cost-http' ? await costHttp(args)
          : command === 'poison' ? await poison(args, input)
            : null;
  if (result === null) {
    process.stderr.write('usage: node dist/bench/detect/evaluate.js benign|attacks|cost|cost-http|poison [--out FILE] [...]\n');
    process.exit(2);
  }
  const text = JSON.stringify({ command: `node dist/bench/detect/evaluate.js ${process.argv.slice(2).join(' ')}`, ...result as object });
  if (args.out) await writeFile(args.out, text);
  else process.stdout.write(`${text}\n`);
}

await main();
