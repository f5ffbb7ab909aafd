import t from 'tap';
import { InputError } from '../../src/errors.js';
import { MAX_JSON_DEPTH, checkJsonDepth } from '../../src/http/json-depth.js';

const nested = (depth: number, open: string, close: string, inner = '1') => open.repeat(depth) + inner + close.repeat(depth);
const refused = (text: string) => {
  try { checkJsonDepth(text); return false; } catch (err) { return err instanceof InputError && err.code === 'too_deep'; }
};

t.test('arrays and objects count alike, up to the bound and not one level more', async (t) => {
  t.notOk(refused(nested(MAX_JSON_DEPTH, '[', ']')));
  t.ok(refused(nested(MAX_JSON_DEPTH + 1, '[', ']')));
  t.notOk(refused(nested(MAX_JSON_DEPTH, '{"a":', '}')));
  t.ok(refused(nested(MAX_JSON_DEPTH + 1, '{"a":', '}')));
  t.ok(refused(nested(MAX_JSON_DEPTH / 2 + 1, '[{"a":', '}]')), 'mixed nesting adds up');
});

t.test('closing brackets give the depth back: siblings never add up', async (t) => {
  t.notOk(refused(`[${Array.from({ length: 200 }, () => nested(MAX_JSON_DEPTH - 1, '[', ']')).join(',')}]`));
});

t.test('brackets inside strings, escaped quotes included, do not count', async (t) => {
  t.notOk(refused(JSON.stringify({ s: '['.repeat(500) + '\\"' + '{'.repeat(500) })));
  t.notOk(refused(JSON.stringify(['a\\', '['.repeat(500)])), 'an escaped backslash ends before the closing quote');
  t.ok(refused(`["\\"]"${',['.repeat(MAX_JSON_DEPTH)}`), 'after the string closes, brackets count again');
});

t.test('a tensor body of numbers and exponents passes', async (t) => {
  const data = Array.from({ length: 3072 }, (_, i) => (i % 2 ? -1 : 1) * i * 1.5e-7);
  t.notOk(refused(JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', data }] })));
});

t.test('a body with no more opening brackets than the bound is let through on that count; one with more is scanned', async (t) => {
  t.notOk(refused(`{"a":[${'1,'.repeat(10_000)}1]}`), 'two openings');
  t.notOk(refused(`[${'[1],'.repeat(MAX_JSON_DEPTH * 4)}[1]]`), 'many openings, depth 2: scanned, and passes');
  t.notOk(refused(JSON.stringify({ s: '['.repeat(MAX_JSON_DEPTH * 2), a: [[1]] })),
    'openings inside a string send the body to the scan, which passes it: they are not depth');
});
