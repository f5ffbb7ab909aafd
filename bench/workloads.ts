/**
 * The packages the benchmark runs on. `fmnist` is the shipped Fashion-MNIST package (small members,
 * one-image requests that HTTP, not the model, dominates); `resnet20` and `resnet18` are CIFAR-sized
 * (3x32x32, 10 classes) ensembles of 8 members with random weights, realistic in cost but not in
 * accuracy, made by `redtrain bench-package` on first use into bench/.packages/<arch>-x8 (ignored
 * by git) and reused after.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { readPackage } from '../src/ensemble/manifest.js';

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
/** The training package's virtual environment (scripts/setup.sh): FastAPI peer, plot, package generation. */
export const PYTHON = path.join(ROOT, '.venv', 'bin', 'python');
export const PACKAGES_DIR = path.join(ROOT, 'bench', '.packages');

/** Something the benchmark needs is missing or could not be made; the message says what and how to proceed. */
export class SetupError extends Error {
  override readonly name = 'SetupError';
}

export interface Workload {
  readonly name: string;
  /** Fashion-MNIST's one-image requests cost more in HTTP than in the model: its rows carry no model targets. */
  readonly httpBound: boolean;
  /** What the package is, for the report. */
  readonly description: string;
  /** The package folder, generating it first if needed. */
  resolve(log: (line: string) => void): Promise<string>;
}

const MEMBERS = 8;
const SEED = 0;

/** The command that writes a benchmark package (documented in training/redtrain: `bench-package`). */
export function benchPackageArgs(arch: string, out: string): string[] {
  return ['-m', 'redtrain', 'bench-package', '--arch', arch, '--members', String(MEMBERS), '--seed', String(SEED), '--out', out];
}

/** Whether `dir` holds a package made for `arch` by bench-package with this module's settings. */
async function packageFits(dir: string, arch: string): Promise<boolean> {
  if (!existsSync(path.join(dir, 'manifest.json'))) return false;
  const manifest = JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8')) as {
    members?: unknown[]; benchmark?: { arch?: string; seed?: number };
  };
  return manifest.benchmark?.arch === arch && manifest.benchmark?.seed === SEED && manifest.members?.length === MEMBERS;
}

/** `dir` once the service's own validator accepts it (the same check redserve makes at load). */
async function checked(dir: string, arch: string): Promise<string> {
  try {
    await readPackage(dir);
  } catch (err) {
    throw new SetupError(`workload ${arch}: ${path.relative(ROOT, dir)} is not a valid package (remove it to generate it again): ${(err as Error).message}`);
  }
  return dir;
}

function generated(arch: string): Workload {
  const dir = path.join(PACKAGES_DIR, `${arch}-x${MEMBERS}`);
  return {
    name: arch,
    httpBound: false,
    description: `${arch}, ${MEMBERS} members with random weights (seed ${SEED}), input 3x32x32, 10 classes; bench/.packages/${path.basename(dir)}`,
    async resolve(log) {
      if (await packageFits(dir, arch)) return checked(dir, arch);
      if (!existsSync(PYTHON)) throw new SetupError(`workload ${arch}: .venv is missing; run scripts/setup.sh first (redtrain bench-package writes the package)`);
      // Written beside its final place and renamed when complete, so an interrupted run leaves no
      // package that a later run would take for finished.
      const partial = `${dir}.partial-${process.pid}`;
      await rm(partial, { recursive: true, force: true });
      await mkdir(PACKAGES_DIR, { recursive: true });
      const args = benchPackageArgs(arch, partial);
      log(`generating the ${arch} workload: .venv/bin/python ${args.join(' ')}`);
      try {
        // This checkout's training package first, whichever checkout .venv was installed from.
        execFileSync(PYTHON, args, {
          cwd: ROOT, stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8',
          env: { ...process.env, PYTHONPATH: [path.join(ROOT, 'training'), process.env.PYTHONPATH].filter(Boolean).join(path.delimiter) },
        });
      } catch (err) {
        await rm(partial, { recursive: true, force: true });
        const e = err as { status?: number | null; stderr?: string; message: string };
        const tail = (e.stderr ?? '').trim().split('\n').slice(-8).join('\n');
        throw new SetupError(`workload ${arch}: generating its package failed (${e.status == null ? e.message : `exit ${e.status}`}).\n`
          + `  command: .venv/bin/python ${args.join(' ')}\n`
          + `  (needs redtrain's bench-package command; pass --workloads fmnist to run without this workload)\n${tail}`);
      }
      if (!(await packageFits(partial, arch))) {
        throw new SetupError(`workload ${arch}: ${path.relative(ROOT, partial)} has no manifest.json with benchmark.arch '${arch}', seed ${SEED} and ${MEMBERS} members`);
      }
      await rm(dir, { recursive: true, force: true });
      await rename(partial, dir);
      return checked(dir, arch);
    },
  };
}

export const WORKLOADS: readonly Workload[] = [
  {
    name: 'fmnist',
    httpBound: true,
    description: 'models/fmnist-baseline: small CNN members trained on Fashion-MNIST',
    resolve: async () => path.join(ROOT, 'models', 'fmnist-baseline'),
  },
  generated('resnet20'),
  generated('resnet18'),
];

/** The workloads named in a comma-separated list, in the list's order; an unknown name throws. */
export function pickWorkloads(list: string): Workload[] {
  return list.split(',').map((s) => s.trim()).filter(Boolean).map((name) => {
    const w = WORKLOADS.find((x) => x.name === name);
    if (!w) throw new Error(`--workloads: '${name}' is not one of ${WORKLOADS.map((x) => x.name).join(', ')}`);
    return w;
  });
}
