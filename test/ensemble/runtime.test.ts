/**
 * runtime.ts on its own: member sessions on onnxruntime-node's synchronous binding. A session is
 * checked against the manifest's signature when it is created, runs synchronously, and matches the
 * package's golden logits.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { createSession, type SessionSpec } from '../../src/ensemble/runtime.js';
import { FIXTURES, goldenOf } from '../helpers.js';

const PKG = path.join(FIXTURES, 'tiny-ensemble');

async function member0(): Promise<{ model: Uint8Array }> {
  return { model: new Uint8Array(await readFile(path.join(PKG, 'member-0.onnx'))) };
}

t.test('a session runs synchronously and reproduces the golden logits', async (t) => {
  const manifest = JSON.parse(await readFile(path.join(PKG, 'manifest.json'), 'utf8'));
  const spec: SessionSpec = { inputName: manifest.input.name, outputName: manifest.output.name, shape: manifest.input.shape, classes: manifest.output.classes };
  const { session, provider } = await createSession(await member0(), spec, { kind: 'cpu' }, 1, 'member 0');
  t.equal(provider, 'cpu');
  const golden = await goldenOf(PKG);
  const size = spec.shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(golden.length * size);
  golden.forEach((g, i) => data.set(g.input as number[], i * size));
  const logits = session.run(data, golden.length);
  t.ok(logits instanceof Float32Array, 'the logits come back at once, not as a promise');
  t.equal(logits.length, golden.length * spec.classes);
  let worst = 0;
  golden.forEach((g, i) => (g.logits[0] as number[]).forEach((v, k) => { worst = Math.max(worst, Math.abs(logits[i * spec.classes + k] - v)); }));
  t.ok(worst <= manifest.golden.atol, `largest logit error ${worst.toExponential(2)} (allowed ${manifest.golden.atol})`);
  session.release();
});

t.test('a session whose signature differs from the manifest is refused, naming each mismatch', async (t) => {
  const manifest = JSON.parse(await readFile(path.join(PKG, 'manifest.json'), 'utf8'));
  const [c, h, w] = manifest.input.shape;
  const spec: SessionSpec = { inputName: 'pixels', outputName: 'scores', shape: [c + 2, h, w], classes: manifest.output.classes };
  const created = createSession(await member0(), spec, { kind: 'cpu' }, 1, 'member 0');
  await t.rejects(created, new RegExp(`member 0: inputs are \\[${manifest.input.name}\\], the manifest says \\[pixels\\]; `
    + `member 0: outputs are \\[${manifest.output.name}\\], the manifest says \\[scores\\]`));
  const wrongShape = { ...spec, inputName: manifest.input.name, outputName: manifest.output.name };
  await t.rejects(createSession(await member0(), wrongShape, { kind: 'cpu' }, 1, 'member 0'),
    new RegExp(`input shape is \\[\\w+, ${c}, ${h}, ${w}\\], the manifest says \\[batch, ${c + 2}, ${h}, ${w}\\]`));
});

t.test('bytes that are not a model fail with onnxruntime\'s reason and the member\'s name', async (t) => {
  const spec: SessionSpec = { inputName: 'input', outputName: 'logits', shape: [1, 28, 28], classes: 10 };
  await t.rejects(createSession({ model: new TextEncoder().encode('not an onnx model') }, spec, { kind: 'cpu' }, 1, 'member 3'),
    /^member 3: cannot create a cpu session: /);
});
