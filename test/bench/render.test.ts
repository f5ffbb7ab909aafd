/**
 * bench/render.ts writes bench.md again from a sweep's bench.json alone, and refuses a bench.json
 * written before it kept the report's inputs.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { T } from '../../bench/report.js';
import { ROOT } from '../helpers.js';

const run = promisify(execFile);
const RENDER = path.join(ROOT, 'dist', 'bench', 'render.js');

const point = (target: string, concurrency: number, rps: number) => ({
  workload: 'fmnist', target, concurrency, rps, p50: 1, p90: 1, p99: 2, ok: 100, rejected: 0, rejectedP99: null,
  cpu: { cpuUsPerImage: 100, mainThreadUsPerImage: 50, cores: 1, byCommMs: {} },
});
const sweep = {
  command: 'npm run bench -- --suite sweep',
  mlserver: 'not run',
  report: { command: 'npm run bench -- --suite sweep', concurrency: [1, 16], warmupS: 1, durationS: 3, workers: 2, overloadConcurrency: 256,
    overloadMaxQueue: 16, overloadFactor: 4, openLoopImages: 16, mlserver: 'not run' },
  envStart: ['- machine at the start: test'], envEnd: ['- load average at the end: 0.1'],
  targets: [T.bare, T.random],
  workloads: [{ name: 'fmnist', description: 'test members', httpBound: true, packageDir: 'models/x', members: 2, inputShape: [1, 28, 28] }],
  points: [point(T.bare, 1, 4000), point(T.bare, 16, 16000), point(T.random, 1, 1000), point(T.random, 16, 8000)],
};

t.test('bench.md from bench.json alone; an older bench.json is refused', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'redserve-render-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, 'bench.json'), JSON.stringify(sweep));
  await run(process.execPath, [RENDER, path.join(dir, 'bench.json'), path.join(dir, 'bench.md')]);
  const md = await readFile(path.join(dir, 'bench.md'), 'utf8');
  t.match(md, /Produced by `npm run bench -- --suite sweep`/);
  t.match(md, /- machine at the start: test/);
  t.match(md, /\| fmnist \| redserve random \/ bare route \(the limit of this HTTP-bound workload\), images\/s at c=16 \| 0\.50 \| >= 0\.5 \| yes \|/);

  const { report: _report, ...older } = sweep;
  await writeFile(path.join(dir, 'old.json'), JSON.stringify(older));
  const refused = await run(process.execPath, [RENDER, path.join(dir, 'old.json'), path.join(dir, 'old.md')]).then(() => null, (err: { code: number; stderr: string }) => err);
  t.equal(refused?.code, 2, 'exit 2');
  t.match(refused?.stderr, /written before bench\.json kept the report's inputs/);

  await writeFile(path.join(dir, 'broken.json'), '{"points": [');
  for (const [file, why] of [['broken.json', /cannot read a sweep from .*broken\.json/], ['missing.json', /cannot read a sweep from .*missing\.json: ENOENT/]] as const) {
    const err = await run(process.execPath, [RENDER, path.join(dir, file), path.join(dir, 'bench.md')]).then(() => null, (e: { code: number; stderr: string }) => e);
    t.equal(err?.code, 2, `${file}: exit 2`);
    t.match(err?.stderr, why);
  }
  t.match(await readFile(path.join(dir, 'bench.md'), 'utf8'), /## Targets/, 'the report already there is left as it was');
});
