/**
 * A package made by `redtrain import` (test/fixtures/tiny-imported: tiny-ensemble's member files
 * imported with mean 0.5, std 0.25; test/fixtures/make-fixtures.py) passes the service's start-up
 * checks, golden logits included, and answers as the golden logits say.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { readPackage } from '../../src/ensemble/manifest.js';
import { FIXTURES, goldenOf, softmax, startApp } from '../helpers.js';

const IMPORTED = path.join(FIXTURES, 'tiny-imported');

t.test('an imported package loads, says where it came from, and serves', async (t) => {
  const pkg = await readPackage(IMPORTED);
  t.equal(pkg.manifest.training.method, 'imported');
  t.notOk('torch' in pkg.manifest.export, 'no torch recorded: none exported these members');
  t.same(pkg.manifest.input.mean, [0.5]);

  const app = await startApp({ modelDir: IMPORTED, sampling: { mode: 'fixed', member: 1 } });
  t.teardown(() => app.close());
  const golden = await goldenOf(IMPORTED);
  const res = await app.server.inject({
    method: 'POST', url: '/classify?topK=all', headers: { 'content-type': 'image/png' },
    payload: await readFile(path.join(IMPORTED, golden[0].file)),
  });
  t.equal(res.statusCode, 200);
  const expected = softmax(golden[0].logits[1]);
  for (const p of res.json().predictions) t.ok(Math.abs(p.probability - expected[p.index]) < 1e-4, `class ${p.index}`);
});
