/**
 * deploy/kserve: the ServingRuntime and InferenceService validate against KServe's published CRD
 * schemas (the subset they use, committed as test/fixtures/kserve/crd-subset.json with its release
 * and commit; make-subset.mjs beside it regenerates it), with unknown fields rejected as
 * `kubectl apply --validate=strict` rejects them; and they agree with KServe's controller
 * constants, with each other and with the service (ports, paths, environment, package format).
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import t from 'tap';
import YAML from 'yaml';
import { DEFAULTS, ENV_VARS } from '../src/config.js';
import { RUNTIME_ENV } from '../src/runtime-env.js';
import { FIXTURES, readJson, ROOT } from './helpers.js';

type Schema = Record<string, any>;
interface Subset {
  source: { repository: string; tag: string; commit: string };
  schemas: Record<string, { source: string; apiVersion: string; schema: Schema }>;
  constants: Record<'protocolVersions' | 'storageUriPrefixes', { value: string[] }> & Record<'containerName' | 'modelMountPath', { value: string }>;
}
const subset = await readJson<Subset>(path.join(FIXTURES, 'kserve', 'crd-subset.json'));
const read = (f: string) => readFile(path.join(ROOT, f), 'utf8');
const pkg = JSON.parse(await read('package.json')) as { version: string };
const paths = Object.keys(YAML.parse(await read('openapi.yaml')).paths as object);

/**
 * A CRD's structural schema as JSON Schema: objects with listed properties take no others (strict
 * field validation), int-or-string is either, and a property the subset pruned must be absent.
 */
function toJsonSchema(s: Schema): Schema | boolean {
  if (s['x-redserve-pruned']) return false;
  const out: Schema = {};
  for (const [k, v] of Object.entries(s)) if (!k.startsWith('x-') && k !== 'nullable') out[k] = v;
  if (s['x-kubernetes-int-or-string']) { delete out.type; out.anyOf = [{ type: 'integer' }, { type: 'string' }]; }
  if (s.nullable && out.type) out.type = [out.type, 'null'];
  if (s.properties) out.properties = Object.fromEntries(Object.entries(s.properties as Record<string, Schema>).map(([k, v]) => [k, toJsonSchema(v)]));
  if (s.items) out.items = toJsonSchema(s.items);
  if (s.additionalProperties && typeof s.additionalProperties === 'object') out.additionalProperties = toJsonSchema(s.additionalProperties);
  if (s.type === 'object' && s.properties && !s['x-kubernetes-preserve-unknown-fields'] && !('additionalProperties' in s)) out.additionalProperties = false;
  return out;
}
const ajv = new Ajv({ strict: false, validateFormats: false, allErrors: true });
type Validator = ((data: unknown) => boolean) & { errors?: ErrorObject[] | null };
const validators: Record<string, Validator> = Object.fromEntries(Object.entries(subset.schemas).map(([kind, s]) => [kind, ajv.compile(toJsonSchema(s.schema) as Schema)]));
const describe = (errors: ErrorObject[] | null | undefined) => (errors ?? []).map((e) => {
  if (e.keyword === 'additionalProperties') return `${e.instancePath}: unknown field '${e.params.additionalProperty}'`;
  if (e.keyword === 'false schema') return `${e.instancePath}: a field the committed subset leaves out (run test/fixtures/kserve/make-subset.mjs)`;
  return `${e.instancePath}: ${e.message}`;
});
function validate(doc: Schema): string[] {
  const kind = subset.schemas[doc.kind];
  if (!kind) return [`kind ${doc.kind}: not in the subset`];
  const problems = doc.apiVersion === kind.apiVersion ? [] : [`apiVersion ${doc.apiVersion}: the CRD serves ${kind.apiVersion}`];
  return validators[doc.kind](doc) ? problems : [...problems, ...describe(validators[doc.kind].errors)];
}

const dir = path.join('deploy', 'kserve');
const files = (await readdir(path.join(ROOT, dir))).filter((f) => f.endsWith('.yaml')).sort();
const docs = (await Promise.all(files.map(async (f) => YAML.parseAllDocuments(await read(path.join(dir, f))).map((d) => d.toJS() as Schema)))).flat();
const runtime = docs.find((d) => d.kind === 'ServingRuntime')!;
const isvc = docs.find((d) => d.kind === 'InferenceService')!;

t.test(`deploy/kserve validates against KServe ${subset.source.tag}'s CRD schemas`, async (t) => {
  t.same(docs.map((d) => d.kind).sort(), ['InferenceService', 'ServingRuntime'], `${files.join(', ')}: one of each`);
  for (const doc of docs) t.same(validate(doc), [], `${doc.kind}/${doc.metadata.name} (${subset.schemas[doc.kind]?.source})`);
});

t.test('the validation rejects what KServe would: an unknown field, a wrong type, a missing required field', async (t) => {
  const edit = (doc: Schema, change: (d: Schema) => void) => { const copy = structuredClone(doc); change(copy); return validate(copy); };
  t.match(edit(isvc, (d) => { d.spec.predictor.model.storageURI = d.spec.predictor.model.storageUri; delete d.spec.predictor.model.storageUri; }),
    [/\/spec\/predictor\/model: unknown field 'storageURI'/], 'a misspelt field');
  t.match(edit(isvc, (d) => { d.spec.predictor.minReplicas = '2'; }), [/\/spec\/predictor\/minReplicas: must be integer/], 'a string for an integer');
  t.match(edit(runtime, (d) => { delete d.spec.containers; }), [/must have required property 'containers'/], 'required containers');
  t.match(edit(runtime, (d) => { d.spec.containers[0].ports[0].containerPort = '8080'; }), [/containerPort: must be integer/], 'a string port');
  t.match(edit(runtime, (d) => { d.spec.containers[0].workingDir = '/app'; }), [/workingDir: a field the committed subset leaves out/],
    'a field the subset pruned names the fix');
  t.match(edit(isvc, (d) => { d.apiVersion = 'serving.kserve.io/v1alpha1'; }), [/the CRD serves serving\.kserve\.io\/v1beta1/]);
});

t.test('the InferenceService uses the redserve runtime over the v2 protocol with a storageUri KServe downloads', async (t) => {
  const { constants } = subset;
  const model = isvc.spec.predictor.model;
  t.equal(model.runtime, runtime.metadata.name, 'names the ServingRuntime');
  t.equal(model.protocolVersion, 'v2', 'the Open Inference Protocol over REST');
  t.ok(constants.protocolVersions.value.includes(model.protocolVersion), `a protocol KServe knows (${constants.protocolVersions.value.join(', ')})`);
  t.ok(runtime.spec.protocolVersions.includes(model.protocolVersion), 'one the runtime declares');
  t.same(runtime.spec.protocolVersions, ['v2'], 'the runtime declares only what the service speaks');
  const format = runtime.spec.supportedModelFormats.find((f: Schema) => f.name === model.modelFormat.name && f.version === model.modelFormat.version);
  t.ok(format, `model format ${model.modelFormat.name}/${model.modelFormat.version} is one the runtime supports`);
  t.ok(constants.storageUriPrefixes.value.some((p) => model.storageUri.startsWith(p)), `storageUri ${model.storageUri}: a scheme KServe's storage initializer downloads`);
  t.ok(isvc.spec.predictor.minReplicas >= 2 && isvc.spec.predictor.minReplicas <= isvc.spec.predictor.maxReplicas, 'at least 2 replicas, min <= max');
  // The format names what models/ holds: every shipped package is one a runtime of this format serves.
  for (const name of await readdir(path.join(ROOT, 'models'))) {
    const m = await readJson<{ format: string; formatVersion: number }>(path.join(ROOT, 'models', name, 'manifest.json'));
    t.same([m.format, String(m.formatVersion)], [format.name, format.version], `models/${name} is ${format.name} version ${format.version}`);
  }
});

t.test('the runtime container agrees with the service: image, port, model path, probes, environment, metrics', async (t) => {
  const { constants } = subset;
  t.equal(runtime.spec.multiModel, false, 'one package per server');
  t.equal(runtime.spec.containers.length, 1);
  const [c] = runtime.spec.containers;
  t.equal(c.name, constants.containerName.value, 'the container KServe injects the model into');
  t.equal(c.image, `redserve:${pkg.version}`, 'image name and tag');
  t.same(c.ports.map((p: Schema) => p.containerPort), [DEFAULTS.port], 'one port (Knative routes to one): the service port');
  const env = Object.fromEntries(c.env.map((e: { name: string; value: string }) => [e.name, e.value]));
  t.equal(env.REDSERVE_MODEL, constants.modelMountPath.value, 'serves what the storage initializer downloaded');
  for (const e of Object.keys(env)) t.ok(ENV_VARS.includes(e) || e in RUNTIME_ENV, `${e} is read by the service`);
  for (const [name, value] of Object.entries(RUNTIME_ENV)) t.equal(env[name], value, `${name}=${value} as in the other deployment files`);
  for (const probe of ['readinessProbe', 'livenessProbe']) {
    t.ok(paths.includes(c[probe].httpGet.path), `${probe} ${c[probe].httpGet.path} is a route`);
    t.equal(c[probe].httpGet.port, DEFAULTS.port, `${probe} on the serving port (Knative allows no other)`);
  }
  t.match(c.readinessProbe.httpGet.path, /ready/, 'readiness waits for the model');
  t.match(c.livenessProbe.httpGet.path, /live/, 'liveness does not depend on the model');
  t.equal(c.securityContext.runAsUser, 1000, 'the image\'s node user');
  t.equal(c.securityContext.readOnlyRootFilesystem, true);
  t.equal(Number(runtime.spec.annotations['prometheus.kserve.io/port']), DEFAULTS.metricsPort, 'metrics scraped from the metrics port');
  t.equal(runtime.spec.annotations['prometheus.kserve.io/path'], '/metrics');
  t.equal(isvc.metadata.annotations['serving.kserve.io/enable-prometheus-scraping'], 'true');
});
