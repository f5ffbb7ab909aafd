/** A gRPC client of the v2 service for the tests, from the same proto the server loads. */
import { credentials, loadPackageDefinition, Metadata, type Client, type GrpcObject, type ServiceClientConstructor, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { LOAD_OPTIONS, PREDICT_PROTO } from '../../src/grpc/proto.js';
import { startApp } from '../helpers.js';

const Service = (loadPackageDefinition(loadSync(PREDICT_PROTO, LOAD_OPTIONS)).inference as GrpcObject)
  .GRPCInferenceService as ServiceClientConstructor;

export interface Answer {
  response: any;
  /** Initial metadata the server sent. */
  headers: Metadata;
  status: StatusObject;
}

export interface Failure {
  error: ServiceError;
  status: StatusObject;
}

export class TestClient {
  readonly client: Client;

  constructor(port: number) {
    this.client = new Service(`127.0.0.1:${port}`, credentials.createInsecure(), { 'grpc.max_send_message_length': -1 });
  }

  /** Call `rpc`; resolves with the answer or the failure (never rejects). */
  call(rpc: string, request: object, metadata: Record<string, string> = {}, options: { deadlineMs?: number } = {}): Promise<Answer | Failure> {
    const md = new Metadata();
    for (const [k, v] of Object.entries(metadata)) md.set(k, v);
    return new Promise((resolve) => {
      let headers = new Metadata();
      let response: any;
      let error: ServiceError | null = null;
      const deadline = options.deadlineMs === undefined ? undefined : Date.now() + options.deadlineMs;
      const call = (this.client as any)[rpc](request, md, { deadline }, (err: ServiceError | null, res: any) => {
        error = err;
        response = res;
      });
      call.on('metadata', (m: Metadata) => { headers = m; });
      call.on('status', (status: StatusObject) => {
        // The callback runs before 'status' in grpc-js.
        setImmediate(() => resolve(error ? { error, status } : { response, headers, status }));
      });
    });
  }

  /** Call `rpc` and expect success. */
  async ok(rpc: string, request: object, metadata: Record<string, string> = {}): Promise<Answer> {
    const r = await this.call(rpc, request, metadata);
    if ('error' in r) throw new Error(`${rpc}: ${r.error.code} ${r.error.details}`);
    return r;
  }

  /** Call `rpc` and expect a failure. */
  async fails(rpc: string, request: object, metadata: Record<string, string> = {}): Promise<Failure> {
    const r = await this.call(rpc, request, metadata);
    if (!('error' in r)) throw new Error(`${rpc}: succeeded, a failure was expected`);
    return r;
  }

  close(): void {
    this.client.close();
  }
}

/** The app with its gRPC server listening on an ephemeral port, and a client of it. */
export async function startGrpc(overrides: Partial<Config> = {}): Promise<{ app: App; client: TestClient; port: number }> {
  const app = await startApp({ grpcPort: 0, ...overrides });
  const port = await app.grpcServer!.listen();
  const client = new TestClient(port);
  return { app, client, port };
}

/** little-endian float32 bytes */
export const f32Bytes = (values: ArrayLike<number>) => Buffer.from(Float32Array.from(values as number[]).buffer);
export const fromF32Bytes = (b: Buffer) => Array.from(new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length)));
