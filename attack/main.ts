/**
 * The attack command line, as a function of argv and output streams (cli.ts is the process entry):
 *
 * `npm run attack -- --url http://host:port --attack square --eps 0.1 --queries 1000 --images 100`
 * red-teams running redserve services through /classify only, as an outside attacker would, and
 * writes a JSON and a markdown report. `npm run attack -- write-fmnist --out DIR --count N` writes
 * Fashion-MNIST test images into a folder of labelled PNGs for --images-dir.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { AttackError, parseTargetUrl, TargetClient } from './client.js';
import { ATTACK_KINDS, runAttacks, type AttackKind, type AttackSpec } from './harness.js';
import { FASHION_MNIST_DIR, fashionMnistImages, readImageDir, writeFashionMnist } from './images.js';
import { Progress, type ProgressStream } from './progress.js';
import { detectionTable, renderMarkdown, resultsTable } from './report.js';

/** A bad flag: one line on stderr, exit status 2. */
class UsageError extends AttackError {}

export interface CliIo {
  readonly stdout: { write(text: string): unknown };
  readonly stderr: ProgressStream;
  /** npm_lifecycle_event tells whether `npm run attack` started us (for the recorded command). */
  readonly env: NodeJS.ProcessEnv;
}

const USAGE = `usage: npm run attack -- --url URL [--url URL ...] [flags]
       npm run attack -- write-fmnist --out DIR --count N [--offset K] [--fmnist DIR]

  --url URL              a running redserve service (repeat for several targets)
  --attack LIST          square, hsj, square-adaptive, hsj-adaptive, comma-separated (default square);
                         -adaptive: every query randomly shifted, brightened and noised, refused ones resampled
  --verify-url URL       send the start checks and verifications here (the same package without
                         detection), for a target that refuses them (--detect reject)
  --detection            the target runs --detect log --detect-header on --trust-proxy <this host>: give every
                         attack run its own client identity and report when the service flagged it
  --eot LIST             answers averaged per candidate / voted per decision, e.g. 1,4 (default 1)
  --eps X                Linf radius in pixel space [0, 1] (default 0.1)
  --queries N            attack queries per image (default 1000)
  --images N             how many images (default 100)
  --images-dir DIR       PNGs with labels (labels.json or names ending label<N>.png);
                         default: the Fashion-MNIST test split
  --fmnist DIR           Fashion-MNIST IDX folder (default ${FASHION_MNIST_DIR})
  --offset K             first test image when reading Fashion-MNIST (default 0)
  --verify R             fresh queries for the start check and verification (default 11)
  --seed N               attack randomness (default 0)
  --time-limit S         overall seconds (default 3600)
  --p-init P             Square's initial window fraction (default 0.8)
  --hsj-grad-queries N   HopSkipJump's gradient probes at the first step (default 100)
  --json PATH            write the full report as JSON
  --markdown PATH        write the report as markdown
  --quiet                no progress bar`;

function int(flag: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw.trim())) throw new UsageError(`--${flag}: '${raw}' is not an integer in [${min}, ${max}]`);
  const v = Number(raw);
  if (v < min || v > max) throw new UsageError(`--${flag}: ${v} is out of range [${min}, ${max}]`);
  return v;
}

function real(flag: string, raw: string | undefined, fallback: number, min: number, max: number, minOpen = true): number {
  if (raw === undefined) return fallback;
  const v = Number(raw);
  const range = `${minOpen ? '(' : '['}${min}, ${max}]`;
  if (raw.trim() === '' || !Number.isFinite(v)) throw new UsageError(`--${flag}: '${raw}' is not a number in ${range}`);
  if ((minOpen ? v <= min : v < min) || v > max) throw new UsageError(`--${flag}: ${v} is out of range ${range}`);
  return v;
}

function list(flag: string, raw: string | undefined, fallback: string): string[] {
  const items = (raw ?? fallback).split(',').map((s) => s.trim());
  if (items.some((s) => s === '')) throw new UsageError(`--${flag}: '${raw}' has an empty item`);
  return [...new Set(items)];
}

/** `--eps -1` -> `--eps=-1`: node:util would read a negative number as an option and call it ambiguous. */
function joinNegativeValues(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const next = argv[i + 1];
    if (/^--[\w-]+$/.test(argv[i]) && next !== undefined && /^-(\d|\.\d)/.test(next)) {
      out.push(`${argv[i]}=${next}`);
      i++;
    } else {
      out.push(argv[i]);
    }
  }
  return out;
}

function parse(argv: readonly string[]) {
  try {
    return parseArgs({
      args: joinNegativeValues(argv),
      allowPositionals: true,
      strict: true,
      options: {
        url: { type: 'string', multiple: true }, 'verify-url': { type: 'string' },
        attack: { type: 'string' }, eot: { type: 'string' }, eps: { type: 'string' }, queries: { type: 'string' },
        images: { type: 'string' }, 'images-dir': { type: 'string' }, fmnist: { type: 'string' }, offset: { type: 'string' },
        verify: { type: 'string' }, seed: { type: 'string' }, 'time-limit': { type: 'string' }, 'p-init': { type: 'string' },
        'hsj-grad-queries': { type: 'string' }, json: { type: 'string' }, markdown: { type: 'string' },
        quiet: { type: 'boolean' }, help: { type: 'boolean' }, detection: { type: 'boolean' },
        out: { type: 'string' }, count: { type: 'string' },
      },
    });
  } catch (err) {
    // node:util's messages are multi-line; the first line names the flag.
    throw new UsageError(`${(err as Error).message.split('\n')[0]} (see --help)`);
  }
}

const quote = (a: string) => (/^[\w./:=,@+-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);

async function writeFmnist(values: ReturnType<typeof parse>['values'], io: CliIo): Promise<void> {
  if (!values.out) throw new UsageError('write-fmnist: --out DIR is required');
  const count = int('count', values.count, 100, 1, 10000);
  const offset = int('offset', values.offset, 0, 0, 9999);
  const names = await writeFashionMnist(values.fmnist ?? FASHION_MNIST_DIR, values.out, count, offset);
  io.stdout.write(`wrote ${names.length} Fashion-MNIST test images (${offset}..${offset + names.length - 1}) `
    + `and labels.json to ${values.out}\n`);
}

async function attack(argv: readonly string[], values: ReturnType<typeof parse>['values'], io: CliIo): Promise<void> {
  const urls = values.url ?? [];
  if (urls.length === 0) throw new UsageError('--url is required (a running redserve service, e.g. http://localhost:8080)');
  for (const url of urls) {
    try {
      parseTargetUrl(url);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  if (values.out !== undefined || values.count !== undefined) {
    throw new UsageError('--out and --count belong to the write-fmnist subcommand');
  }
  const kinds = list('attack', values.attack, 'square');
  const known: string[] = [...ATTACK_KINDS, ...ATTACK_KINDS.map((k) => `${k}-adaptive`)];
  const unknown = kinds.find((k) => !known.includes(k));
  if (unknown !== undefined) throw new UsageError(`--attack: '${unknown}' is not one of ${known.join(', ')}`);
  const eots = list('eot', values.eot, '1').map((e) => int('eot', e, 1, 1, 1000));
  const attacks: AttackSpec[] = kinds.flatMap((kind) => eots.map((eot) => ({
    kind: kind.replace(/-adaptive$/, '') as AttackKind, eot, ...(kind.endsWith('-adaptive') ? { adaptive: true } : {}),
  })));
  const eps = real('eps', values.eps, 0.1, 0, 255);
  const queries = int('queries', values.queries, 1000, 1, 10_000_000);
  const imageCount = int('images', values.images, 100, 1, 100_000);
  const verify = int('verify', values.verify, 11, 1, 1001);
  const seed = int('seed', values.seed, 0, 0, 2 ** 32 - 1);
  const timeLimitSeconds = real('time-limit', values['time-limit'], 3600, 0, 7 * 24 * 3600);
  const pInit = real('p-init', values['p-init'], 0.8, 0, 1);
  const hsjGradQueries = int('hsj-grad-queries', values['hsj-grad-queries'], 100, 1, 100_000);
  if (eots.some((m) => m > queries)) throw new UsageError(`--eot: ${Math.max(...eots)} answers per candidate exceed --queries ${queries}`);
  if (values['images-dir'] !== undefined && (values.fmnist !== undefined || values.offset !== undefined)) {
    throw new UsageError('--images-dir cannot be combined with --fmnist or --offset');
  }

  const images = values['images-dir'] !== undefined
    ? await readImageDir(values['images-dir'], imageCount)
    : await fashionMnistImages(values.fmnist ?? FASHION_MNIST_DIR, imageCount, int('offset', values.offset, 0, 0, 1_000_000));
  const imageSource = values['images-dir'] ?? `Fashion-MNIST test split (${values.fmnist ?? FASHION_MNIST_DIR}), `
    + `from index ${values.offset ?? 0}`;
  const targets = [];
  for (const url of urls) targets.push(await TargetClient.connect(url));
  if (values['verify-url'] !== undefined && urls.length !== 1) throw new UsageError('--verify-url: only with one --url');
  const verifier = values['verify-url'] === undefined ? undefined : await TargetClient.connect(values['verify-url']);

  const prefix = io.env.npm_lifecycle_event === 'attack' ? 'npm run attack --' : 'node dist/src/attack/cli.js';
  const report = await runAttacks({
    targets, images, attacks, eps, queries, verify, seed, timeLimitSeconds, pInit, hsjGradQueries, imageSource,
    command: [prefix, ...argv.map(quote)].join(' '),
    progress: values.quiet ? undefined : new Progress(io.stderr),
    detection: values.detection ?? false,
    ...(verifier ? { verifier } : {}),
  });
  for (const [file, text] of [[values.json, `${JSON.stringify(report, null, 2)}\n`], [values.markdown, renderMarkdown(report)]]) {
    if (file === undefined) continue;
    await mkdir(path.dirname(path.resolve(file)), { recursive: true });
    await writeFile(file, text!);
  }
  io.stdout.write(`${resultsTable(report.results)}\n`);
  if (values.detection) io.stdout.write(`\n${detectionTable(report.results)}\n`);
  if (report.stoppedByTimeLimit) io.stderr.write(`redserve attack: stopped by the ${timeLimitSeconds} s time limit\n`);
}

/** Run the command line; resolves to the exit status (0, 1 for a failed run, 2 for a bad flag). */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  try {
    const { values, positionals } = parse(argv);
    if (values.help) {
      io.stdout.write(`${USAGE}\n`);
    } else if (positionals[0] === 'write-fmnist' && positionals.length === 1) {
      if (values.url !== undefined) throw new UsageError('write-fmnist takes --out, --count, --offset and --fmnist, not --url');
      await writeFmnist(values, io);
    } else if (positionals.length > 0) {
      throw new UsageError(`unexpected argument '${positionals[0]}' (the only subcommand is write-fmnist)`);
    } else {
      await attack(argv, values, io);
    }
    return 0;
  } catch (err) {
    if (!(err instanceof AttackError)) throw err;
    io.stderr.write(`redserve attack: ${err.message.split('\n')[0]}\n`);
    return err instanceof UsageError ? 2 : 1;
  }
}
