/**
 * Docker cannot run in CI here, so the deployment files are checked by reading them: the
 * Dockerfile, docker-compose.yml with its nginx load balancer, and the Kubernetes manifests must
 * agree with the code on ports, probe paths, environment variables, image names and timeouts. The
 * manifests are also validated against Kubernetes' own schemas (kubernetes-validate, from PyPI,
 * installed into .venv by scripts/setup.sh), and every documented response's content type is
 * checked against what the server sends. The compose topology itself runs in deploy-replicas.test.ts.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { promisify } from 'node:util';
import type { InjectOptions } from 'fastify';
import path from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import { DEFAULTS, ENV_VARS, loadConfig } from '../src/config.js';
import { RUNTIME_ENV } from '../src/runtime-env.js';
import { createServer } from '../src/app.js';
import { embeddedConfig } from '../src/config.js';
import { openapiDocument } from '../src/http/openapi-document.js';
import { unstartedRepository } from '../src/repository.js';
import { goldenOf, ROOT, startApp, TINY } from './helpers.js';

const read = (f: string) => readFile(path.join(ROOT, f), 'utf8');
const pkg = JSON.parse(await read('package.json')) as { version: string };
const IMAGE = `redserve:${pkg.version}`;
const paths = Object.keys(YAML.parse(await read('openapi.yaml')).paths as object);
/** Variables the runtime itself reads, beside the service's own. */
const OTHER_ENV = ['NODE_ENV', ...Object.keys(RUNTIME_ENV)];

t.test('Dockerfile: multi-stage, non-root, healthcheck on /readyz, ports, CUDA variant', async (t) => {
  const df = await read('Dockerfile');
  t.ok((df.match(/^FROM /gm) ?? []).length >= 2, 'multi-stage');
  t.match(df, /^USER node$/m, 'runs as the non-root node user');
  t.match(df, /^HEALTHCHECK .*\n.*\/readyz/m, 'healthcheck probes /readyz');
  t.ok(paths.includes('/readyz'), '/readyz is a route');
  t.match(df, new RegExp(`^EXPOSE ${DEFAULTS.port} ${DEFAULTS.metricsPort}$`, 'm'), 'exposes the service and metrics ports');
  t.match(df, /CMD \["node", "dist\/src\/server.js"\]/, 'starts the compiled server');
  t.match(df, /COPY package.json package-lock.json .npmrc/, 'installs with the project npm config (CUDA download skipped)');
  t.match(df, new RegExp(`REDSERVE_MODEL=/app/${DEFAULTS.modelDir}`), 'default model matches the code default');
  t.match(df, new RegExp(`REDSERVE_METRICS_PORT=${DEFAULTS.metricsPort}`));
  t.match(df, /REDSERVE_METRICS_HOST=0\.0\.0\.0/, 'metrics reachable from outside the container (the code default is loopback)');
  const envs = [...df.matchAll(/^\s*(?:ENV\s+)?([A-Z][A-Z0-9_]*)=\S+\s*\\?$/gm)].map((m) => m[1]);
  t.ok(envs.length >= 5, `ENV lines read: ${envs.join(', ')}`);
  for (const e of envs) t.ok(ENV_VARS.includes(e) || OTHER_ENV.includes(e), `${e} is read by the service`);
  t.match(df, /^\s*ORT_DISABLE_TELEMETRY=1\b/m, 'the image turns onnxruntime telemetry off');
  // CUDA variant: a build argument selects both the dependencies (with onnxruntime's CUDA
  // provider) and a runtime base that has the CUDA runtime and cuDNN.
  t.match(df, /^ARG VARIANT=cpu$/m);
  t.match(df, /^ARG CUDA_IMAGE=nvidia\/cuda:12\.[\d.]+-cudnn-runtime-/m, 'a CUDA 12 + cuDNN runtime base');
  t.match(df, /^FROM deps-\$\{VARIANT\} AS deps$/m);
  t.match(df, /^FROM base-\$\{VARIANT\} AS runtime$/m);
  t.match(df, /FROM build AS deps-cuda\n(#.*\n)*RUN .*ONNXRUNTIME_NODE_INSTALL=cuda12 node \.\/script\/install/, 'the cuda variant installs the CUDA provider');
  for (const v of ['cpu', 'cuda']) {
    t.match(df, new RegExp(`^FROM .* AS deps-${v}$`, 'm'));
    t.match(df, new RegExp(`^FROM .* AS base-${v}$`, 'm'));
  }
  const ignore = await read('.dockerignore');
  for (const p of ['node_modules', '.venv', 'runs']) t.match(ignore, new RegExp(`^${p.replace('.', '\\.')}$`, 'm'));
  t.match(ignore, /^attack$/m, 'the attack client is its own program, not part of the image');
  t.notMatch(df, /COPY attack/, 'nothing copies the attack client into the image');
  t.match(df, /^COPY docs\/model-format\.schema\.json \.\/docs\/$/m, 'the package format travels with the service');
  // scripts/containers.sh builds this file with a base made from Debian packages: the base is an
  // argument whose default stays the Node.js image for Docker users.
  t.match(df, /^ARG NODE_IMAGE=node:20-bookworm-slim$/m, 'the Node.js 20 image by default');
  t.match(df, /^FROM \$\{NODE_IMAGE\} AS build$/m, 'the build stage uses the base argument');
  t.match(df, /^FROM \$\{NODE_IMAGE\} AS base-cpu$/m, 'the CPU runtime uses the base argument');
  t.notMatch(df, /^COPY (test|bench) /m, 'only the service is compiled (tests and benchmarks import the attack client, not in the build context)');
});

t.test('docker-compose.yml: replicas behind an nginx load balancer, health checks, ports and env match the code', async (t) => {
  const compose = YAML.parse(await read('docker-compose.yml'));
  const svc = compose.services.redserve;
  t.equal(svc.image, IMAGE, 'image tagged with the package version');
  t.ok(svc.deploy.replicas >= 2, `${svc.deploy.replicas} replicas`);
  t.notOk(svc.ports, 'replicas publish no host port (they could not share one)');
  t.same(svc.expose.map(String), [String(DEFAULTS.port), String(DEFAULTS.metricsPort)]);
  t.match(svc.healthcheck.test.join(' '), new RegExp(`127\\.0\\.0\\.1:${DEFAULTS.port}/readyz`));
  t.equal(svc.environment.REDSERVE_SAMPLING, 'random');
  for (const e of Object.keys(svc.environment)) t.ok(ENV_VARS.includes(e) || OTHER_ENV.includes(e), `${e} is read by the service`);
  t.equal(svc.environment.ORT_DISABLE_TELEMETRY, '1', 'onnxruntime telemetry off');
  t.notMatch(String(svc.environment.REDSERVE_METRICS_HOST ?? '0.0.0.0'), /^127\./, 'metrics scrapeable on the compose network (the image binds them to 0.0.0.0)');
  const drainS = Number(svc.environment.REDSERVE_DRAIN_TIMEOUT_MS ?? DEFAULTS.drainTimeoutMs) / 1000;
  t.ok(parseInt(svc.stop_grace_period, 10) > drainS, `stop_grace_period ${svc.stop_grace_period} > drain ${drainS} s`);

  const lb = compose.services.lb;
  t.match(lb.image, /^nginx:1\.(2[89]|[3-9]\d)/, 'nginx >= 1.28 (upstream "resolve" in open-source nginx)');
  t.same(lb.ports, [`${DEFAULTS.port}:${DEFAULTS.port}`], 'the load balancer publishes the service port');
  t.same(lb.depends_on.redserve, { condition: 'service_healthy' });
  t.match(lb.healthcheck.test.join(' '), /\/readyz/);
  const mount = lb.volumes.find((v: string) => v.endsWith(':/etc/nginx/nginx.conf:ro'));
  t.ok(mount, 'mounts its config');

  const nginx = await read(mount.split(':')[0]);
  t.match(nginx, new RegExp(`server redserve:${DEFAULTS.port} resolve`), 'upstream: the service name and port, re-resolved');
  t.match(nginx, new RegExp(`listen ${DEFAULTS.port};`));
  const bodyMb = Number(/client_max_body_size (\d+)m;/.exec(nginx)![1]);
  t.ok(bodyMb * 1024 * 1024 >= DEFAULTS.maxBodyBytes, 'nginx lets bodies up to the service limit through');
  t.match(nginx, /proxy_next_upstream [^;]*http_503/, 'shed or draining replicas: try another');
  const readS = Number(/proxy_read_timeout (\d+)s;/.exec(nginx)![1]);
  t.ok(readS * 1000 > DEFAULTS.requestTimeoutMs, 'nginx waits longer than the inference deadline');
  t.match(nginx, /X-Forwarded-For/);
  t.equal(svc.environment.REDSERVE_TRUST_PROXY, '1', 'replicas trust exactly the one proxy hop');
});

t.test('Kubernetes manifests: Deployment with probes, Service, HPA, PDB agree with the code and each other', async (t) => {
  const dir = path.join('deploy', 'k8s');
  const files = (await readdir(path.join(ROOT, dir))).filter((f) => f.endsWith('.yaml')).sort();
  const docs = (await Promise.all(files.map(async (f) => YAML.parseAllDocuments(await read(path.join(dir, f))).map((d) => d.toJS())))).flat();
  const byKind = (kind: string) => docs.filter((d) => d.kind === kind);
  t.same(byKind('Deployment').length, 1);
  const deploy = byKind('Deployment')[0];
  const pod = deploy.spec.template;
  t.same(deploy.spec.selector.matchLabels, pod.metadata.labels, 'the selector picks the pods');
  const [c] = pod.spec.containers;
  t.equal(c.image, IMAGE, 'image name and tag');
  const ports = Object.fromEntries(c.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]));
  t.same(ports, { http: DEFAULTS.port, metrics: DEFAULTS.metricsPort });
  for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    const get = c[probe].httpGet;
    t.ok(paths.includes(get.path), `${probe} ${get.path} is a route`);
    t.equal(get.port, 'http', `${probe} on the service port`);
  }
  t.equal(c.readinessProbe.httpGet.path, '/readyz');
  t.equal(c.livenessProbe.httpGet.path, '/healthz', 'liveness does not depend on the model');
  const env = Object.fromEntries(c.env.map((e: { name: string; value: string }) => [e.name, e.value]));
  for (const e of Object.keys(env)) t.ok(ENV_VARS.includes(e) || OTHER_ENV.includes(e), `${e} is read by the service`);
  t.equal(env.ORT_DISABLE_TELEMETRY, '1', 'onnxruntime telemetry off');
  t.notMatch(String(env.REDSERVE_METRICS_HOST ?? '0.0.0.0'), /^127\./, 'metrics scrapeable by the prometheus.io annotations (the image binds them to 0.0.0.0)');
  t.equal(env.REDSERVE_MODEL, `/app/${DEFAULTS.modelDir}`, 'a model shipped in the image');
  const preStopS = Number(c.lifecycle.preStop.exec.command[1]);
  const drainS = Number(env.REDSERVE_DRAIN_TIMEOUT_MS ?? DEFAULTS.drainTimeoutMs) / 1000;
  t.ok(pod.spec.terminationGracePeriodSeconds > preStopS + drainS,
    `grace ${pod.spec.terminationGracePeriodSeconds} s > preStop ${preStopS} s + drain ${drainS} s`);
  t.equal(Number(pod.metadata.annotations['prometheus.io/port']), DEFAULTS.metricsPort);
  t.equal(pod.metadata.annotations['prometheus.io/path'], '/metrics');
  t.equal(pod.spec.securityContext.runAsUser, 1000, 'the image\'s node user');
  t.equal(c.securityContext.readOnlyRootFilesystem, true);

  const [svc] = byKind('Service');
  t.same(svc.spec.selector, pod.metadata.labels, 'the Service selects the pods');
  for (const p of svc.spec.ports) t.ok(p.targetPort in ports, `Service port ${p.name} targets container port ${p.targetPort}`);
  const [hpa] = byKind('HorizontalPodAutoscaler');
  t.same(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: deploy.metadata.name });
  t.ok(hpa.spec.minReplicas >= 2 && hpa.spec.minReplicas <= hpa.spec.maxReplicas, 'at least 2 replicas, min <= max');
  t.ok(c.resources.requests.cpu, 'CPU requests set (the HPA scales on their utilisation)');
  const [pdb] = byKind('PodDisruptionBudget');
  t.same(pdb.spec.selector.matchLabels, pod.metadata.labels);

  const kustomization = docs.find((d) => d.kind === 'Kustomization');
  t.same([...kustomization.resources].sort(), files.filter((f) => f !== 'kustomization.yaml'), 'kustomization lists every manifest');
  t.same(kustomization.images, [{ name: 'redserve', newTag: pkg.version }]);
});

t.test('openapi.yaml is exactly what the routes generate (run `npm run openapi` after changing a route)', async (t) => {
  const committed = YAML.parse(await read('openapi.yaml'));
  const generated = YAML.parse(await openapiDocument());
  t.same(committed, generated);
  for (const p of ['/classify', '/healthz', '/readyz', '/models', '/v2', '/v2/health/live', '/v2/health/ready',
    '/v2/models/{name}', '/v2/models/{name}/ready', '/v2/models/{name}/infer', '/v2/models/{name}/versions/{version}/infer']) {
    t.ok(committed.paths[p], `documents ${p}`);
  }
  const content = committed.paths['/classify'].post.requestBody.content;
  for (const type of ['image/png', 'image/jpeg', 'image/webp', 'image/gif', 'image/tiff', 'multipart/form-data', 'application/json']) {
    t.ok(content[type], `documents ${type} bodies`);
  }
});

const validator = path.join(ROOT, '.venv', 'bin', 'kubernetes-validate');
const run = promisify(execFile);

t.test('Kubernetes manifests validate against the Kubernetes API schemas (kubernetes-validate --strict)', async (t) => {
  const dir = path.join(ROOT, 'deploy', 'k8s');
  const manifests = (await readdir(dir)).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').map((f) => path.join(dir, f));
  t.equal(manifests.length, 4, 'Deployment, Service, HPA, PDB');
  const ok = await run(validator, ['--strict', ...manifests]);
  for (const kind of ['deployment/redserve', 'service/redserve', 'horizontalpodautoscaler/redserve', 'poddisruptionbudget/redserve']) {
    t.match(ok.stdout, new RegExp(`passed for resource ${kind} against version`), `${kind} passes`);
  }
  // The validator can fail: a misspelt field (strict) and a string where the schema wants an integer.
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'redserve-k8s-'));
  const deployment = await read(path.join('deploy', 'k8s', 'deployment.yaml'));
  const cases: [string, string, RegExp][] = [
    ['misspelt field', deployment.replace(/^ {2}replicas: 2$/m, '  replica: 2'), /replica/],
    ['string port', deployment.replace('containerPort: 8080', 'containerPort: "8080"'), /containerPort: '8080' is not of type 'integer'/],
  ];
  for (const [label, text, message] of cases) {
    t.not(text, deployment, `${label}: the edit applies`);
    const file = path.join(tmp, `${label.replace(' ', '-')}.yaml`);
    await writeFile(file, text);
    const bad = await run(validator, ['--strict', file]).then(() => null, (e) => e as { code: number; stdout: string; stderr: string });
    t.ok(bad && bad.code !== 0, `${label}: rejected`);
    t.match(`${bad?.stdout}${bad?.stderr}`, message, `${label}: names the field`);
  }
});

t.test('every documented response content type is the one the server sends', async (t) => {
  const doc = YAML.parse(await read('openapi.yaml'));
  const app = await startApp({ sampling: { mode: 'fixed', member: 0 }, workers: 1 });
  const loading = createServer(embeddedConfig({ modelDir: TINY }), unstartedRepository(embeddedConfig({ modelDir: TINY })), { logger: false });
  t.teardown(async () => { await app.close(); await loading.close(); });
  const golden = await goldenOf(TINY);
  const png = await readFile(path.join(TINY, golden[0].file));
  const input = { name: 'input', shape: [1, 1, 28, 28], datatype: 'FP32', data: golden[0].input };
  const binaryHeader = Buffer.from(JSON.stringify({ inputs: [{ ...input, data: undefined, parameters: { binary_data_size: 3136 } }], parameters: { binary_data_output: true } }));
  type Req = { method: 'GET' | 'POST'; headers?: Record<string, string>; payload?: string | Buffer | object };
  const bodies: Record<string, Req[]> = {
    '/classify post': [{ method: 'POST', headers: { 'content-type': 'image/png' }, payload: png },
      { method: 'POST', headers: { 'content-type': 'image/png' }, payload: Buffer.from('not a png') }],
    '/v2/repository/index post': [{ method: 'POST' }],
    '/v2/models/{name}/infer post': [{ method: 'POST', payload: { inputs: [input] } },
      { method: 'POST', headers: { 'inference-header-content-length': String(binaryHeader.length) }, payload: Buffer.concat([binaryHeader, Buffer.from(new Float32Array(golden[0].input).buffer)]) },
      { method: 'POST', payload: { inputs: [] } }],
  };
  bodies['/v2/models/{name}/versions/{version}/infer post'] = bodies['/v2/models/{name}/infer post'];
  let checked = 0;
  for (const [route, ops] of Object.entries(doc.paths as Record<string, Record<string, { responses: Record<string, { content?: object }> }>>)) {
    for (const [method, op] of Object.entries(ops)) {
      const url = route.replace('{name}', 'tiny-ensemble').replace('{version}', '1.0.0');
      const requests = bodies[`${route} ${method}`] ?? [{ method: method.toUpperCase() as 'GET' }];
      for (const [server, label] of [[app.server, 'ready'], [loading, 'loading']] as const) {
        for (const r of requests) {
          const res = await server.inject({ url, ...r } as InjectOptions);
          const status = String(res.statusCode);
          const documented = op.responses[status] ?? op.responses[`${status[0]}XX`];
          if (!documented) {
            t.ok(label === 'loading' && res.statusCode === 503, `${method} ${route} (${label}): ${status} is documented`);
            continue;
          }
          const sent = String(res.headers['content-type'] ?? '').split(';')[0];
          const types = Object.keys(documented.content ?? {});
          t.ok(types.includes(sent), `${method} ${route} (${label}) ${status}: sends '${sent}', documented ${types.join(', ') || '(no body)'}`);
          checked++;
        }
      }
    }
  }
  t.ok(checked >= 40, `${checked} answers checked`);
});

/** Apply deploy/k8s-repository's patch to the base Deployment the way kustomize's strategic merge
 * does for the fields it touches: env by name ($patch: delete removes one), volumes by name,
 * volumeMounts by mountPath, resources merged key by key. */
function renderRepositoryOverlay(base: any, patch: any): any {
  const out = structuredClone(base);
  const byKey = (list: any[] = [], edits: any[] = [], key: string) => {
    const result = list.filter((item) => !edits.some((e) => e[key] === item[key] && e.$patch === 'delete'));
    for (const e of edits.filter((x) => x.$patch !== 'delete')) {
      const at = result.findIndex((item) => item[key] === e[key]);
      if (at >= 0) result[at] = { ...result[at], ...e };
      else result.push(e);
    }
    return result;
  };
  const [pc] = patch.spec.template.spec.containers;
  const c = out.spec.template.spec.containers.find((x: any) => x.name === pc.name);
  c.env = byKey(c.env, pc.env, 'name');
  c.volumeMounts = byKey(c.volumeMounts, pc.volumeMounts, 'mountPath');
  c.resources = { requests: { ...c.resources?.requests, ...pc.resources?.requests }, limits: { ...c.resources?.limits, ...pc.resources?.limits } };
  out.spec.template.spec.volumes = byKey(out.spec.template.spec.volumes, patch.spec.template.spec.volumes, 'name');
  return out;
}

t.test('deploy/k8s-repository: the base with a model volume in repository mode; the rendered Deployment validates', async (t) => {
  const dir = path.join('deploy', 'k8s-repository');
  const kustomization = YAML.parse(await read(path.join(dir, 'kustomization.yaml')));
  t.same(kustomization.resources, ['../k8s', 'pvc.yaml'], 'the base plus the claim');
  const patchFile = kustomization.patches[0].path;
  const patch = YAML.parse(await read(path.join(dir, patchFile)));
  t.same(kustomization.patches[0].target, { kind: 'Deployment', name: patch.metadata.name });
  const base = YAML.parse(await read(path.join('deploy', 'k8s', 'deployment.yaml')));
  t.equal(patch.metadata.name, base.metadata.name, 'the patch targets the base Deployment');
  const rendered = renderRepositoryOverlay(base, patch);
  const [c] = rendered.spec.template.spec.containers;
  const env = Object.fromEntries(c.env.map((e: { name: string; value: string }) => [e.name, e.value]));
  for (const e of Object.keys(env)) t.ok(ENV_VARS.includes(e) || OTHER_ENV.includes(e), `${e} is read by the service`);
  t.notOk('REDSERVE_MODEL' in env, '--model removed: the service refuses it beside --model-repository');
  // The service checks that the folder exists; here the volume's mount point stands in for it.
  const mounted = await mkdtemp(path.join(os.tmpdir(), 'redserve-models-'));
  const config = loadConfig([], { ...env, REDSERVE_MODEL_REPOSITORY: mounted });
  t.equal(config.modelRepository, mounted, 'the service reads the repository from REDSERVE_MODEL_REPOSITORY');
  t.equal(config.modelControl, 'poll', 'new version folders load on every replica by themselves');
  const mount = c.volumeMounts.find((m: { mountPath: string }) => m.mountPath === env.REDSERVE_MODEL_REPOSITORY);
  t.ok(mount?.readOnly, 'the repository is mounted read-only');
  const volume = rendered.spec.template.spec.volumes.find((v: { name: string }) => v.name === mount.name);
  const pvc = YAML.parse(await read(path.join(dir, 'pvc.yaml')));
  t.equal(volume.persistentVolumeClaim.claimName, pvc.metadata.name);
  t.same(pvc.spec.accessModes, ['ReadOnlyMany'], 'every replica mounts it');
  t.ok(c.readinessProbe && c.startupProbe, 'the base probes are kept');

  const tmp = await mkdtemp(path.join(os.tmpdir(), 'redserve-k8s-repo-'));
  const file = path.join(tmp, 'deployment.yaml');
  await writeFile(file, YAML.stringify(rendered));
  const ok = await run(validator, ['--strict', file, path.join(ROOT, dir, 'pvc.yaml')]);
  t.match(ok.stdout, /passed for resource deployment\/redserve against version/);
  t.match(ok.stdout, /passed for resource persistentvolumeclaim\/redserve-models against version/);
});
