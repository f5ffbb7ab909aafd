import t from 'tap';
import { DEFAULTS, ENV_VARS, loadConfig, usage } from '../../src/config.js';

t.test('detection is off by default, with the measured defaults for its parameters', async (t) => {
  const d = loadConfig([], {}).detect;
  t.same(d, {
    mode: 'off', quantStep: DEFAULTS.detectQuantStep, window: DEFAULTS.detectWindow, hashes: DEFAULTS.detectHashes,
    threshold: DEFAULTS.detectThreshold, history: DEFAULTS.detectHistory, clients: DEFAULTS.detectClients,
    globalSize: DEFAULTS.detectGlobal, globalOwners: DEFAULTS.detectGlobalOwners, globalQuota: DEFAULTS.detectGlobalQuota, repeats: DEFAULTS.detectRepeats, cooldownS: DEFAULTS.detectCooldownS, header: false,
  });
  t.ok(Object.isFrozen(d));
});

t.test('flags and environment variables, flags winning', async (t) => {
  const d = loadConfig(['--detect', 'reject', '--detect-threshold', '20', '--detect-cooldown-s', '0'], {
    REDSERVE_DETECT: 'log', REDSERVE_DETECT_HASHES: '40', REDSERVE_DETECT_WINDOW: '12', REDSERVE_DETECT_QUANT_STEP: '32',
    REDSERVE_DETECT_HISTORY: '8', REDSERVE_DETECT_CLIENTS: '5', REDSERVE_DETECT_GLOBAL: '0', REDSERVE_DETECT_REPEATS: '1',
  }).detect;
  t.match(d, { mode: 'reject', threshold: 20, cooldownS: 0, hashes: 40, window: 12, quantStep: 32, history: 8, clients: 5, globalSize: 0, repeats: 1 });
  t.equal(loadConfig(['--detect', 'log', '--detect-header', 'on'], {}).detect.header, true);
  for (const env of ['REDSERVE_DETECT', 'REDSERVE_DETECT_THRESHOLD', 'REDSERVE_DETECT_COOLDOWN_S', 'REDSERVE_DETECT_HEADER']) {
    t.ok(ENV_VARS.includes(env), `${env} is listed`);
  }
  t.match(usage(), /--detect-threshold/);
});

t.test('bad values name the flag and the allowed range', async (t) => {
  t.throws(() => loadConfig(['--detect', 'block'], {}), /--detect: 'block' is not one of off, log, reject/);
  t.throws(() => loadConfig(['--detect-quant-step', '0'], {}), /--detect-quant-step: 0 is out of range \[1, 255\]/);
  t.throws(() => loadConfig(['--detect-hashes', '10', '--detect-threshold', '11'], {}), /--detect-threshold: 11 is out of range \[1, 10\]/);
  t.throws(() => loadConfig(['--detect-history', '0'], {}), /--detect-history: 0 is out of range/);
  t.throws(() => loadConfig(['--detect-header', 'yes'], {}), /--detect-header: 'yes' is not on or off/);
  t.throws(() => loadConfig(['--detect', 'reject', '--detect-header', 'on'], {}), /--detect-header: only with --detect log/);
});
