/**
 * The model package contract (docs/model-format.md): types, a validator that reports every problem
 * at once, and `readPackage`, which also checks every file's sha256 and reads golden.json.
 *
 * The format itself is docs/model-format.schema.json, shared with the Python side
 * (training/redtrain/manifest.py), which words each violation the same way; both are tested on one
 * corpus of good and bad manifests (test/fixtures/manifests). What a schema cannot say is here:
 * relations between fields, file presence and sha256, and golden.json against the manifest.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
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

/** Marks a package made for benchmarks rather than trained; `randomWeights` packages carry no evaluation. */
export interface Benchmark {
  readonly randomWeights?: boolean;
  readonly arch?: string;
  readonly seed?: number;
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
  /** How the random draw weighs the members; uniform when absent (sampling.ts). */
  readonly sampling?: { readonly probabilities?: readonly number[] };
  readonly hypernet?: PsRedEntries['hypernet'];
  readonly target?: PsRedEntries['target'];
  readonly golden: { readonly file: string; readonly sha256: string; readonly atol: number };
  /** The run that trained it, or for `method: 'imported'` what it was imported from (`source`). */
  readonly training: Record<string, unknown>;
  /** Absent when the weights are random (`benchmark.randomWeights`), or in an imported package given no test set. */
  readonly evaluation?: Record<string, unknown>;
  readonly export: Record<string, unknown>;
  readonly benchmark?: Benchmark;
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

const SCHEMA_FILE = fileURLToPath(new URL('../../../docs/model-format.schema.json', import.meta.url));

/** The format, compiled once: reports every violation, with the failing subschema and value. */
let compiled: ValidateFunction | undefined;
function schemaValidator(): ValidateFunction {
  compiled ??= new Ajv2020({ allErrors: true, verbose: true, strictTypes: false })
    .compile(JSON.parse(readFileSync(SCHEMA_FILE, 'utf8')) as object);
  return compiled;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isInt = (v: unknown): v is number => Number.isInteger(v);
const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
/** golden image paths may sit in one sub-folder (golden/0.png) but never leave the package. */
const isPackagePath = (v: unknown): v is string =>
  typeof v === 'string' && v !== '' && !path.isAbsolute(v) && !v.split(/[\\/]/).some((p) => p === '..' || p === '');

/** A JSON pointer into `data` -> 'members[1].sha256' (array positions in brackets); the root is 'manifest'. */
function fieldPath(pointer: string, data: unknown): string {
  let out = '';
  let node = data;
  for (const raw of pointer.split('/').slice(1)) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    out += Array.isArray(node) ? `[${key}]` : out ? `.${key}` : key;
    node = (node as Record<string, unknown> | undefined)?.[key];
  }
  return out || 'manifest';
}

const child = (path: string, key: string) => (path === 'manifest' ? key : `${path}.${key}`);

/** A short rendering of a JSON value, the same in both languages (training/redtrain/manifest.py). */
function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'string') {
    const text = JSON.stringify(v);
    return text.length <= 42 ? text : `${text.slice(0, 40)}..."`;
  }
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `a list of ${v.length}`;
  return 'an object';
}

function problemOf(e: ErrorObject, data: unknown): string | null {
  const path = fieldPath(e.instancePath, data);
  if (e.keyword === 'required') return `${child(path, (e.params as { missingProperty: string }).missingProperty)}: missing`;
  if (e.keyword === 'additionalProperties') {
    return `${child(path, (e.params as { additionalProperty: string }).additionalProperty)}: unknown key`;
  }
  // 'if' only says that its 'then' failed; the failures themselves are reported.
  if (e.keyword === 'if') return null;
  const description = (e.parentSchema as { description?: string } | undefined)?.description
    ?? `a value that satisfies '${e.keyword}'`;
  if (e.keyword === 'not') return `${path}: ${description}`;
  return `${path}: expected ${description}, got ${describeValue(e.data)}`;
}

/** How far sampling.probabilities may sum from 1 (docs/model-format.md); the draw normalises by the sum. */
export const PROBABILITY_SUM_TOLERANCE = 1e-6;

/** What the schema cannot say: fields that must agree with each other. Each check runs only where
 * the fields it reads already have the schema's shape. */
function relations(m: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const inp = m.input;
  if (isObject(inp)) {
    const { shape, channels } = inp;
    const c = Array.isArray(shape) && shape.length === 3 && isInt(shape[0]) ? shape[0] : undefined;
    if (c !== undefined && (channels === 'gray' || channels === 'rgb') && c !== (channels === 'gray' ? 1 : 3)) {
      problems.push(`input.shape: C=${c} does not match channels '${channels}'`);
    }
    for (const key of ['mean', 'std'] as const) {
      const v = inp[key];
      if (c !== undefined && Array.isArray(v) && v.length !== c) problems.push(`input.${key}: ${v.length} values for C=${c}`);
    }
  }
  const classes = isObject(m.output) ? m.output.classes : undefined;
  if (isInt(classes) && Array.isArray(m.labels) && m.labels.length !== classes) {
    problems.push(`labels: ${m.labels.length} labels for ${classes} classes`);
  }
  const members = m.members;
  if (m.kind === 'ps-red' && Array.isArray(members)) {
    members.forEach((member: unknown, i) => {
      if (isObject(member) && isInt(member.index) && member.index !== i) {
        problems.push(`members[${i}].index: ${member.index}, expected ${i} (its position)`);
      }
    });
  }
  const tensors = m.kind === 'ps-red' && isObject(m.target) ? m.target.tensors : undefined;
  if (Array.isArray(tensors)) {
    let offset = 0;
    for (const [i, t] of tensors.entries()) {
      if (!(isObject(t) && Array.isArray(t.shape) && t.shape.every(isInt) && isInt(t.offset) && isInt(t.length))) break;
      const expected = 4 * (t.shape as number[]).reduce((a, b) => a * b, 1);
      if (t.length !== expected) problems.push(`target.tensors[${i}].length: ${t.length}, expected 4 * prod(shape) = ${expected}`);
      if (t.offset !== offset) problems.push(`target.tensors[${i}].offset: ${t.offset}, expected ${offset} (contiguous)`);
      offset = t.offset + t.length;
    }
  }
  const probabilities = isObject(m.sampling) ? m.sampling.probabilities : undefined;
  if (Array.isArray(probabilities) && probabilities.length > 0) {
    if (Array.isArray(members) && members.length > 0 && probabilities.length !== members.length) {
      problems.push(`sampling.probabilities: ${probabilities.length} values for ${members.length} members`);
    }
    if (probabilities.every(isNumber)) {
      // Summed left to right, as the Python validator does, so both get the same float64 and verdict.
      let sum = 0;
      for (const p of probabilities) sum += p;
      if (!(Math.abs(sum - 1) <= PROBABILITY_SUM_TOLERANCE)) {
        problems.push(`sampling.probabilities: sum ${describeValue(sum)}, expected 1 (within 1e-6)`);
      }
    }
  }
  const source = isObject(m.training) && m.training.method === 'imported' ? m.training.source : undefined;
  const files = isObject(source) ? source.files : undefined;
  if (Array.isArray(files) && files.length > 0 && Array.isArray(members) && members.length > 0 && files.length !== members.length) {
    problems.push(`training.source.files: ${files.length} files for ${members.length} members`);
  }
  const accuracies = isObject(m.evaluation) ? m.evaluation.memberAccuracy : undefined;
  if (Array.isArray(accuracies) && Array.isArray(members) && members.length > 0 && accuracies.length !== members.length) {
    problems.push(`evaluation.memberAccuracy: ${accuracies.length} values for ${members.length} members`);
  }
  return problems;
}

/**
 * Every way `m` departs from the format (docs/model-format.schema.json, plus the relations between
 * fields a schema cannot state), each naming its field, sorted; an empty list means valid.
 */
export function validateManifest(m: unknown): string[] {
  const validate = schemaValidator();
  validate(m);
  const problems = (validate.errors ?? []).map((e) => problemOf(e, m)).filter((p): p is string => p !== null);
  if (isObject(m)) problems.push(...relations(m));
  return [...new Set(problems)].sort();
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
