// The checks scripts/containers.sh runs against containers (run from the repository root):
//
//   golden   URL PKG_DIR ROUNDS            POST each golden image ROUNDS times to URL/classify: every
//                                          answer must be one member's golden probabilities
//   replicas URL PROJECT PKG_DIR           the replica test of test/deploy-replicas.test.ts, with
//                                          podman-compose's containers of PROJECT behind URL (nginx)
//   adapt    SRC DST PROBES_JSON           deploy/k8s/deployment.yaml -> what `podman kube play`
//                                          honours (each change printed) and the probes to run
//   probes   BASE_URL PROBES_JSON NAME     the manifest's startup, readiness and liveness probes
//   health   NAME WHAT                     the container's healthcheck (podman runs none by itself
//                                          here: its timers need systemd)
//
// Each prints its counts and exits 1 on the first failed check.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

const [mode, ...args] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let failures = 0;
function check(ok, what) {
  if (!ok) failures++;
  console.log(`   ${ok ? 'ok' : 'FAILED'}: ${what}`);
}
const podman = (...a) => execFileSync('podman', a, { encoding: 'utf8' }).trim();
const ipOf = (name) => podman('inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}', name).split(' ')[0];

function softmax(logits) {
  const max = Math.max(...logits);
  const e = logits.map((x) => Math.exp(x - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / sum);
}

async function classify(url, png) {
  const res = await fetch(`${url}/classify?topK=all`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: png });
  return { status: res.status, body: await res.json() };
}

/** Every answer is member k's golden probabilities for some k, within the package's atol. */
async function golden(url, dir, rounds) {
  const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  const { images } = JSON.parse(readFileSync(path.join(dir, manifest.golden.file), 'utf8'));
  const atol = manifest.golden.atol;
  const members = new Set();
  let answered = 0;
  let matched = 0;
  let worst = 0;
  for (let round = 0; round < rounds; round++) {
    for (const image of images) {
      const { status, body } = await classify(url, readFileSync(path.join(dir, image.file)));
      answered++;
      if (status !== 200) { check(false, `${image.file}: status ${status} ${JSON.stringify(body)}`); continue; }
      const probs = new Array(manifest.output.classes).fill(NaN);
      for (const p of body.predictions) probs[p.index] = p.probability;
      const errors = image.logits.map((l) => Math.max(...softmax(l).map((p, i) => Math.abs(p - probs[i]))));
      const best = errors.indexOf(Math.min(...errors));
      if (errors[best] <= atol) { matched++; members.add(best); worst = Math.max(worst, errors[best]); }
      else check(false, `${image.file}: no member's golden probabilities within ${atol} (closest ${errors[best].toExponential(2)})`);
    }
  }
  check(matched === answered, `${manifest.name} ${manifest.version}: ${matched} of ${answered} answers (${images.length} golden images x ${rounds}) `
    + `are a member's golden probabilities (max error ${worst.toExponential(1)}, atol ${atol}); members seen ${[...members].sort().join(',')} of ${image0Members(images)}`);
}
const image0Members = (images) => images[0].logits.length;

/** Classify through nginx, `concurrency` at a time, until stop(); statuses counted. */
function load(url, png, concurrency) {
  const counts = new Map();
  let running = true;
  const loops = Array.from({ length: concurrency }, async () => {
    while (running) {
      let key;
      try {
        const res = await fetch(`${url}/classify?topK=1`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: png });
        await res.arrayBuffer();
        key = res.status;
      } catch (err) {
        key = err.cause?.code ?? err.message;
      }
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  });
  return {
    counts,
    total: () => [...counts.values()].reduce((a, b) => a + b, 0),
    async stop() { running = false; await Promise.all(loops); return counts; },
  };
}
const statuses = (counts) => JSON.stringify(Object.fromEntries(counts));

async function replicas(url, project, dir) {
  const names = podman('ps', '--format', '{{.Names}}', '--filter', `label=io.podman.compose.project=${project}`,
    '--filter', 'label=com.docker.compose.service=redserve').split('\n').sort();
  const lb = `${project}_lb_1`;
  check(names.length === 3, `3 replicas running: ${names.join(', ')}`);
  const png = readFileSync(path.join(dir, 'golden', '0.png'));
  /** /classify 200s a replica has answered, from its metrics port (9464, on the compose network). */
  const served = async (name) => {
    try {
      const text = await (await fetch(`http://${ipOf(name)}:9464/metrics`)).text();
      const m = /^redserve_http_requests_total\{[^}]*route="\/classify"[^}]*status="200"[^}]*\} (\S+)$/m.exec(text);
      return m ? Number(m[1]) : 0;
    } catch {
      return NaN;
    }
  };
  /** nginx's attempts log since line `from`: requests that needed a second upstream, and failures. */
  const attempts = (from) => {
    const lines = podman('exec', lb, 'cat', '/var/log/nginx/attempts.log').split('\n').filter(Boolean);
    const window = lines.slice(from);
    return { lines: lines.length, retried: window.filter((l) => l.includes(',')).length, failed: window.filter((l) => !l.startsWith('200 ')).length };
  };

  // 1. spread
  const before = await Promise.all(names.map(served));
  let l = load(url, png, 4);
  while (l.total() < 90) await sleep(50);
  let counts = await l.stop();
  const per = (await Promise.all(names.map(served))).map((a, i) => a - before[i]);
  console.log(`   spread: ${l.total()} requests, statuses ${statuses(counts)}, per replica ${per.join(' / ')}`);
  check([...counts.keys()].join() === '200', 'every request answered 200');
  check(per.every((n) => n >= l.total() / 6), 'each replica answered at least a sixth');

  // 2. SIGKILL under load: nginx retries on another replica what the killed one could not finish.
  let from = attempts(0).lines;
  l = load(url, png, 4);
  while (l.total() < 20) await sleep(20);
  const atKill = l.total();
  podman('kill', '--signal', 'KILL', names[0]);
  while (l.total() < atKill + 90) await sleep(20);
  counts = await l.stop();
  let log = attempts(from);
  const restarts = podman('inspect', '-f', '{{.RestartCount}}', names[0]);
  console.log(`   SIGKILL (podman kill -s KILL ${names[0]}): ${l.total()} requests (${atKill} before the kill), statuses ${statuses(counts)}, `
    + `${log.retried} retried on another replica by nginx, ${log.failed} failed; restarted by podman (restart: unless-stopped) ${restarts} time(s)`);
  check([...counts.keys()].join() === '200', 'no request failed');
  check(log.failed === 0, 'nginx answered every request 200');

  // 3. podman stop (SIGTERM) under load: the replica drains and exits 0; no request fails.
  from = attempts(0).lines;
  const survivorBefore = await served(names[2]);
  l = load(url, png, 4);
  while (l.total() < 20) await sleep(20);
  const atTerm = l.total();
  const grace = parseInt(YAML.parse(readFileSync('docker-compose.yml', 'utf8')).services.redserve.stop_grace_period, 10);
  const stop = spawn('podman', ['stop', '-t', String(grace), names[1]], { stdio: 'ignore' });
  const stopT0 = Date.now();
  await new Promise((r) => stop.on('exit', r));
  const stopS = (Date.now() - stopT0) / 1000;
  const atExit = l.total();
  while (l.total() < atExit + 30) await sleep(20);
  counts = await l.stop();
  log = attempts(from);
  const exitCode = podman('inspect', '-f', '{{.State.ExitCode}}', names[1]);
  const logs = execFileSync('podman', ['logs', names[1]], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const survivor = (await served(names[2])) - survivorBefore;
  console.log(`   SIGTERM (podman stop -t ${grace} ${names[1]}, ${stopS.toFixed(1)} s): ${l.total()} requests (${atTerm} before the signal, ${atExit - atTerm} while draining), `
    + `statuses ${statuses(counts)}, ${log.retried} retried by nginx, ${log.failed} failed; exit code ${exitCode}; the survivor answered ${survivor}`);
  check(/drained; exiting/.test(logs), 'the replica drained and exited by itself');
  check(exitCode === '0', 'exit code 0');
  check([...counts.keys()].join() === '200', 'no request failed');
  check(survivor > 0, 'the survivor served');
  const last = await classify(url, png);
  check(last.status === 200, 'still serving after the stop');
}

/**
 * A healthcheck as Docker judges it: unhealthy only after `retries` failures in a row. A try that
 * only ran out of time is run once more without the limit: each try starts a node process, which
 * on a loaded 2-core machine can take longer than the files' 3 s; that is reported, not hidden.
 */
function health(name, what) {
  const config = JSON.parse(podman('inspect', '-f', '{{json .Config.Healthcheck}}', name));
  const retries = config.Retries || 3;
  const timeoutS = (config.Timeout ?? 30e9) / 1e9;
  const test = config.Test.slice(1).join(' ');
  for (let i = 1; i <= retries; i++) {
    try {
      podman('healthcheck', 'run', name);
      check(true, `${name}: ${what} healthy (try ${i} of ${retries}, timeout ${timeoutS} s): ${test.slice(0, 60)}...`);
      return;
    } catch { /* another try */ }
  }
  const argv = config.Test[0] === 'CMD-SHELL' ? ['/bin/sh', '-c', config.Test[1]] : config.Test.slice(1);
  const t0 = Date.now();
  let ok = true;
  try { execFileSync('podman', ['exec', name, ...argv], { stdio: 'ignore' }); } catch { ok = false; }
  const s = ((Date.now() - t0) / 1000).toFixed(1);
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
  check(ok, `${name}: ${what} ${ok ? 'passes' : 'FAILS'} without a time limit (${s} s), `
    + `after ${retries} tries past its ${timeoutS} s timeout (load average ${load} on ${execFileSync('nproc', { encoding: 'utf8' }).trim()} cores)`);
  if (ok) console.log(`   warning: ${name}: the ${what} is slower than its timeout on this machine`);
}

/**
 * deploy/k8s/deployment.yaml -> a file `podman kube play` runs, changing only what podman cannot
 * honour, each change printed; and the probes, for `probes` to run (podman 4.3 runs none of them
 * by itself here: it has no readiness or startup probes, and its liveness healthcheck needs systemd's
 * timers).
 */
function adapt(src, dst, probesFile) {
  const docs = YAML.parseAllDocuments(readFileSync(src, 'utf8')).map((d) => d.toJS());
  const deployment = docs.find((d) => d.kind === 'Deployment');
  const adaptations = [];
  const pod = deployment.spec.template.spec;
  const [c] = pod.containers;
  // The image as built here: podman resolves the short name to localhost/ without a registry.
  if (!c.image.includes('/')) {
    adaptations.push(`image ${c.image} -> localhost/${c.image} (podman's name for a local image; no registry is reachable)`);
    c.image = `localhost/${c.image}`;
  }
  // podman kube play (4.3) publishes every containerPort on the host port of the same number, so a
  // second pod on this one host cannot bind 8080.
  if (deployment.spec.replicas > 1) {
    adaptations.push(`replicas ${deployment.spec.replicas} -> 1 (podman publishes each containerPort on the host: one pod per host)`);
    deployment.spec.replicas = 1;
  }
  if (c.imagePullPolicy !== 'Never') {
    adaptations.push(`imagePullPolicy ${c.imagePullPolicy} -> Never (no registry is reachable)`);
    c.imagePullPolicy = 'Never';
  }
  writeFileSync(dst, YAML.stringify(deployment));
  writeFileSync(probesFile, JSON.stringify({
    port: c.ports.find((p) => p.name === 'http').containerPort,
    replicas: deployment.spec.replicas,
    startupProbe: c.startupProbe, readinessProbe: c.readinessProbe, livenessProbe: c.livenessProbe,
  }));
  console.log(`   adaptations (${adaptations.length}):`);
  for (const a of adaptations) console.log(`   - ${a}`);
}

async function probes(base, probesFile, name) {
  const p = JSON.parse(readFileSync(probesFile, 'utf8'));
  const get = async (probe) => {
    try {
      const res = await fetch(`${base}:${p.port}${probe.httpGet.path}`, { signal: AbortSignal.timeout((probe.timeoutSeconds ?? 1) * 1000) });
      await res.arrayBuffer();
      return res.status >= 200 && res.status < 400;
    } catch {
      return false;
    }
  };
  // startupProbe: success within failureThreshold x periodSeconds, as the kubelet would allow.
  const s = p.startupProbe;
  const t0 = Date.now();
  let tries = 0;
  let started = false;
  while (!started && tries < s.failureThreshold) {
    tries++;
    started = await get(s);
    if (!started) await sleep((s.periodSeconds ?? 10) * 1000);
  }
  check(started, `${name}: startupProbe ${s.httpGet.path} passed after ${tries} of ${s.failureThreshold} tries (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  for (const key of ['readinessProbe', 'livenessProbe']) {
    let passed = 0;
    for (let i = 0; i < 3; i++) passed += (await get(p[key])) ? 1 : 0;
    check(passed === 3, `${name}: ${key} ${p[key].httpGet.path} passed ${passed} of 3`);
  }
  // podman 4.3 makes a healthcheck of the livenessProbe that cannot pass: `curl -f
  // http://localhost:0/healthz` (a named port becomes 0; the image has no curl). The probe itself
  // is what the kubelet runs, above; podman's rendering is only reported.
  const made = podman('inspect', '-f', '{{if .Config.Healthcheck}}{{json .Config.Healthcheck.Test}}{{end}}', name);
  if (made) console.log(`   note: podman's healthcheck made from the livenessProbe, not run: ${made}`);
}

switch (mode) {
  case 'golden': await golden(args[0], args[1], Number(args[2])); break;
  case 'replicas': await replicas(args[0], args[1], args[2]); break;
  case 'adapt': adapt(args[0], args[1], args[2]); break;
  case 'probes': await probes(args[0], args[1], args[2]); break;
  case 'health': health(args[0], args[1]); break;
  default: console.error('usage: containers-check.mjs golden|replicas|adapt|probes ...'); process.exit(2);
}
process.exit(failures ? 1 : 0);
