/**
 * In-process onnxruntime for the benchmarks' raw rows (bench/sweep.ts, bench/raw-worker.ts): every
 * member of an ensemble package as a CPU session, and a batch of n copies of its first golden image.
 */
import { readPackage } from '../src/ensemble/manifest.js';
import { createSession, sessionSpec, type MemberSession } from '../src/ensemble/runtime.js';

export interface RawMembers {
  readonly sessions: readonly MemberSession[];
  /** n copies of the package's first golden input, NCHW float32. */
  batch(n: number): Float32Array;
  release(): Promise<void>;
}

export async function openRawMembers(modelDir: string, threads: number): Promise<RawMembers> {
  const pkg = await readPackage(modelDir);
  if (pkg.manifest.kind !== 'ensemble') throw new Error('the raw rows need an ensemble package');
  const spec = sessionSpec(pkg.manifest);
  const sessions = (await Promise.all(pkg.members.map((m, i) => createSession(m, spec, { kind: 'cpu' }, threads, `member ${i}`))))
    .map((created) => created.session);
  const image = pkg.golden[0].input;
  return {
    sessions,
    batch(n: number) {
      const data = new Float32Array(n * image.length);
      for (let i = 0; i < n; i++) data.set(image, i * image.length);
      return data;
    },
    release: async () => { for (const s of sessions) s.release(); },
  };
}
