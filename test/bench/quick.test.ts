/**
 * The benchmark's smoke test (`npm run bench -- --quick`) runs end to end: every Node target of the
 * fmnist workload for about a second a point, written to a temporary folder (never reports/), with
 * the targets table and a row per target. The Python peers need their own environments and are
 * left out here (--peers none); the figures themselves are not checked, only that each target
 * answered.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { ROOT } from '../helpers.js';

const run = promisify(execFile);

t.test('npm run bench -- --quick: every Node target answers and the report has its tables', { timeout: 240_000 }, async (t) => {
  const out = await mkdtemp(path.join(os.tmpdir(), 'redserve-quick-test-'));
  t.teardown(() => rm(out, { recursive: true, force: true }));
  await run(process.execPath, [path.join(ROOT, 'dist', 'bench', 'bench.js'), '--quick', '--peers', 'none', '--workloads', 'fmnist', '--out', out],
    { cwd: ROOT, timeout: 230_000, maxBuffer: 16 * 1024 * 1024 });
  const md = await readFile(path.join(out, 'bench.md'), 'utf8');
  t.match(md, /## Targets/);
  t.match(md, /\| fmnist \| redserve random \/ bare route \(the limit of this HTTP-bound workload\)/);
  for (const target of ['raw batched', 'raw batched, parallel', 'bare Fastify route', 'redserve random', 'redserve random, binary', 'redserve unbatched', 'redserve mean']) {
    const row = md.split('\n').find((l) => l.startsWith(`| ${target} | 16 |`));
    t.ok(row, `a row for ${target} at c=16`);
    t.ok(Number(row?.split('|')[3]) > 0, `${target} answered: ${row?.split('|')[3]?.trim()} images/s`);
  }
  t.match(md, /redserve random \(overload\)/, 'the overload point ran');
  const json = JSON.parse(await readFile(path.join(out, 'bench.json'), 'utf8'));
  t.ok(json.points.length >= 7, `${json.points.length} points in bench.json`);
});
