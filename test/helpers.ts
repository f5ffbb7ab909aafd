/** Shared test helpers: fixture packages, a test app, PNG builders. */
import { createHash } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { buildApp, type App } from '../src/app.js';
import { embeddedConfig, type Config } from '../src/config.js';
import type { GoldenImage, Manifest } from '../src/ensemble/manifest.js';

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
export const FIXTURES = path.join(ROOT, 'test', 'fixtures');
export const TINY = path.join(FIXTURES, 'tiny-ensemble');
export const TINY_SINGLE = path.join(FIXTURES, 'tiny-single');
export const SHIPPED = path.join(ROOT, 'models', 'fmnist-red');

/** The SHA-256 (hex) of an API key, as config.apiKeySha256 holds it. */
export const sha256Hex = (text: string): string => createHash('sha256').update(text, 'utf8').digest('hex');

export async function readJson<T>(file: string): Promise<T> {
  return JSON.parse(await readFile(file, 'utf8')) as T;
}

export const manifestOf = (dir: string) => readJson<Manifest>(path.join(dir, 'manifest.json'));
export const goldenOf = async (dir: string) => (await readJson<{ images: GoldenImage[] }>(path.join(dir, 'golden.json'))).images;

/** The service's defaults for an in-process server (one definition, in src/config.ts). */
export { embeddedConfig };

/** Build the app on a package and wait until it is ready. */
export async function startApp(overrides: Partial<Config> & { modelDir?: string } = {}): Promise<App> {
  const app = buildApp(embeddedConfig({ modelDir: TINY, ...overrides }), { logger: false });
  await app.modelReady;
  await app.server.ready();
  return app;
}

/** Copy a fixture package into a temp folder so a test can break it. */
export async function copyPackage(src = TINY): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'redserve-pkg-'));
  await cp(src, dir, { recursive: true });
  return dir;
}

/** Edit a copied package's manifest (and optionally keep sha256 values consistent yourself). */
export async function editManifest(dir: string, edit: (m: Record<string, any>) => void): Promise<void> {
  const file = path.join(dir, 'manifest.json');
  const m = await readJson<Record<string, any>>(file);
  edit(m);
  await writeFile(file, JSON.stringify(m, null, 2));
}

/** A model repository folder: tiny-ensemble at version 1.0.0 (a versioned folder), tiny-single unversioned. */
export async function makeRepository(): Promise<string> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'redserve-repo-'));
  await addVersion(root, '1.0.0');
  await cp(TINY_SINGLE, path.join(root, 'tiny-single'), { recursive: true });
  return root;
}

/** Add tiny-ensemble at `version` to a repository folder; resolves with the version's folder. */
export async function addVersion(root: string, version: string): Promise<string> {
  const dir = path.join(root, 'tiny-ensemble', version);
  await mkdir(path.dirname(dir), { recursive: true });
  await cp(TINY, dir, { recursive: true });
  await editManifest(dir, (m) => { m.version = version; });
  return dir;
}

export function softmax(logits: readonly number[]): number[] {
  const max = Math.max(...logits);
  const e = logits.map((v) => Math.exp(v - max));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

export async function png(width: number, height: number, channels: 1 | 3 | 4 = 3, fill = 128): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * channels, fill);
  return sharp(raw, { raw: { width, height, channels } }).png().toBuffer();
}

/** Chi-square statistic of observed counts against a uniform expectation. */
export function chiSquare(counts: readonly number[]): number {
  const total = counts.reduce((a, b) => a + b, 0);
  const expected = total / counts.length;
  return counts.reduce((s, c) => s + (c - expected) ** 2 / expected, 0);
}

/** Upper 0.1% critical values of chi-square for 1..9 degrees of freedom. */
export const CHI2_CRIT_0_001 = [0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88];

/** Prometheus text format -> { 'name{labels}': value }. */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

/** Sum of every sample of `name` whose labels include all of `labels`. */
export function sample(m: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  let found = false;
  for (const [key, v] of m) {
    const brace = key.indexOf('{');
    if ((brace < 0 ? key : key.slice(0, brace)) !== name) continue;
    if (!Object.entries(labels).every(([k, val]) => key.includes(`${k}="${val}"`))) continue;
    sum += v;
    found = true;
  }
  return found ? sum : Number.NaN;
}
