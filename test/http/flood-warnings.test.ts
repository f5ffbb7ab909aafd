/**
 * src/http/error-handler.ts FloodWarnings: refusals that come in floods (overloaded, timeout) are
 * logged at most once a second per code, the next line saying how many were left out; any other
 * 503 is logged every time.
 */
import t from 'tap';
import { FloodWarnings } from '../../src/http/error-handler.js';

function recorder() {
  const lines: { obj: Record<string, unknown>; msg: string }[] = [];
  return { lines, log: { warn: (obj: Record<string, unknown>, msg: string) => { lines.push({ obj, msg }); } } as never };
}

t.test('a storm of overloaded refusals: one line a second, the next one counts the rest', async (t) => {
  let now = 0;
  const warnings = new FloodWarnings(1000, () => now);
  const { lines, log } = recorder();
  for (let i = 0; i < 500; i++) { warnings.warn(log, 'overloaded', 'the inference queue is full; retry shortly'); now += 1; }
  t.equal(lines.length, 1, '500 refusals in 0.5 s: one line');
  t.same(lines[0].obj, { code: 'overloaded' });
  now = 1000;
  warnings.warn(log, 'overloaded', 'the inference queue is full; retry shortly');
  t.equal(lines.length, 2);
  t.same(lines[1].obj, { code: 'overloaded', refusedSinceLastLine: 499 }, 'the 499 left out are counted');
  now = 5000;
  warnings.warn(log, 'overloaded', 'x');
  t.same(lines[2].obj, { code: 'overloaded' }, 'after a quiet spell, nothing was left out');
});

t.test('codes are throttled apart, and rarer 503s are never dropped', async (t) => {
  const now = 0;
  const warnings = new FloodWarnings(1000, () => now);
  const { lines, log } = recorder();
  warnings.warn(log, 'overloaded', 'a');
  warnings.warn(log, 'timeout', 'b');
  for (let i = 0; i < 3; i++) warnings.warn(log, 'worker_failed', 'c');
  warnings.warn(log, 'not_ready', 'd');
  t.same(lines.map((l) => l.obj.code), ['overloaded', 'timeout', 'worker_failed', 'worker_failed', 'worker_failed', 'not_ready']);
});
