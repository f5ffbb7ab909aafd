/**
 * scripts/gpu-check.sh on a machine without a usable GPU: it must stop at its first step, loudly
 * and with a non-zero status, before it installs or builds anything. A stand-in nvidia-smi first on
 * PATH makes this the same on every machine, GPU or not.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { ROOT } from './helpers.js';

async function runWith(nvidiaSmi: string): Promise<{ code: number | null; stderr: string }> {
  const bin = await mkdtemp(path.join(os.tmpdir(), 'redserve-gpu-check-'));
  try {
    await writeFile(path.join(bin, 'nvidia-smi'), `#!/bin/sh\n${nvidiaSmi}\n`);
    await chmod(path.join(bin, 'nvidia-smi'), 0o755);
    return await new Promise((resolve) => {
      execFile('bash', [path.join(ROOT, 'scripts', 'gpu-check.sh')], { env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } },
        (err, _stdout, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? null : 0, stderr }));
    });
  } finally {
    await rm(bin, { recursive: true, force: true });
  }
}

t.test('a driver that cannot talk to a GPU stops the check', async (t) => {
  const { code, stderr } = await runWith('echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver."; exit 9');
  t.equal(code, 1);
  t.match(stderr, /^gpu-check: FAIL: nvidia-smi cannot list GPUs: NVIDIA-SMI has failed/m);
});

t.test('a driver that lists no GPU stops the check', async (t) => {
  const { code, stderr } = await runWith('echo "No devices found."');
  t.equal(code, 1);
  t.match(stderr, /^gpu-check: FAIL: nvidia-smi lists no GPU: No devices found\./m);
});
