import { spawn, spawnSync } from 'node:child_process';
import t from 'tap';
import { watchLoad } from '../../bench/quiet.js';

const spin = (ms: number) => `const e = Date.now() + ${ms}; while (Date.now() < e);`;

t.test('a busy process outside the benchmark is named; the benchmark\'s own children are not', async (t) => {
  // Outside: the shell starts the spinner in the background and exits, so its parent is no longer us.
  spawnSync('sh', ['-c', `node -e '${spin(2500)}' > /dev/null 2>&1 &`]);
  // Inside: a child of this process, as the servers the sweep starts are.
  const own = spawn(process.execPath, ['-e', spin(2500)], { stdio: 'ignore' });
  t.teardown(() => own.kill());
  await new Promise((r) => setTimeout(r, 300));
  const done = watchLoad();
  await new Promise((r) => setTimeout(r, 1200));
  const other = done();
  t.ok(other.otherBusy.some((p) => /^node \(\d+\) [\d.]+ cores$/.test(p)), `the spinner outside is named: ${other.otherBusy}`);
  t.notOk(other.otherBusy.some((p) => p.includes(`(${own.pid})`)), 'our own child is not other load');
  t.ok(Number.isFinite(other.loadBefore) && Number.isFinite(other.loadAfter), 'load average at both ends');
});
