import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import t from 'tap';
import sharp from 'sharp';
import { buildApp } from '../../src/app.js';
import { fashionMnistImages, readIdx, readImageDir, toPixels, writeFashionMnist } from '../images.js';
import { runCli } from '../main.js';
import { manifestOf, ROOT, embeddedConfig, TINY_SINGLE } from '../../test/helpers.js';
import type { InputSpec } from '../client.js';

const CLI = path.join(ROOT, 'dist', 'attack', 'cli.js');
const run = promisify(execFile);

/**
 * Run the CLI as its own process; never throws, returns the exit code and output. Without tap's
 * NODE_OPTIONS (its process-info hook), which would make every child start several times slower.
 */
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { timeout: 60_000, env: { ...process.env, NODE_OPTIONS: '' } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** A three-image IDX test split (gzip), the shape of Fashion-MNIST's t10k files. */
async function tinyIdx(): Promise<{ dir: string; pixels: Buffer; labels: number[] }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'redserve-idx-'));
  const n = 3;
  const pixels = Buffer.from(Array.from({ length: n * 28 * 28 }, (_, i) => (i * 37) % 256));
  const labels = [9, 0, 4];
  const header = (magic: number, dims: number[]) => {
    const b = Buffer.alloc(4 + 4 * dims.length);
    b.writeUInt32BE(magic, 0);
    dims.forEach((d, k) => b.writeUInt32BE(d, 4 + 4 * k));
    return b;
  };
  await writeFile(path.join(dir, 't10k-images-idx3-ubyte.gz'), gzipSync(Buffer.concat([header(0x803, [n, 28, 28]), pixels])));
  await writeFile(path.join(dir, 't10k-labels-idx1-ubyte.gz'), gzipSync(Buffer.concat([header(0x801, [n]), Buffer.from(labels)])));
  return { dir, pixels, labels };
}

const spec = (await manifestOf(TINY_SINGLE)).input as InputSpec;

t.test('Fashion-MNIST IDX files become labelled PNGs whose pixels are exact', async (t) => {
  const idx = await tinyIdx();
  const out = path.join(await mkdtemp(path.join(os.tmpdir(), 'redserve-png-')), 'images');
  const names = await writeFashionMnist(idx.dir, out, 2, 1);
  t.same(names, ['fmnist-test-00001-label0.png', 'fmnist-test-00002-label4.png'], 'index and label in the names');
  t.same(JSON.parse(await readFile(path.join(out, 'labels.json'), 'utf8')),
    { 'fmnist-test-00001-label0.png': 0, 'fmnist-test-00002-label4.png': 4 });
  const images = await readImageDir(out, 10);
  t.same(images.map((i) => i.label), [0, 4]);
  const meta = await sharp(images[0].bytes).metadata();
  t.same([meta.width, meta.height, meta.channels], [28, 28, 1], '28 x 28 gray');
  const x = await toPixels(images[1], spec);
  const want = Array.from(idx.pixels.subarray(2 * 784, 3 * 784), (v) => Math.fround(v * spec.scale));
  t.same(Array.from(x), want, 'pixel space = byte * scale, by the published pre-processing');
  t.ok(x.every((v) => v >= 0 && v <= 1));

  await t.rejects(fashionMnistImages(idx.dir, 3, 1), /images 1\.\.3 requested; the test split has 3 \(0\.\.2\)/);
  await writeFile(path.join(idx.dir, 'bad.idx'), Buffer.from([0, 0, 8, 3, 0, 0, 0, 9]));
  await t.rejects(readIdx(path.join(idx.dir, 'bad.idx'), 1), /not an unsigned-byte IDX file with 1 dimension/);
  await t.rejects(readIdx(path.join(idx.dir, 'bad.idx'), 3), /bad\.idx: the IDX header is truncated/);
});

t.test('image folders: labels from file names, and a missing label is named', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'redserve-dir-'));
  const png = await sharp(Buffer.alloc(28 * 28, 100), { raw: { width: 28, height: 28, channels: 1 } }).png().toBuffer();
  await writeFile(path.join(dir, 'shoe_label7.png'), png);
  await writeFile(path.join(dir, 'shirt-label10.png'), png);
  t.same((await readImageDir(dir, 5)).map((i) => [i.name, i.label]), [['shirt-label10.png', 10], ['shoe_label7.png', 7]]);
  await writeFile(path.join(dir, 'mystery.png'), png);
  await t.rejects(readImageDir(dir, 5), /mystery\.png: no label/);
  await t.rejects(readImageDir(path.join(dir, 'nope'), 5), /--images-dir: cannot read the folder/);
});

/** Run the command line in this process (fast), capturing its output. */
async function inProcess(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(args, {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    env: {},
  });
  return { code, stdout, stderr };
}

t.test('bad command lines: one line naming the problem, exit status 2', async (t) => {
  for (const [args, message] of [
    [[], /--url is required/],
    [['--url', 'http://127.0.0.1:1', '--eps=-1'], /--eps: -1 is out of range \(0, 255\]/],
    [['--url', 'http://127.0.0.1:1', '--eps', '-1'], /--eps: -1 is out of range \(0, 255\]/],
    [['--url', 'http://127.0.0.1:1', '--offset', '-.5'], /--offset: /],
    [['--url', 'http://127.0.0.1:1', '--eps', 'big'], /--eps: 'big' is not a number/],
    [['--url', 'http://127.0.0.1:1', '--queries', '0'], /--queries: 0 is out of range \[1, /],
    [['--url', 'http://127.0.0.1:1', '--attack', 'square,pgd'], /--attack: 'pgd' is not one of square, hsj/],
    [['--url', 'http://127.0.0.1:1', '--eot', '1,,4'], /--eot: '1,,4' has an empty item/],
    [['--url', 'http://127.0.0.1:1', '--eot', '20', '--queries', '10'], /--eot: 20 answers per candidate exceed --queries 10/],
    [['--url', 'http://127.0.0.1:1', '--verify', 'x'], /--verify: 'x' is not an integer/],
    [['--url', 'http://127.0.0.1:1', '--time-limit', '0'], /--time-limit: 0 is out of range \(0, /],
    [['--url', 'http://127.0.0.1:1', '--images-dir', 'x', '--offset', '3'], /--images-dir cannot be combined with --fmnist or --offset/],
    [['--url', 'http://127.0.0.1:1', '--colour', 'red'], /Unknown option '--colour'/],
    [['--url', 'ftp://x'], /--url: 'ftp:\/\/x' must use http or https/],
    [['--url', 'not a url'], /--url: 'not a url' is not a URL/],
    [['attack-all'], /unexpected argument 'attack-all'/],
    [['write-fmnist'], /write-fmnist: --out DIR is required/],
    [['write-fmnist', '--out', 'x', '--url', 'http://h:1'], /write-fmnist takes --out, --count, --offset and --fmnist, not --url/],
  ] as const) {
    const r = await inProcess([...args]);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, message);
    t.match(r.stderr, /^redserve attack: [^\n]+\n$/, 'one line');
  }
  const help = await inProcess(['--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /--time-limit S/);
  // The process itself exits with that status.
  const proc = await cli(['--queries', 'many', '--url', 'http://127.0.0.1:1']);
  t.equal(proc.code, 2);
  t.equal(proc.stderr, "redserve attack: --queries: 'many' is not an integer in [1, 10000000]\n");
});

t.test('runtime failures: one line, exit status 1', async (t) => {
  // A port that was just free: nothing listens there.
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise((resolve) => probe.close(resolve));
  const closed = await cli(['--url', `http://127.0.0.1:${port}`, '--images', '1', '--fmnist', (await tinyIdx()).dir]);
  t.equal(closed.code, 1);
  t.equal(closed.stderr, `redserve attack: cannot reach http://127.0.0.1:${port}/models: ECONNREFUSED\n`);
  const missing = await inProcess(['--url', 'http://127.0.0.1:9', '--fmnist', '/nonexistent']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /--fmnist: cannot read the folder \/nonexistent/);
});

t.test('the CLI end to end: write-fmnist, then attack an in-process service, JSON and markdown reports', async (t) => {
  const app = buildApp(embeddedConfig({ modelDir: TINY_SINGLE }), { logger: false });
  t.teardown(() => app.close());
  await app.modelReady;
  const url = await app.server.listen({ port: 0, host: '127.0.0.1' });
  const idx = await tinyIdx();
  const work = await mkdtemp(path.join(os.tmpdir(), 'redserve-cli-'));
  const imagesDir = path.join(work, 'images');
  const written = await cli(['write-fmnist', '--fmnist', idx.dir, '--out', imagesDir, '--count', '3']);
  t.equal(written.code, 0, written.stderr);
  t.match(written.stdout, /wrote 3 Fashion-MNIST test images \(0\.\.2\)/);
  t.equal((await readdir(imagesDir)).length, 4, '3 PNGs and labels.json');

  const json = path.join(work, 'out', 'report.json');
  const md = path.join(work, 'out', 'report.md');
  const r = await cli(['--url', url, '--attack', 'square,hsj', '--eot', '1,2', '--eps', '0.2', '--queries', '10', '--images', '2',
    '--images-dir', imagesDir, '--verify', '3', '--seed', '9', '--hsj-grad-queries', '3', '--json', json, '--markdown', md]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /\| model \| sampling \| attack \|/, 'the table on stdout');
  t.match(r.stderr, /\[#+\] 8\/8 /, 'progress on stderr reaches 8 of 8 units (2 images x 4 attacks)');
  const report = JSON.parse(await readFile(json, 'utf8'));
  t.equal(report.seed, 9);
  t.match(report.command, /^node dist\/src\/attack\/cli\.js --url http:\/\/127\.0\.0\.1:\d+ --attack square,hsj /);
  t.same(report.settings.attacks, ['square', 'square-eot2', 'hsj', 'hsj-eot2']);
  t.equal(report.targets[0].models.name, 'tiny-single');
  t.equal(report.targets[0].models.sampling, 'random');
  t.same(report.results.map((x: any) => x.images.length), [2, 2, 2, 2]);
  const text = await readFile(md, 'utf8');
  t.match(text, /\| tiny-single \| random \| hsj-eot2 \| /);
  t.match(text, /Fashion|images/);
});
