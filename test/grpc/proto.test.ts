/**
 * proto/grpc_predict_v2.proto against the descriptors Triton's and KServe's Python clients ship
 * (test/fixtures/grpc/descriptors.json, written by descriptors.py): every field a client knows in
 * a message we declare has our number, type and label, we declare no field Triton's proto lacks,
 * and every RPC we serve has the clients' request and response types.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { loadSync } from '@grpc/proto-loader';
import t from 'tap';
import { PREDICT_PROTO } from '../../src/grpc/proto.js';
import { FIXTURES } from '../helpers.js';

interface Field { number: number; type: string; repeated: boolean; message?: string }
interface ClientDescriptors {
  version: string; package: string; service: string;
  methods: Record<string, { input: string; output: string }>;
  messages: Record<string, Record<string, Field>>;
}

const clients = JSON.parse(await readFile(path.join(FIXTURES, 'grpc', 'descriptors.json'), 'utf8')) as Record<string, ClientDescriptors>;

/** protobufjs names a map's entry type after the field ("Parameters"), protoc adds "Entry". */
const shortName = (full: string) => full.slice(full.lastIndexOf('.') + 1).replace(/Entry$/, '');
const normalise = (full: string) => full.replace(/Entry$/, '').replace(/Entry\./g, '.');

interface DescriptorProto { name: string; field: { name: string; number: number; label: string; type: string; typeName: string }[]; nestedType: DescriptorProto[] }

const definition = loadSync(PREDICT_PROTO, { keepCase: true });
const ours = new Map<string, Record<string, Field>>();
function walk(desc: DescriptorProto, fullName: string): void {
  ours.set(fullName, Object.fromEntries(desc.field.map((f) => [f.name, {
    number: f.number, type: f.type.replace(/^TYPE_/, '').toLowerCase(), repeated: f.label === 'LABEL_REPEATED',
    ...(f.type === 'TYPE_MESSAGE' ? { message: shortName(f.typeName) } : {}),
  }])));
  for (const nested of desc.nestedType) walk(nested, `${fullName}.${nested.name}`);
}
for (const [name, def] of Object.entries(definition)) {
  if ('type' in def) walk((def as { type: DescriptorProto }).type, name);
}
const service = definition['inference.GRPCInferenceService'] as Record<string, { requestType: { type: { name: string } }; responseType: { type: { name: string } } }>;

t.ok(ours.size >= 20, `${ours.size} messages declared`);
for (const [client, d] of Object.entries(clients)) {
  t.test(`${client} ${d.version}`, async (t) => {
    t.equal(d.package, 'inference');
    t.equal(d.service, 'inference.GRPCInferenceService');
    for (const [rpc, m] of Object.entries(service)) {
      t.same({ input: `inference.${m.requestType.type.name}`, output: `inference.${m.responseType.type.name}` }, d.methods[rpc], `rpc ${rpc}`);
    }
    const theirs = new Map(Object.entries(d.messages).map(([name, fields]) => [normalise(name), fields]));
    for (const [name, fields] of ours) {
      const known = theirs.get(name);
      t.ok(known, `${client} has ${name}`);
      if (!known) continue;
      for (const [field, f] of Object.entries(known)) {
        const mine = fields[field];
        t.same(mine && { ...mine, ...(mine.message ? { message: mine.message } : {}) },
          { number: f.number, type: f.type, repeated: f.repeated, ...(f.message ? { message: shortName(f.message) } : {}) }, `${name}.${field}`);
      }
      if (client === 'tritonclient') t.same(Object.keys(fields).filter((k) => !(k in known)), [], `${name}: no field Triton lacks`);
    }
  });
}
