/** The shipped default package, end to end: PNG in, each member's golden logits out. */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { goldenOf, manifestOf, SHIPPED, softmax, startApp } from '../helpers.js';

t.test('models/fmnist-red serves every member exactly as PyTorch computed it', { skip: !existsSync(SHIPPED) && 'models/fmnist-red not present' }, async (t) => {
  const manifest = await manifestOf(SHIPPED);
  const golden = await goldenOf(SHIPPED);
  t.equal(manifest.members.length, 5);
  t.equal(manifest.training.method, 'red');
  for (let k = 0; k < manifest.members.length; k++) {
    const app = await startApp({ modelDir: SHIPPED, sampling: { mode: 'fixed', member: k }, workers: 1 });
    for (const g of golden) {
      const res = await app.server.inject({
        method: 'POST', url: '/classify?topK=all', headers: { 'content-type': 'image/png' },
        payload: await readFile(path.join(SHIPPED, g.file)),
      });
      const expected = softmax(g.logits[k] as number[]);
      const worst = Math.max(...res.json().predictions.map((p: any) => Math.abs(p.probability - expected[p.index])));
      t.ok(worst < 1e-5, `member ${k}, ${g.file}: max probability error ${worst.toExponential(2)} < 1e-5`);
    }
    await app.close();
  }
});
