import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { loadConfig } from '../src/config.js';

t.test('defaults', async (t) => {
  const c = loadConfig([], {});
  t.equal(c.port, 8080);
  t.match(c.modelDir, /models\/fmnist-baseline$/);
  t.same(c.device, { kind: 'auto' });
  t.same(c.sampling, { mode: 'random' });
  t.ok(Object.isFrozen(c));
  t.equal(c.metricsPort, 9464);
  t.equal(loadConfig(['--metrics-port', 'off'], {}).metricsPort, null);
  t.equal(loadConfig([], { REDSERVE_METRICS_PORT: '9100' }).metricsPort, 9100);
  t.equal(c.metricsHost, '127.0.0.1', 'metrics (per-member draw counts) on loopback unless asked');
  t.equal(loadConfig([], { REDSERVE_METRICS_HOST: '0.0.0.0' }).metricsHost, '0.0.0.0');
  t.equal(loadConfig(['--metrics-host', '10.1.2.3'], { REDSERVE_METRICS_HOST: '0.0.0.0' }).metricsHost, '10.1.2.3');
  t.throws(() => loadConfig([], { REDSERVE_METRICS_HOST: ' ' }), /--metrics-host: an empty address would bind every interface/);
  t.same([c.maxBatchImages, c.queueDelayUs], [64, 500], 'batching on by default, with a small delay');
  const off = loadConfig(['--max-batch-images', '1', '--queue-delay-us', '0'], { REDSERVE_QUEUE_DELAY_US: '900' });
  t.same([off.maxBatchImages, off.queueDelayUs], [1, 0]);
  t.equal(loadConfig([], { REDSERVE_QUEUE_DELAY_US: '900' }).queueDelayUs, 900);
  t.same([c.requestTimeoutMs, c.drainTimeoutMs], [30_000, 25_000]);
});

t.test('flags win over environment variables', async (t) => {
  const c = loadConfig(['--port', '9000', '--sampling', 'fixed:2', '--device', 'cuda:1'], { PORT: '7000', REDSERVE_SAMPLING: 'mean', REDSERVE_WORKERS: '3' });
  t.equal(c.port, 9000);
  t.same(c.sampling, { mode: 'fixed', member: 2 });
  t.same(c.device, { kind: 'cuda', id: 1 });
  t.equal(c.workers, 3);
  t.same(loadConfig([], { REDSERVE_DEVICE: 'cpu', REDSERVE_MODEL: '/x' }).device, { kind: 'cpu' });
  t.equal(loadConfig([], { REDSERVE_MODEL: '/x' }).modelDir, '/x');
});

t.test('bad values name the flag and the allowed range', async (t) => {
  t.throws(() => loadConfig(['--port', '70000'], {}), /--port: 70000 is out of range \[0, 65535\]/);
  t.throws(() => loadConfig(['--workers', 'two'], {}), /--workers: 'two' is not an integer/);
  t.throws(() => loadConfig(['--device', 'tpu'], {}), /--device: 'tpu' is not one of auto, cpu, cuda/);
  t.throws(() => loadConfig(['--sampling', 'fixed:x'], {}), /--sampling: 'fixed:x' is not one of random/);
  t.throws(() => loadConfig(['--colour', 'red'], {}), /Unknown option '--colour'/);
  t.throws(() => loadConfig([], { LOG_LEVEL: 'loud' }), /--log-level: 'loud'/);
});

t.test('API keys outside printable ASCII are refused at start-up, naming the key', async (t) => {
  const { mkdtemp, writeFile } = await import('node:fs/promises');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'redserve-keys-'));
  const file = path.join(dir, 'keys');
  await writeFile(file, 'an-ascii-key-0123456789\nschlüssel-0123456789abcdef\n');
  t.throws(() => loadConfig(['--api-key-file', file], {}),
    /--api-key-file: key 2 has a character outside printable ASCII \(0x21-0x7e\); a key in an HTTP header could never match it/);
  await writeFile(file, 'an-ascii-key-0123456789\n');
  t.equal(loadConfig(['--api-key-file', file], {}).apiKeySha256.length, 1, 'an ASCII key is accepted');
});

t.test('--max-request-pixels and --max-connections', async (t) => {
  const c = loadConfig([], {});
  t.same([c.maxRequestPixels, c.maxConnections], [2 * 4096 * 4096, 4096]);
  const set = loadConfig(['--max-request-pixels', '1000000'], { REDSERVE_MAX_CONNECTIONS: '64' });
  t.same([set.maxRequestPixels, set.maxConnections], [1_000_000, 64]);
  t.throws(() => loadConfig(['--max-connections', '0'], {}), /--max-connections: 0 is out of range \[1, 10000000\]/);
});

t.test('model repository, control and tracing flags: defaults, and refusals that name the flag', async (t) => {
  const d = loadConfig([], {});
  t.same([d.modelRepository, d.modelControl, d.repositoryPollS, d.maxModels, d.otlpEndpoint], [null, 'none', 15, 8, null]);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'redserve-repo-flag-'));
  const r = loadConfig(['--model-repository', dir, '--model-control', 'poll', '--repository-poll-s', '3'], { REDSERVE_MAX_MODELS: '2' });
  t.same([r.modelRepository, r.modelControl, r.repositoryPollS, r.maxModels], [dir, 'poll', 3, 2]);
  t.equal(loadConfig(['--otlp-endpoint', 'http://collector:4318/v1/traces'], {}).otlpEndpoint, 'http://collector:4318/v1/traces');
  t.throws(() => loadConfig(['--model', 'models/fmnist-baseline', '--model-repository', dir], {}), /--model and --model-repository: give one/);
  t.throws(() => loadConfig(['--model-control', 'explicit'], {}), /--model-control explicit: needs --model-repository/);
  t.throws(() => loadConfig(['--model-repository', dir, '--model-control', 'sometimes'], {}), /--model-control: 'sometimes' is not one of none, explicit, poll/);
  t.throws(() => loadConfig(['--model-repository', dir, '--repository-poll-s', '5'], {}), /--repository-poll-s: only with --model-control poll/);
  t.throws(() => loadConfig(['--model-repository', path.join(dir, 'missing')], {}), /--model-repository: .*missing is not a folder/);
  t.throws(() => loadConfig(['--max-models', '0'], {}), /--max-models: 0 is out of range \[1, 1024\]/);
  t.throws(() => loadConfig(['--otlp-endpoint', 'collector:4318'], {}), /--otlp-endpoint: 'collector:4318' is not an http or https URL|is not a URL/);
  t.throws(() => loadConfig(['--otlp-endpoint', 'ftp://x'], {}), /--otlp-endpoint: 'ftp:\/\/x' is not an http or https URL/);
});
