/**
 * bench/report.ts on made-up points: each ratio reads the rows and concurrencies it names, targets
 * apply per workload (fmnist's limit is the bare route), ratios between targets say whether both
 * used the machine, and a missing row reads '-' rather than a number.
 */
import t from 'tap';
import type { Measurement } from '../../bench/load.js';
import { markdown, meets, ratios, referenceConcurrency, T, type Point, type ReportOptions, type WorkloadInfo } from '../../bench/report.js';

function point(workload: string, target: string, concurrency: number,
  m: Partial<Measurement> & { cpuUs?: number; loopUs?: number; cores?: number }): Point {
  return {
    workload, target, concurrency, rps: m.rps ?? 100, p50: m.p50 ?? 1, p90: m.p90 ?? 1, p99: m.p99 ?? 1, ok: 100, rejected: 0, rejectedP99: null,
    cpu: { cpuUsPerImage: m.cpuUs ?? 100, mainThreadUsPerImage: m.loopUs ?? 10, cores: m.cores ?? 1, byCommMs: {} },
  };
}

/** A complete resnet20 sweep at concurrency 1 and 16, with numbers chosen so every ratio is easy to check. */
function resnet20(): Point[] {
  const w = 'resnet20';
  return [1, 16].flatMap((c) => [
    point(w, T.rawParallel, c, { rps: 1000, p50: 2, cpuUs: 400, cores: 2 }),
    point(w, T.bare, c, { rps: 8000, p50: 0.5, cpuUs: 100, loopUs: 80 }),
    point(w, T.random, c, { rps: c === 16 ? 900 : 300, p50: 3, p99: 10, cpuUs: 600, loopUs: 100, cores: 1.9 }),
    point(w, T.randomBinary, c, { loopUs: 130 }),
    point(w, T.mean, c, { rps: 150 }),
    point(w, T.mlserverRandom, c, { rps: 300, p99: 40, cores: 1.7 }),
    point(w, T.fastapi, c, { rps: 600, p99: 8, cores: 1.0 }),
  ]);
}

/** What the sweep passes markdown(), for a two-concurrency run. */
const OPTIONS: ReportOptions = { command: 'test', concurrency: [1, 16], warmupS: 1, durationS: 5, workers: 2, overloadConcurrency: 256,
  overloadMaxQueue: 16, overloadFactor: 4, openLoopImages: 16, mlserver: '1.0' };

const byKey = (rows: ReturnType<typeof ratios>) => Object.fromEntries(rows.filter((r) => r.key).map((r) => [r.key, r]));

t.test('the reference concurrency is 16 when measured, else the middle one', async (t) => {
  t.equal(referenceConcurrency([1, 4, 16, 64]), 16);
  t.equal(referenceConcurrency([1, 4, 64]), 4);
  t.equal(referenceConcurrency([8]), 8);
});

t.test('targets: at least, at most, strictly below', async (t) => {
  t.ok(meets(5, { min: 5 }));
  t.notOk(meets(4.99, { min: 5 }));
  t.ok(meets(1.3, { max: 1.3 }));
  t.notOk(meets(1, { below: 1 }));
});

t.test('resnet20: every ratio from the rows and concurrencies it names', async (t) => {
  const r = byKey(ratios(resnet20(), 'resnet20', [1, 16], false, 2));
  t.equal(r.vsLimit.value, 0.9, 'random / raw parallel images/s at c=16');
  t.equal(r.vsLimit.met, true, '0.9 >= 0.9');
  t.equal(r.randomOverMean.value, 6, 'random / mean images/s at c=16');
  t.same(r.randomOverMean.target, { min: 6 });
  t.equal(r.randomOverMean.met, true);
  t.equal(r.p50Overhead.value, 3 / 2.5, 'p50 at c=1 over raw member + bare route');
  t.equal(r.p50Overhead.target, undefined, 'the p50 target is ResNet-18\'s');
  t.equal(r.cpuOverhead.value, 600 / 500);
  t.equal(r.cpuOverhead.met, true, '1.2 <= 1.3');
  t.equal(r.eventLoop.value, 100 / 80);
  t.equal(r.eventLoop.met, true, '1.25 <= 2');
  t.equal(r.eventLoopBinary.value, 130 / 80);
  t.equal(r.eventLoopBinary.met, false, '1.625 > 1.5');
  t.equal(r.vsMlserver.value, 3);
  t.equal(r.vsMlserver.note, 'cores busy 1.90 vs 1.70: both used the machine');
  t.equal(r.p99VsMlserver.value, 0.25);
  t.equal(r.p99VsMlserver.met, true);
  t.equal(r.vsFastapi.value, 1.5);
  t.equal(r.vsFastapi.met, false, '1.5 < 2');
  t.equal(r.vsFastapi.note, 'cores busy 1.90 vs 1.00: fastapi peer did not use the machine',
    'a peer on one core is not member-bound, whatever its share of the limit');
  const bound = byKey(ratios(resnet20().map((p) => (p.target === T.fastapi ? { ...p, cpu: { ...p.cpu!, cores: 1.8 } } : p)), 'resnet20', [1, 16], false, 2));
  t.equal(bound.vsFastapi.note, 'cores busy 1.90 vs 1.80: both used the machine; fastapi peer at 0.60 of the limit: member-bound');
  const neither = byKey(ratios(resnet20(), 'resnet20', [1, 16], false, 16));
  t.equal(neither.vsFastapi.note, 'cores busy 1.90 vs 1.00: redserve and fastapi peer did not use the machine', 'on 16 cores neither did');
  t.equal(r.p99VsFastapi.met, false, 'a higher p99 than the peer\'s');
});

t.test('fmnist is HTTP-bound: its limit is the bare route, and the report says so', async (t) => {
  const points = resnet20().map((p) => ({ ...p, workload: 'fmnist' }));
  const r = byKey(ratios(points, 'fmnist', [1, 16], true, 2));
  t.equal(r.vsLimit.value, 900 / 8000, 'random / bare route images/s at c=16');
  t.same(r.vsLimit.target, { min: 0.5 });
  t.equal(r.randomOverMean.target, undefined, 'no batching target on fmnist');
  t.notMatch(r.vsFastapi.note ?? '', /member-bound/, 'an HTTP-bound workload is never called member-bound');
  const info: WorkloadInfo = { name: 'fmnist', description: 'test', httpBound: true, packageDir: 'models/x', members: 5, inputShape: [1, 28, 28] };
  const md = markdown(points, [info], OPTIONS, [], [], [T.rawParallel, T.bare, T.random]);
  t.match(md, /## fmnist \(HTTP-bound\)/);
  t.match(md, /\| fmnist \| redserve random \/ bare route, event-loop CPU per request at c=1 \| 1\.25 \| <= 2 \| yes \| +\|/);
  t.match(md, /\| fmnist \| redserve random \/ bare route \(the limit of this HTTP-bound workload\), images\/s at c=16 \| 0\.11 \| >= 0\.5 \| NO \|/);
  t.notMatch(md, /\| fmnist \| redserve random \/ redserve mean/, 'no batching target in the summary');
});

t.test('a row that was not measured reads as no value, not as a ratio', async (t) => {
  const points = resnet20().filter((p) => p.target !== T.mlserverRandom);
  const r = byKey(ratios(points, 'resnet20', [1, 16]));
  t.ok(Number.isNaN(r.vsMlserver.value));
  t.equal(r.vsMlserver.met, undefined);
});

t.test('a row that answered nothing gives no ratio, not Infinity', async (t) => {
  const points = resnet20().map((p) => (p.target === T.mean ? { ...p, rps: 0 } : p));
  const r = byKey(ratios(points, 'resnet20', [1, 16]));
  t.ok(Number.isNaN(r.randomOverMean.value));
  t.equal(r.randomOverMean.met, undefined);
});

t.test('a server of several busy processes shows each one\'s cores: did every worker get work?', async (t) => {
  const points = resnet20().map((p) => (p.target === T.fastapi
    ? { ...p, cpu: { ...p.cpu!, cores: 1.75, processCores: [0.9, 0.85] } }
    : p.target === T.random ? { ...p, cpu: { ...p.cpu!, processCores: [1.9] } } : p));
  const info: WorkloadInfo = { name: 'resnet20', description: 'test', httpBound: false, packageDir: 'x', members: 8, inputShape: [3, 32, 32] };
  const md = markdown(points, [info], OPTIONS, [], [], [T.random, T.fastapi]);
  t.match(md, /\| fastapi peer \| 16 \| 600 \|.*\| 1\.75 \(0\.90 \+ 0\.85\) \|/);
  t.match(md, /\| redserve random \| 16 \| 900 \|.*\| 1\.90 \| 0 \|/, 'one busy process: no split');
});
