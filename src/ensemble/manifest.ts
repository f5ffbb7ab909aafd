/**
 * The model package contract (docs/model-format.md): types, a validator that reports every problem
 * at once, and `readPackage`, which also checks every file's sha256 and reads golden.json.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { PackageError } from '../errors.js';

export type Fit = 'fill' | 'contain' | 'cover';
export type Kernel = 'nearest' | 'linear' | 'cubic' | 'lanczos3';

export interface InputSpec {
  readonly name: string;
  /** [C, H, W]; the batch axis is dynamic and not listed. */
  readonly shape: readonly [number, number, number];
  readonly channels: 'gray' | 'rgb';
  readonly scale: number;
  readonly mean: readonly number[];
  readonly std: readonly number[];
  readonly resize: { readonly fit: Fit; readonly kernel: Kernel; readonly background: number };
}

export interface MemberFile {
  readonly file: string;
  readonly sha256: string;
  readonly parameters: number;
}

/** A generated tensor's place in the target's external-data file (kind ps-red). */
export interface TensorSlot {
  readonly name: string;
  readonly shape: readonly number[];
  /** Byte offset and length (float32, little-endian). */
  readonly offset: number;
  readonly length: number;
}

export interface PsRedEntries {
  readonly hypernet: { readonly file: string; readonly sha256: string; readonly input: string; readonly parameters: number };
  readonly target: { readonly file: string; readonly sha256: string; readonly externalData: string; readonly tensors: readonly TensorSlot[] };
}

export interface Manifest {
  readonly format: 'redserve-package';
  readonly formatVersion: 1;
  readonly name: string;
  readonly version: string;
  readonly kind: 'ensemble' | 'ps-red';
  readonly description?: string;
  readonly input: InputSpec;
  readonly output: { readonly name: string; readonly classes: number };
  readonly labels: readonly string[];
  /** kind ensemble: files; kind ps-red: `{ index, parameters }` (see `hypernet`, `target`). */
  readonly members: readonly MemberFile[];
  readonly hypernet?: PsRedEntries['hypernet'];
  readonly target?: PsRedEntries['target'];
  readonly golden: { readonly file: string; readonly sha256: string; readonly atol: number };
  readonly training: Record<string, unknown>;
  readonly evaluation: Record<string, unknown>;
  readonly export: Record<string, unknown>;
}

export interface GoldenImage {
  readonly file: string;
  readonly label: number;
  readonly input: readonly number[];
  readonly logits: readonly (readonly number[])[];
}

/** What a session is created from: ONNX bytes, plus generated initializer bytes for ps-red members. */
export interface MemberSource {
  readonly model: Uint8Array;
  readonly externalData?: { readonly path: string; readonly data: Uint8Array };
}

/** A package read from disk and checked. `members` holds one source per member for kind
 * ensemble; for kind ps-red it is empty until `materialise` (ensemble.ts) generates them. */
export interface ModelPackage {
  readonly dir: string;
  readonly manifest: Manifest;
  readonly members: readonly MemberSource[];
  readonly hypernetBytes?: Uint8Array;
  readonly targetBytes?: Uint8Array;
  readonly golden: readonly GoldenImage[];
}

const TOP_LEVEL = new Set([
  'format', 'formatVersion', 'name', 'version', 'kind', 'description', 'input', 'output', 'labels',
  'members', 'golden', 'training', 'evaluation', 'export', 'hypernet', 'target',
]);
const OPTIONAL = new Set(['description', 'hypernet', 'target']);
const NAME_RE = /^[a-z0-9][a-z0-9._-]*$/;
const SHA_RE = /^[0-9a-f]{64}$/;
const FITS: readonly string[] = ['fill', 'contain', 'cover'];
const KERNELS: readonly string[] = ['nearest', 'linear', 'cubic', 'lanczos3'];

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isPlainFile = (v: unknown): v is string =>
  typeof v === 'string' && v !== '' && !v.includes('/') && !v.includes('\\') && v !== '.' && v !== '..';
/** golden image paths may sit in one sub-folder (golden/0.png) but never leave the package. */
const isPackagePath = (v: unknown): v is string =>
  typeof v === 'string' && v !== '' && !path.isAbsolute(v) && !v.split(/[\\/]/).some((p) => p === '..' || p === '');

function checkInput(inp: unknown, problems: string[]): void {
  if (!isObject(inp)) {
    problems.push('input: expected an object');
    return;
  }
  if (typeof inp.name !== 'string' || inp.name === '') problems.push('input.name: expected a non-empty string');
  const shape = inp.shape;
  const shapeOk = Array.isArray(shape) && shape.length === 3 && shape.every((d) => Number.isInteger(d) && d > 0);
  if (!shapeOk) problems.push('input.shape: expected [C, H, W] of positive integers');
  const c = shapeOk ? (shape as number[])[0] : undefined;
  if (inp.channels !== 'gray' && inp.channels !== 'rgb') {
    problems.push(`input.channels: ${JSON.stringify(inp.channels)} is not 'gray' or 'rgb'`);
  } else if (c !== undefined && c !== (inp.channels === 'gray' ? 1 : 3)) {
    problems.push(`input.shape: C=${c} does not match channels '${inp.channels}'`);
  }
  if (!isNumber(inp.scale) || inp.scale <= 0) problems.push('input.scale: expected a positive number');
  for (const key of ['mean', 'std'] as const) {
    const v = inp[key];
    if (!Array.isArray(v) || !v.every(isNumber) || (c !== undefined && v.length !== c)) {
      problems.push(`input.${key}: expected ${c ?? 'C'} numbers`);
    } else if (key === 'std' && v.some((x) => x <= 0)) {
      problems.push('input.std: every value must be > 0');
    }
  }
  const r = inp.resize;
  if (!isObject(r)) {
    problems.push('input.resize: expected an object { fit, kernel, background }');
  } else {
    if (!FITS.includes(r.fit as string)) problems.push(`input.resize.fit: ${JSON.stringify(r.fit)} is not one of ${FITS.join(', ')}`);
    if (!KERNELS.includes(r.kernel as string)) {
      problems.push(`input.resize.kernel: ${JSON.stringify(r.kernel)} is not one of ${KERNELS.join(', ')}`);
    }
    if (!isNumber(r.background) || r.background < 0 || r.background > 255) {
      problems.push('input.resize.background: expected a number in [0, 255]');
    }
  }
  const unknown = Object.keys(inp).filter((k) => !['name', 'shape', 'channels', 'scale', 'mean', 'std', 'resize'].includes(k));
  if (unknown.length) problems.push(`input: unknown keys ${unknown.sort().join(', ')}`);
}

function checkPsRed(m: Record<string, unknown>, problems: string[]): void {
  (m.members as unknown[]).forEach((mem, i) => {
    if (!isObject(mem) || mem.index !== i) problems.push(`members[${i}]: expected { index: ${i}, parameters }`);
    else if (!(Number.isInteger(mem.parameters) && (mem.parameters as number) > 0)) {
      problems.push(`members[${i}].parameters: expected a positive integer`);
    }
  });
  for (const key of ['hypernet', 'target'] as const) {
    const e = m[key];
    if (!(isObject(e) && isPlainFile(e.file) && typeof e.sha256 === 'string' && SHA_RE.test(e.sha256))) {
      problems.push(`${key}: expected { file, sha256 (64 hex), ... }`);
    }
  }
  const h = m.hypernet;
  if (isObject(h) && !(typeof h.input === 'string' && h.input !== '')) problems.push('hypernet.input: expected the name of the member-index input');
  const tg = m.target;
  if (!isObject(tg)) return;
  if (!isPlainFile(tg.externalData)) problems.push('target.externalData: expected a plain file name');
  if (!Array.isArray(tg.tensors) || tg.tensors.length === 0) {
    problems.push('target.tensors: expected a non-empty list of { name, shape, offset, length }');
    return;
  }
  let offset = 0;
  tg.tensors.forEach((t: unknown, i: number) => {
    if (!(isObject(t) && typeof t.name === 'string' && Array.isArray(t.shape)
      && t.shape.every((d) => Number.isInteger(d) && d > 0) && Number.isInteger(t.offset) && Number.isInteger(t.length))) {
      problems.push(`target.tensors[${i}]: expected { name, shape, offset, length }`);
      return;
    }
    const expected = 4 * (t.shape as number[]).reduce((a, b) => a * b, 1);
    if (t.length !== expected) problems.push(`target.tensors[${i}] (${t.name}): length ${t.length} != 4 * prod(shape) = ${expected}`);
    if (t.offset !== offset) problems.push(`target.tensors[${i}] (${t.name}): offset ${t.offset}, expected ${offset} (contiguous)`);
    offset = (t.offset as number) + (t.length as number);
  });
}

/** Every way `m` departs from docs/model-format.md; an empty list means valid. */
export function validateManifest(m: unknown): string[] {
  if (!isObject(m)) return ['manifest: expected a JSON object'];
  const problems: string[] = [];
  for (const key of [...TOP_LEVEL].sort()) if (!OPTIONAL.has(key) && !(key in m)) problems.push(`${key}: missing`);
  for (const key of Object.keys(m).sort()) if (!TOP_LEVEL.has(key)) problems.push(`${key}: unknown key`);
  if ('format' in m && m.format !== 'redserve-package') {
    problems.push(`format: expected 'redserve-package', got ${JSON.stringify(m.format)}`);
  }
  if ('formatVersion' in m && m.formatVersion !== 1) problems.push(`formatVersion: expected 1, got ${JSON.stringify(m.formatVersion)}`);
  if ('name' in m && !(typeof m.name === 'string' && NAME_RE.test(m.name))) {
    problems.push(`name: ${JSON.stringify(m.name)} must match ${NAME_RE.source}`);
  }
  if ('version' in m && !(typeof m.version === 'string' && m.version !== '')) problems.push('version: expected a non-empty string');
  if ('kind' in m && m.kind !== 'ensemble' && m.kind !== 'ps-red') {
    problems.push(`kind: ${JSON.stringify(m.kind)} is not 'ensemble' or 'ps-red'`);
  }
  if ('input' in m) checkInput(m.input, problems);
  let classes: number | undefined;
  if ('output' in m) {
    const o = m.output;
    if (isObject(o) && typeof o.name === 'string' && Number.isInteger(o.classes) && (o.classes as number) > 0) {
      classes = o.classes as number;
    } else {
      problems.push('output: expected { name: string, classes: positive integer }');
    }
  }
  if ('labels' in m) {
    if (!Array.isArray(m.labels) || !m.labels.every((s) => typeof s === 'string')) {
      problems.push('labels: expected a list of strings');
    } else if (classes !== undefined && m.labels.length !== classes) {
      problems.push(`labels: ${m.labels.length} labels for ${classes} classes`);
    }
  }
  if ('members' in m) {
    if (!Array.isArray(m.members) || m.members.length === 0) {
      problems.push('members: expected a non-empty list');
    } else if (m.kind === 'ps-red') {
      checkPsRed(m, problems);
    } else if (m.kind === 'ensemble') {
      for (const key of ['hypernet', 'target']) if (key in m) problems.push(`${key}: only allowed in kind 'ps-red' packages`);
      m.members.forEach((mem: unknown, i: number) => {
        if (!isObject(mem)) {
          problems.push(`members[${i}]: expected an object`);
          return;
        }
        if (!isPlainFile(mem.file)) problems.push(`members[${i}].file: expected a plain file name in the package`);
        if (!(typeof mem.sha256 === 'string' && SHA_RE.test(mem.sha256))) {
          problems.push(`members[${i}].sha256: expected 64 lowercase hex digits`);
        }
        if (!(Number.isInteger(mem.parameters) && (mem.parameters as number) > 0)) {
          problems.push(`members[${i}].parameters: expected a positive integer`);
        }
      });
    }
  }
  if ('golden' in m) {
    const g = m.golden;
    if (!(isObject(g) && isPlainFile(g.file) && typeof g.sha256 === 'string' && SHA_RE.test(g.sha256) && isNumber(g.atol) && g.atol > 0)) {
      problems.push('golden: expected { file, sha256 (64 hex), atol > 0 }');
    }
  }
  for (const key of ['training', 'evaluation', 'export'] as const) {
    if (key in m && !isObject(m[key])) problems.push(`${key}: expected an object`);
  }
  if (isObject(m.training)) {
    for (const key of ['method', 'seed', 'dataset', 'commit']) if (!(key in m.training)) problems.push(`training.${key}: missing`);
  }
  if (isObject(m.export) && !(Number.isInteger(m.export.opset) && (m.export.opset as number) >= 17)) {
    problems.push('export.opset: expected an integer >= 17');
  }
  return problems;
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function checkGolden(raw: unknown, manifest: Manifest, problems: string[]): GoldenImage[] {
  const [c, h, w] = manifest.input.shape;
  if (!isObject(raw) || !Array.isArray(raw.images) || raw.images.length === 0) {
    problems.push(`${manifest.golden.file}: expected { images: [...] } with at least one image`);
    return [];
  }
  raw.images.forEach((img: unknown, i: number) => {
    const where = `${manifest.golden.file} images[${i}]`;
    if (!isObject(img)) {
      problems.push(`${where}: expected an object`);
      return;
    }
    if (!isPackagePath(img.file)) problems.push(`${where}.file: expected a path inside the package`);
    if (!Array.isArray(img.input) || img.input.length !== c * h * w || !img.input.every(isNumber)) {
      problems.push(`${where}.input: expected ${c * h * w} numbers (C*H*W)`);
    }
    const logits = img.logits;
    if (!Array.isArray(logits) || logits.length !== manifest.members.length
      || !logits.every((l) => Array.isArray(l) && l.length === manifest.output.classes && l.every(isNumber))) {
      problems.push(`${where}.logits: expected ${manifest.members.length} lists of ${manifest.output.classes} numbers`);
    }
  });
  return raw.images as GoldenImage[];
}

async function readOrNull(file: string): Promise<Buffer | null> {
  try {
    return await readFile(file);
  } catch {
    return null;
  }
}

/** Read and check a package folder; throws PackageError listing every problem found. */
export async function readPackage(dir: string): Promise<ModelPackage> {
  const manifestPath = path.join(dir, 'manifest.json');
  const text = await readOrNull(manifestPath);
  if (text === null) throw new PackageError(dir, [`manifest.json not found in ${dir}`]);
  let raw: unknown;
  try {
    raw = JSON.parse(text.toString('utf8'));
  } catch (err) {
    throw new PackageError(dir, [`manifest.json is not valid JSON: ${(err as Error).message}`]);
  }
  const problems = validateManifest(raw);
  if (problems.length) throw new PackageError(dir, problems);
  const manifest = raw as Manifest;

  const readChecked = async (where: string, file: string, digest: string): Promise<Uint8Array | undefined> => {
    const bytes = await readOrNull(path.join(dir, file));
    if (bytes === null) problems.push(`${where}: file ${file} not found`);
    else if (sha256(bytes) !== digest) problems.push(`${where}: sha256 of ${file} does not match the manifest`);
    else return bytes;
    return undefined;
  };
  const members: MemberSource[] = [];
  let hypernetBytes: Uint8Array | undefined;
  let targetBytes: Uint8Array | undefined;
  if (manifest.kind === 'ensemble') {
    for (const [i, member] of manifest.members.entries()) {
      const bytes = await readChecked(`members[${i}]`, member.file, member.sha256);
      if (bytes) members.push({ model: bytes });
    }
  } else {
    hypernetBytes = await readChecked('hypernet', manifest.hypernet!.file, manifest.hypernet!.sha256);
    targetBytes = await readChecked('target', manifest.target!.file, manifest.target!.sha256);
  }
  let golden: GoldenImage[] = [];
  const goldenBytes = await readOrNull(path.join(dir, manifest.golden.file));
  if (goldenBytes === null) {
    problems.push(`golden: file ${manifest.golden.file} not found`);
  } else if (sha256(goldenBytes) !== manifest.golden.sha256) {
    problems.push(`golden: sha256 of ${manifest.golden.file} does not match the manifest`);
  } else {
    try {
      golden = checkGolden(JSON.parse(goldenBytes.toString('utf8')), manifest, problems);
    } catch (err) {
      problems.push(`golden: ${manifest.golden.file} is not valid JSON: ${(err as Error).message}`);
    }
  }
  if (problems.length) throw new PackageError(dir, problems);
  return Object.freeze({ dir, manifest, members, hypernetBytes, targetBytes, golden });
}
