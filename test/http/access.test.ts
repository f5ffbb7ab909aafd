/** Optional API keys and per-client rate limits: off by default; probes never need a key nor get throttled. */
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { loadConfig } from '../../src/config.js';
import { RateLimiter } from '../../src/http/access.js';
import { goldenOf, sha256Hex, startApp, TINY } from '../helpers.js';

const golden = await goldenOf(TINY);
const KEY = 'test-key-0123456789abcdef';
const OTHER = 'another-key-0123456789abcdef';
const infer = { inputs: [{ name: 'input', shape: [1, 1, 28, 28], datatype: 'FP32', data: golden[0].input }] };
const tensor = { tensors: [[Array.from({ length: 28 }, (_, y) => golden[0].input.slice(y * 28, y * 28 + 28))]] };

t.test('off by default: no key needed, no limit', async (t) => {
  const c = loadConfig([], {});
  t.same([c.apiKeySha256, c.rateLimit, c.trustProxy], [[], null, false]);
  const app = await startApp();
  t.teardown(() => app.close());
  for (let i = 0; i < 20; i++) t.equal((await app.server.inject({ method: 'POST', url: '/classify', payload: tensor })).statusCode, 200);
});

t.test('API keys: 401 with a challenge without a valid key; Bearer or X-API-Key works; probes and docs stay open', async (t) => {
  const app = await startApp({ apiKeySha256: [sha256Hex(KEY), sha256Hex(OTHER)] });
  t.teardown(() => app.close());
  const post = (headers: Record<string, string>, url = '/classify', payload: object = tensor) =>
    app.server.inject({ method: 'POST', url, headers, payload });
  const missing = await post({});
  t.same([missing.statusCode, missing.json().error], [401, 'unauthorized']);
  t.equal(missing.headers['www-authenticate'], 'Bearer realm="redserve"');
  t.match(missing.json().message, /Authorization: Bearer <key> or X-API-Key/);
  t.same([(await post({ authorization: 'Bearer wrong-key-0123456789' })).statusCode, (await post({ 'x-api-key': 'nope' })).statusCode], [401, 401]);
  t.equal((await post({ authorization: `Bearer ${KEY}` })).statusCode, 200, 'Bearer');
  t.equal((await post({ 'x-api-key': OTHER })).statusCode, 200, 'X-API-Key, second key');
  const v2 = await post({}, '/v2/models/tiny-ensemble/infer', infer);
  t.same([v2.statusCode, v2.json().code], [401, 'unauthorized'], 'v2 routes too, in the protocol\'s error shape');
  t.type(v2.json().error, 'string');
  t.equal((await post({ authorization: `Bearer ${KEY}` }, '/v2/models/tiny-ensemble/infer', infer)).statusCode, 200);
  t.equal((await app.server.inject({ url: '/models' })).statusCode, 401, 'model metadata needs a key');
  for (const url of ['/healthz', '/readyz', '/v2/health/live', '/v2/health/ready', '/docs/json']) {
    t.equal((await app.server.inject({ url })).statusCode, 200, `${url} is open`);
  }
});

t.test('rate limit: per client, 429 with Retry-After past the burst; probes are never limited', async (t) => {
  const app = await startApp({ rateLimit: { perSecond: 1, burst: 3 } });
  t.teardown(() => app.close());
  const post = (remoteAddress: string) => app.server.inject({ method: 'POST', url: '/classify', payload: tensor, remoteAddress });
  const first = await Promise.all([1, 2, 3, 4].map(() => post('10.0.0.1')));
  t.same(first.map((r) => r.statusCode), [200, 200, 200, 429]);
  const limited = first[3];
  t.equal(limited.json().error, 'rate_limited');
  t.equal(limited.headers['retry-after'], '1');
  t.match(limited.json().message, /1 requests\/s \(burst 3\)/);
  t.equal((await post('10.0.0.2')).statusCode, 200, 'another client has its own bucket');
  for (let i = 0; i < 10; i++) t.equal((await app.server.inject({ url: '/readyz', remoteAddress: '10.0.0.1' })).statusCode, 200);
});

t.test('behind a trusted proxy (--trust-proxy 1), clients are told apart by X-Forwarded-For', async (t) => {
  const app = await startApp({ rateLimit: { perSecond: 1, burst: 1 }, trustProxy: 1 });
  t.teardown(() => app.close());
  const post = (client: string) => app.server.inject({
    method: 'POST', url: '/classify', payload: tensor, remoteAddress: '172.18.0.2', headers: { 'x-forwarded-for': client },
  });
  t.same([(await post('198.51.100.1')).statusCode, (await post('198.51.100.2')).statusCode], [200, 200], 'two clients, one proxy');
  t.equal((await post('198.51.100.1')).statusCode, 429, 'the first client is limited');
});

t.test('RateLimiter: refills at the rate, caps at the burst, forgets the least recently seen client past maxClients', async (t) => {
  let now = 0;
  const rl = new RateLimiter(2, 3, 2, () => now);
  t.same([rl.take('a'), rl.take('a'), rl.take('a')], [0, 0, 0], 'the burst');
  t.equal(rl.take('a'), 0.5, 'then wait 1/rate');
  now = 500;
  t.equal(rl.take('a'), 0, 'one token after 500 ms at 2/s');
  now = 100_000;
  t.same([rl.take('a'), rl.take('a'), rl.take('a'), rl.take('a') > 0], [0, 0, 0, true], 'never more than the burst saved');
  rl.take('b');
  rl.take('c');
  t.equal(rl.clients, 2, 'bounded');
  t.equal(rl.take('a'), 0, '"a" was forgotten and starts with a full bucket');
});

t.test('config: key file, rate limit and trust proxy are parsed and checked', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'redserve-keys-'));
  const file = path.join(dir, 'keys');
  await writeFile(file, `# team A\n${KEY}\n\n${OTHER}\n`);
  const c = loadConfig(['--api-key-file', file, '--rate-limit', '50', '--trust-proxy', '10.0.0.0/8,127.0.0.1'], {});
  t.same(c.apiKeySha256, [sha256Hex(KEY), sha256Hex(OTHER)], 'digests, not keys, are kept');
  t.notOk(JSON.stringify(c).includes(KEY), 'the key itself is not in the config');
  t.same(c.rateLimit, { perSecond: 50, burst: 50 });
  t.same(c.trustProxy, ['10.0.0.0/8', '127.0.0.1']);
  t.same(loadConfig([], { REDSERVE_RATE_LIMIT: '5', REDSERVE_RATE_BURST: '20', REDSERVE_TRUST_PROXY: '1' }).rateLimit, { perSecond: 5, burst: 20 });
  t.equal(loadConfig([], { REDSERVE_TRUST_PROXY: '1' }).trustProxy, 1);
  await writeFile(path.join(dir, 'empty'), '# nothing\n');
  await writeFile(path.join(dir, 'short'), 'abc\n');
  t.throws(() => loadConfig(['--api-key-file', path.join(dir, 'missing')], {}), /--api-key-file: cannot read .*ENOENT/);
  t.throws(() => loadConfig(['--api-key-file', path.join(dir, 'empty')], {}), /holds no key/);
  t.throws(() => loadConfig(['--api-key-file', path.join(dir, 'short')], {}), /key 1 is shorter than 16 characters/);
  t.throws(() => loadConfig(['--rate-burst', '5'], {}), /--rate-burst: needs --rate-limit above 0/);
  t.throws(() => loadConfig(['--trust-proxy', 'everyone'], {}), /--trust-proxy: 'everyone' is not/);
});
