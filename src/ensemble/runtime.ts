/**
 * The only module that imports onnxruntime-node. It runs inside worker threads (see worker.ts):
 * `session.run` is synchronous underneath and would block the event loop of the HTTP thread.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import type { Device } from '../config.js';
import type { Manifest, MemberSource, TensorSlot } from './manifest.js';

export type Provider = 'cpu' | 'cuda';

export interface MemberSession {
  readonly inputName: string;
  readonly outputName: string;
  /** Logits [n, classes] for n images laid out as NCHW float32 in `data`. */
  run(data: Float32Array, n: number): Promise<Float32Array>;
  release(): Promise<void>;
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
function checkSignature(session: ort.InferenceSession, spec: SessionSpec, label: string): string[] {
  const problems: string[] = [];
  if (session.inputNames.length !== 1 || session.inputNames[0] !== spec.inputName) {
    problems.push(`${label}: inputs are [${session.inputNames.join(', ')}], the manifest says [${spec.inputName}]`);
  }
  if (session.outputNames.length !== 1 || session.outputNames[0] !== spec.outputName) {
    problems.push(`${label}: outputs are [${session.outputNames.join(', ')}], the manifest says [${spec.outputName}]`);
  }
  const meta = session.inputMetadata.find((m) => m.name === spec.inputName);
  if (meta && meta.isTensor) {
    const dims = meta.shape.slice(1);
    const fixedOk = dims.length === spec.shape.length && dims.every((d, i) => d === spec.shape[i]);
    if (!fixedOk) problems.push(`${label}: input shape is [${meta.shape.join(', ')}], the manifest says [batch, ${spec.shape.join(', ')}]`);
    if (meta.type !== 'float32') problems.push(`${label}: input type is ${meta.type}, expected float32`);
  }
  return problems;
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
  let session: ort.InferenceSession;
  let provider: Provider = device.kind === 'cpu' ? 'cpu' : 'cuda';
  let fallbackReason: string | undefined;
  if (device.kind === 'auto' && cudaProviderInstalled() === false) {
    provider = 'cpu';
    fallbackReason = CUDA_NOT_INSTALLED;
  }
  try {
    session = await ort.InferenceSession.create(bytes, withData(options(provider, device, threads)));
  } catch (err) {
    const reason = (err as Error).message.split('\n')[0].slice(0, 300);
    if (device.kind !== 'auto' || provider === 'cpu') throw new Error(`${label}: cannot create a ${provider} session: ${reason}`);
    provider = 'cpu';
    fallbackReason = reason;
    session = await ort.InferenceSession.create(bytes, withData(options('cpu', device, threads)));
  }
  const problems = checkSignature(session, spec, label);
  if (problems.length) {
    await session.release();
    throw new Error(problems.join('; '));
  }
  const [c, h, w] = spec.shape;
  const wrapped: MemberSession = {
    inputName: spec.inputName,
    outputName: spec.outputName,
    async run(data: Float32Array, n: number): Promise<Float32Array> {
      const input = new ort.Tensor('float32', data, [n, c, h, w]);
      const out = await session.run({ [spec.inputName]: input });
      const logits = out[spec.outputName];
      if (logits.type !== 'float32' || logits.dims.length !== 2 || logits.dims[0] !== n || logits.dims[1] !== spec.classes) {
        throw new Error(`${label}: output has shape [${logits.dims.join(', ')}], expected [${n}, ${spec.classes}]`);
      }
      return logits.data as Float32Array;
    },
    release: () => session.release(),
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
