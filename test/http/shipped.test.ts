/** The shipped packages, end to end: PNG in, each member's golden logits out (PS-RED: generated at load). */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { goldenOf, manifestOf, SHIPPED, softmax, startApp } from '../helpers.js';

const PACKAGES: Array<{ dir: string; method: string; kind: string; members: number }> = [
  { dir: SHIPPED, method: 'red', kind: 'ensemble', members: 5 },
  { dir: path.join(path.dirname(SHIPPED), 'fmnist-baseline'), method: 'barre', kind: 'ensemble', members: 2 },
  { dir: path.join(path.dirname(SHIPPED), 'fmnist-psred'), method: 'ps-red', kind: 'ps-red', members: 5 },
];

for (const pkg of PACKAGES) {
  const name = `models/${path.basename(pkg.dir)}`;
  t.test(`${name} serves every member exactly as PyTorch computed it`, { skip: !existsSync(pkg.dir) && `${name} not present` }, async (t) => {
    const manifest = await manifestOf(pkg.dir);
    const golden = await goldenOf(pkg.dir);
    t.equal(manifest.members.length, pkg.members);
    t.equal(manifest.kind, pkg.kind);
    t.equal(manifest.training.method, pkg.method);
    for (let k = 0; k < manifest.members.length; k++) {
      const app = await startApp({ modelDir: pkg.dir, sampling: { mode: 'fixed', member: k }, workers: 1 });
      for (const g of golden) {
        const res = await app.server.inject({
          method: 'POST', url: '/classify?topK=all', headers: { 'content-type': 'image/png' },
          payload: await readFile(path.join(pkg.dir, g.file)),
        });
        const expected = softmax(g.logits[k] as number[]);
        const worst = Math.max(...res.json().predictions.map((p: any) => Math.abs(p.probability - expected[p.index])));
        t.ok(worst < 1e-5, `member ${k}, ${g.file}: max probability error ${worst.toExponential(2)} < 1e-5`);
      }
      await app.close();
    }
  });
}
