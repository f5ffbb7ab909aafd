/**
 * The only module that imports onnxruntime-node. It runs inside worker threads (see worker.ts):
 * `session.run` is synchronous underneath and would block the event loop of the HTTP thread.
 *
 * Member sessions call onnxruntime-node's native binding directly. Its public
 * `InferenceSession.run` defers each call with setImmediate and wraps it in promises and argument
 * checks; in a worker that has just woken from Atomics.wait that detour cost more per one-image run
 * than the hand-off between the threads (measurement: reports/2026-latency-history.md). The
 * worker has nothing else to do while a member runs, so the synchronous call blocks nothing. The
 * binding's path is internal to onnxruntime-node (`dist/binding`, pinned in package-lock.json): a
 * version that moves it fails every session at creation, which the test suite exercises.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import type { Binding } from 'onnxruntime-node/dist/binding.js';
import type { Device } from '../config.js';
import type { Manifest, MemberSource, TensorSlot } from './manifest.js';

const native = createRequire(import.meta.url)('onnxruntime-node/dist/binding') as
  typeof import('onnxruntime-node/dist/binding.js');

export type Provider = 'cpu' | 'cuda';

export interface MemberSession {
  readonly inputName: string;
  readonly outputName: string;
  /** Logits [n, classes] for n images laid out as NCHW float32 in `data` (synchronous: blocks the thread). */
  run(data: Float32Array, n: number): Float32Array;
  release(): void;
}

export interface SessionSpec {
  readonly inputName: string;
  readonly outputName: string;
  /** [C, H, W] */
  readonly shape: readonly number[];
  readonly classes: number;
}

/** What a member session is checked against, from the package's manifest. */
export function sessionSpec(manifest: Manifest): SessionSpec {
  return { inputName: manifest.input.name, outputName: manifest.output.name, shape: manifest.input.shape, classes: manifest.output.classes };
}

function options(provider: Provider, device: Device, threads: number): ort.InferenceSession.SessionOptions {
  const executionProviders: ort.InferenceSession.ExecutionProviderConfig[] =
    provider === 'cuda' ? [{ name: 'cuda', deviceId: device.kind === 'cuda' ? device.id : 0 }] : ['cpu'];
  // A failed CUDA attempt under `auto` is expected on CPU machines: keep onnxruntime's own log quiet
  // (severity 4 = fatal only); we log the fallback once, with its reason.
  const logSeverityLevel = provider === 'cuda' ? 4 : 2;
  return { executionProviders, intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', logSeverityLevel };
}

/** Check a session's declared input/output against the manifest; returns problems, one per mismatch. */
function checkSignature(session: Binding.InferenceSession, spec: SessionSpec, label: string): string[] {
  const problems: string[] = [];
  const inputs = session.inputMetadata.map((m) => m.name);
  const outputs = session.outputMetadata.map((m) => m.name);
  if (inputs.length !== 1 || inputs[0] !== spec.inputName) {
    problems.push(`${label}: inputs are [${inputs.join(', ')}], the manifest says [${spec.inputName}]`);
  }
  if (outputs.length !== 1 || outputs[0] !== spec.outputName) {
    problems.push(`${label}: outputs are [${outputs.join(', ')}], the manifest says [${spec.outputName}]`);
  }
  const meta = session.inputMetadata.find((m) => m.name === spec.inputName);
  if (meta && meta.isTensor) {
    // The binding reports a symbolic dimension as -1 (with its name in symbolicDimensions).
    const shown = meta.shape.map((d, i) => (d < 0 ? meta.symbolicDimensions[i] || '?' : d));
    const dims = meta.shape.slice(1);
    const fixedOk = dims.length === spec.shape.length && dims.every((d, i) => d === spec.shape[i]);
    if (!fixedOk) problems.push(`${label}: input shape is [${shown.join(', ')}], the manifest says [batch, ${spec.shape.join(', ')}]`);
    if (meta.type !== FLOAT32) problems.push(`${label}: input type is ${TYPE_NAMES[meta.type] ?? meta.type}, expected float32`);
  }
  return problems;
}

// The binding's element type codes (ONNX TensorProto.DataType).
const FLOAT32 = 1;
const TYPE_NAMES: Record<number, string> = { 1: 'float32', 2: 'uint8', 3: 'int8', 5: 'int16', 6: 'int32', 7: 'int64', 9: 'bool', 10: 'float16', 11: 'float64' };

/** A native session over `bytes` (throws what onnxruntime says when the model or an option is refused). */
function loadNative(bytes: Uint8Array, sessionOptions: ort.InferenceSession.SessionOptions): Binding.InferenceSession {
  native.initOrt();
  const session = new native.binding.InferenceSession();
  session.loadModel(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength, sessionOptions);
  return session;
}

export interface CreatedSession {
  readonly session: MemberSession;
  readonly provider: Provider;
  /** Set when `auto` fell back to the CPU: why CUDA could not be used. */
  readonly fallbackReason?: string;
}

/**
 * Whether onnxruntime-node's CUDA provider library is installed beside its binding (Linux; null when
 * that cannot be told here). The npm package ships the CPU build only; without the library, trying
 * CUDA makes onnxruntime print a native load error on stderr that no log level silences.
 */
export function cudaProviderInstalled(): boolean | null {
  if (process.platform !== 'linux') return null;
  try {
    const dist = path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node'));
    // The directory onnxruntime-node's own binding loader uses.
    const bin = path.join(dist, '..', 'bin', 'napi-v6', process.platform, process.arch);
    if (!existsSync(path.join(bin, 'onnxruntime_binding.node'))) return null;
    return existsSync(path.join(bin, 'libonnxruntime_providers_cuda.so'));
  } catch {
    return null;
  }
}

export const CUDA_NOT_INSTALLED = 'the CUDA execution provider is not installed in node_modules/onnxruntime-node '
  + '(the npm package ships the CPU build; see the README\'s GPU section)';

/**
 * Create a session for one member on the requested device. `auto` tries CUDA and falls back to the
 * CPU (reporting why); `cuda` fails when the CUDA execution provider cannot be created.
 */
export async function createSession(source: MemberSource, spec: SessionSpec, device: Device, threads: number,
  label: string): Promise<CreatedSession> {
  const bytes = source.model;
  const withData = (o: ort.InferenceSession.SessionOptions): ort.InferenceSession.SessionOptions =>
    (source.externalData ? { ...o, externalData: [source.externalData] } : o);
  // onnxruntime prints its own error when the CUDA provider library is missing, before any session
  // option applies; under `auto` that is the expected path on CPU machines, and we log the fallback.
  if (device.kind === 'auto') ort.env.logLevel = 'fatal';
  let session: Binding.InferenceSession;
  let provider: Provider = device.kind === 'cpu' ? 'cpu' : 'cuda';
  let fallbackReason: string | undefined;
  if (device.kind === 'auto' && cudaProviderInstalled() === false) {
    provider = 'cpu';
    fallbackReason = CUDA_NOT_INSTALLED;
  }
  try {
    session = loadNative(bytes, withData(options(provider, device, threads)));
  } catch (err) {
    const reason = (err as Error).message.split('\n')[0].slice(0, 300);
    if (device.kind !== 'auto' || provider === 'cpu') throw new Error(`${label}: cannot create a ${provider} session: ${reason}`);
    provider = 'cpu';
    fallbackReason = reason;
    session = loadNative(bytes, withData(options('cpu', device, threads)));
  }
  const problems = checkSignature(session, spec, label);
  if (problems.length) {
    session.dispose();
    throw new Error(problems.join('; '));
  }
  const [c, h, w] = spec.shape;
  const fetches = { [spec.outputName]: null };
  const runOptions = {};
  const wrapped: MemberSession = {
    inputName: spec.inputName,
    outputName: spec.outputName,
    run(data: Float32Array, n: number): Float32Array {
      const input = new ort.Tensor('float32', data, [n, c, h, w]);
      const logits = session.run({ [spec.inputName]: input }, fetches, runOptions)[spec.outputName] as ort.Tensor;
      if (logits.type !== 'float32' || logits.dims.length !== 2 || logits.dims[0] !== n || logits.dims[1] !== spec.classes) {
        throw new Error(`${label}: output has shape [${logits.dims.join(', ')}], expected [${n}, ${spec.classes}]`);
      }
      return logits.data as Float32Array;
    },
    release: () => session.dispose(),
  };
  return { session: wrapped, provider, fallbackReason };
}

/**
 * PS-RED: run the hypernetwork once per member and lay each member's generated tensors out as the
 * target's external-data file (`slots`: name, shape, byte range). Runs at start-up only. Throws an
 * error naming the tensor when the hypernetwork's outputs do not match the target's names or shapes.
 */
export async function generateMembers(hypernet: Uint8Array, inputName: string, members: number,
  slots: readonly TensorSlot[]): Promise<Uint8Array[]> {
  const session = await ort.InferenceSession.create(hypernet, { executionProviders: ['cpu'] });
  try {
    const missing = slots.filter((s) => !session.outputNames.includes(s.name)).map((s) => s.name);
    if (missing.length) throw new Error(`hypernet has no output for target tensor(s) ${missing.join(', ')}`);
    if (!session.inputNames.includes(inputName)) throw new Error(`hypernet has no input named ${inputName}`);
    const total = slots.reduce((n, s) => n + s.length, 0);
    const out: Uint8Array[] = [];
    for (let m = 0; m < members; m++) {
      const result = await session.run({ [inputName]: new ort.Tensor('int64', BigInt64Array.from([BigInt(m)]), [1]) });
      const buffer = new Uint8Array(total);
      for (const slot of slots) {
        const t = result[slot.name];
        if (t.type !== 'float32' || t.dims.length !== slot.shape.length || t.dims.some((d, i) => d !== slot.shape[i])) {
          throw new Error(`member ${m}: hypernet output ${slot.name} is ${t.type} [${t.dims.join(', ')}], `
            + `the target expects float32 [${slot.shape.join(', ')}]`);
        }
        const data = t.data as Float32Array;
        buffer.set(new Uint8Array(data.buffer, data.byteOffset, slot.length), slot.offset);
      }
      out.push(buffer);
    }
    return out;
  } finally {
    await session.release();
  }
}
