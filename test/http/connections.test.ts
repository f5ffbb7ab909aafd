/**
 * What is decided before Fastify builds a request (src/http/connections.ts): an inference request
 * while every admission slot is taken is refused at its headers, before its body is read; a
 * connection with too many pipelined requests unanswered is closed; connections past
 * --max-connections are closed at once.
 */
import { once } from 'node:events';
import net from 'node:net';
import t from 'tap';
import { MAX_PIPELINED_REQUESTS } from '../../src/http/connections.js';
import { png, startApp } from '../helpers.js';

/** Resolves with what the server sent, once the socket closes or `ms` pass (then `timedOut`). */
function collect(socket: net.Socket, ms: number, until?: (text: string) => boolean): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    let text = '';
    const done = (closed: boolean) => { clearTimeout(timer); socket.removeAllListeners('data'); resolve({ text, closed }); };
    const timer = setTimeout(() => done(false), ms);
    socket.on('data', (d) => { text += d.toString('latin1'); if (until?.(text)) done(false); });
    socket.once('close', () => done(true));
  });
}

async function connect(port: number): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  socket.on('error', () => undefined);
  return socket;
}

t.test('with every slot taken, an inference request gets 503 before its body is sent', async (t) => {
  const app = await startApp({ workers: 1, maxQueue: 1 });
  const ensemble = await app.modelReady;
  // Hold the one slot: this instance's classify waits until the test lets it go.
  let release!: () => void;
  const held = new Promise<void>((r) => { release = r; });
  const classify = ensemble.classify.bind(ensemble);
  ensemble.classify = async (...args) => { await held; return classify(...args); };
  t.teardown(async () => { release(); await app.close(); });
  await app.server.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.server.address() as net.AddressInfo).port;
  const holding = app.server.inject({ method: 'POST', url: '/classify', headers: { 'content-type': 'image/png' }, payload: await png(28, 28, 1) });
  while (app.server.inflightRequests() < 1) await new Promise((r) => setTimeout(r, 5));

  for (const [url, shape] of [['/classify', /"error":"overloaded"/], ['/v2/models/tiny-ensemble/infer', /"code":"overloaded"/]] as const) {
    const socket = await connect(port);
    // Headers and the first bytes of a 1 MB body: the rest never comes.
    socket.write(`POST ${url} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n\x89PNG`);
    const { text } = await collect(socket, 3000, (s) => s.includes('\r\n\r\n') && s.includes('}'));
    t.match(text, /^HTTP\/1\.1 503 /, `${url}: 503 while the body is still unsent`);
    t.match(text, /retry-after: 1/i);
    t.match(text, shape, `${url}: the scope's error shape`);
    t.match(text, /1 inference requests in flight \(the limit is 1\); retry shortly/, `${url}: the admission's own words`);
    socket.destroy();
  }
  release();
  t.equal((await holding).statusCode, 200, 'the admitted request is answered');
});

t.test('a connection that pipelines requests without reading the answers is closed; a few pipelined are served', async (t) => {
  const app = await startApp({ workers: 1 });
  t.teardown(() => app.close());
  await app.server.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.server.address() as net.AddressInfo).port;
  const get = 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n';

  const few = await connect(port);
  few.write(get.repeat(MAX_PIPELINED_REQUESTS));
  const answered = await collect(few, 3000, (s) => (s.match(/HTTP\/1\.1 200/g) ?? []).length === MAX_PIPELINED_REQUESTS);
  t.equal((answered.text.match(/HTTP\/1\.1 200/g) ?? []).length, MAX_PIPELINED_REQUESTS, `${MAX_PIPELINED_REQUESTS} pipelined requests are all answered`);
  few.destroy();

  const flood = await connect(port);
  flood.pause(); // never reads
  flood.write(get.repeat(3000));
  const closed = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 3000);
    flood.once('close', () => { clearTimeout(timer); resolve(true); });
  });
  t.ok(closed, '3000 pipelined requests never read: the server closes the connection');
  const health = await app.server.inject({ url: '/healthz' });
  t.equal(health.statusCode, 200, 'and keeps serving');
});

t.test('connections past --max-connections are closed at once', async (t) => {
  const app = await startApp({ workers: 1, maxConnections: 2 });
  t.teardown(() => app.close());
  await app.server.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.server.address() as net.AddressInfo).port;
  const kept = [await connect(port), await connect(port)];
  await new Promise((r) => setTimeout(r, 100));
  const extra = await connect(port);
  const { closed } = await collect(extra, 2000);
  t.ok(closed, 'the third connection is closed by the server');
  kept[0].write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  const { text } = await collect(kept[0], 3000, (s) => s.includes('"ok"'));
  t.match(text, /^HTTP\/1\.1 200 /, 'the first two are served');
  for (const s of [...kept, extra]) s.destroy();
});
