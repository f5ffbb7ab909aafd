/**
 * Slow uploads (issue 15, defect 5): a client that trickles its body must not hold a --max-queue
 * slot, and gets 408 body_timeout after --body-timeout-ms. Real sockets, since the point is bytes
 * that have not arrived yet.
 */
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import { goldenOf, startApp, TINY } from '../helpers.js';

const golden = await goldenOf(TINY);
const goldenPng = await readFile(path.join(TINY, golden[0].file));

/** Open a connection, send `head` and the first bytes of a body, and collect whatever comes back. */
function trickle(port: number, head: string, first: Buffer) {
  const socket = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (c) => chunks.push(c));
  socket.on('error', () => undefined);
  const closed = new Promise<string>((resolve) => socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1'))));
  socket.write(head);
  socket.write(first);
  // One more byte now and then, as a slowloris client would (stops once the socket is gone).
  const timer = setInterval(() => { if (!socket.destroyed) socket.write('x'); }, 200);
  void closed.then(() => clearInterval(timer));
  return { closed, end: () => { clearInterval(timer); socket.destroy(); } };
}

t.test('clients trickling bodies hold no slot, and get 408 body_timeout; honest requests are served meanwhile', async (t) => {
  const app = await startApp({ workers: 1, maxQueue: 2, bodyTimeoutMs: 1500 });
  t.teardown(() => app.close());
  await app.server.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.server.address() as net.AddressInfo).port;

  const image = trickle(port, 'POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 4000\r\n\r\n', goldenPng.subarray(0, 10));
  const json = trickle(port, 'POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n', Buffer.from('{"images": ["'));
  const multipart = trickle(port, 'POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 4000\r\n\r\n',
    Buffer.from('--B\r\nContent-Disposition: form-data; name="a"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'));
  const v2 = trickle(port, 'POST /v2/models/tiny-ensemble/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n', Buffer.from('{"inputs": ['));
  t.teardown(() => [image, json, multipart, v2].forEach((c) => c.end()));
  await new Promise((r) => setTimeout(r, 300));

  // Four slow bodies against --max-queue 2: the slots are free, so honest requests get through.
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`http://127.0.0.1:${port}/classify`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: goldenPng });
    t.equal(res.status, 200, `honest request ${i} served while four bodies trickle`);
    await res.arrayBuffer();
  }
  t.equal(app.server.inflightRequests(), 0, 'no slot is held by a body still arriving');

  for (const [label, c] of [['image body', image], ['JSON body', json], ['multipart body', multipart], ['v2 body', v2]] as const) {
    const answer = await c.closed;
    t.match(answer, /^HTTP\/1\.1 408 /, `${label}: 408`);
    t.match(answer, /connection: close/i, `${label}: the connection is closed`);
    t.match(answer, /body_timeout/, `${label}: code body_timeout`);
    t.match(answer, /not received within 1500 ms \(--body-timeout-ms\)/, `${label}: names the limit and its flag`);
  }
  const after = await fetch(`http://127.0.0.1:${port}/classify`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: goldenPng });
  t.equal(after.status, 200, 'still serving');
  await after.arrayBuffer();
});
