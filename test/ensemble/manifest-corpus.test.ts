/**
 * The package contract from the service's side, on the corpus the Python side is tested on too
 * (test/fixtures/manifests; training/tests/test_manifest_corpus.py): the same verdicts, the same words.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { validateManifest } from '../../src/ensemble/manifest.js';
import { FIXTURES, readJson, ROOT } from '../helpers.js';

const CORPUS = path.join(FIXTURES, 'manifests');
const expected = await readJson<Record<string, string[]>>(path.join(CORPUS, 'expected.json'));
const names = async (folder: string) => (await readdir(path.join(CORPUS, folder))).filter((f) => f.endsWith('.json')).sort();

t.test('good manifests are valid', async (t) => {
  const good = await names('good');
  t.ok(good.length >= 3);
  for (const name of good) t.same(validateManifest(await readJson(path.join(CORPUS, 'good', name))), [], name);
});

t.test('bad manifests give exactly the expected problems', async (t) => {
  const bad = await names('bad');
  t.same(bad, Object.keys(expected).sort(), 'every expectation has its manifest and every manifest its expectation');
  for (const name of bad) t.same(validateManifest(await readJson(path.join(CORPUS, 'bad', name))), expected[name], name);
});

t.test('the shipped manifests are valid', async (t) => {
  for (const name of ['fmnist-red', 'fmnist-baseline', 'fmnist-psred']) {
    t.same(validateManifest(await readJson(path.join(ROOT, 'models', name, 'manifest.json'))), [], name);
  }
});
