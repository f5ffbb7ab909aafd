/**
 * Write a sweep's bench.md again from its bench.json (what bench/sweep.ts measured, and everything
 * the report is made from), without measuring anything: for a change to how the report reads.
 *
 *   npm run build && node dist/bench/render.js [reports/bench.json] [reports/bench.md]
 */
import { readFile, writeFile } from 'node:fs/promises';
import { markdown, type Point, type ReportOptions, type WorkloadInfo } from './report.js';

interface SweepFile {
  readonly report?: ReportOptions;
  readonly envStart?: string[];
  readonly envEnd?: string[];
  readonly targets?: string[];
  readonly workloads: WorkloadInfo[];
  readonly points: Point[];
}

const [from = 'reports/bench.json', to = 'reports/bench.md'] = process.argv.slice(2);
let sweep: SweepFile;
try {
  sweep = JSON.parse(await readFile(from, 'utf8')) as SweepFile;
} catch (err) {
  process.stderr.write(`cannot read a sweep from ${from}: ${(err as Error).message}\n`);
  process.exit(2);
}
if (!Array.isArray(sweep?.points) || !Array.isArray(sweep.workloads)) {
  process.stderr.write(`${from} is not a sweep's bench.json (no points and workloads)\n`);
  process.exit(2);
}
if (!sweep.report || !sweep.envStart || !sweep.envEnd || !sweep.targets) {
  process.stderr.write(`${from} was written before bench.json kept the report's inputs (report, envStart, envEnd, targets); run the sweep again\n`);
  process.exit(2);
}
await writeFile(to, markdown(sweep.points, sweep.workloads, sweep.report, sweep.envStart, sweep.envEnd, sweep.targets));
process.stdout.write(`wrote ${to} from ${from}\n`);
