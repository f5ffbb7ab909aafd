/**
 * The sweep's "bare Fastify route" target (bench/sweep.ts): a Fastify server whose inference route
 * (any POST) reads the body and answers a constant, with no model, no workers and no decoding. What it serves
 * per second is the ceiling of any Fastify service on this machine with this load generator, so the
 * sweep can tell HTTP's share of redserve's cost from the model's.
 *
 *   node dist/bench/bare-server.js --port N --host ADDR
 */
import { parseArgs } from 'node:util';
import Fastify from 'fastify';

const { values } = parseArgs({ options: { port: { type: 'string', default: '0' }, host: { type: 'string', default: '127.0.0.1' } } });
const app = Fastify({ logger: false });
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
app.get('/readyz', async () => ({ status: 'ready' }));
app.post('/*', async () => ({ ok: true }));
await app.listen({ port: Number(values.port), host: values.host });
process.once('SIGTERM', () => { void app.close().then(() => process.exit(0)); });
