/**
 * The flag tables of README.md and docs/detection.md are written for readers, by hand: every row
 * must name a flag the service has, its environment variable and the default its help line states
 * (src/config.ts), and together they must list every flag.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { FLAGS } from '../src/config.js';
import { ROOT } from './helpers.js';

interface Row { readonly file: string; readonly flag: string; readonly env: string; readonly defaultText: string; readonly meaning: string }

/** The rows of the first table under `## Flags` in a Markdown file. */
async function flagRows(file: string): Promise<Row[]> {
  const text = await readFile(path.join(ROOT, file), 'utf8');
  const section = text.slice(text.indexOf('\n## Flags'));
  const lines = section.split('\n').filter((l) => l.startsWith('| `--'));
  return lines.map((line) => {
    const cells = line.split(/(?<!\\)\|/).slice(1, -1).map((c) => c.trim().replaceAll('`', ''));
    return { file, flag: cells[0].split(' ')[0], env: cells[1], defaultText: cells[2], meaning: cells[3] };
  });
}

/** The default a help line states: "(default X)", "(default: X)", up to a ';' or ':' remark. */
const defaultOf = (help: string) => /\(default:? ([^;:)]+)/.exec(help)?.[1].trim();

const rows = [...await flagRows('README.md'), ...await flagRows('docs/detection.md')];
const byFlag = new Map(FLAGS.map((f) => [f.flag, f]));

t.test('every documented flag exists, with its environment variable and default', async (t) => {
  t.ok(rows.length > 20, `${rows.length} rows read`);
  for (const row of rows.filter((r) => !r.flag.includes('*'))) {
    const code = byFlag.get(row.flag);
    if (!code) {
      t.fail(`${row.file}: ${row.flag} is not a flag of src/config.ts`);
      continue;
    }
    t.equal(row.env, code.env, `${row.file}: ${row.flag}'s environment variable`);
    t.equal(row.defaultText, defaultOf(code.help), `${row.file}: ${row.flag}'s default (help: '${code.help}')`);
    t.ok(row.meaning.length > 0, `${row.file}: ${row.flag} says what it does`);
  }
});

t.test('every flag is documented', async (t) => {
  const documented = new Set(rows.map((r) => r.flag));
  for (const { flag } of FLAGS) t.ok(documented.has(flag), `${flag} has a row in README.md or docs/detection.md`);
});
