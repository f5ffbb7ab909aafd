/**
 * src/http/json-body.ts: the JSON body parser of both scopes. A body that cannot hold a __proto__ or
 * constructor key (neither word, no backslash) is parsed with JSON.parse alone; every other body,
 * and every body JSON.parse refuses, goes to the guarded parser; the nesting bound comes first.
 * Then both scopes, over HTTP, refuse the poisoned keys plain and escaped.
 */
import t from 'tap';
import { InputError } from '../../src/errors.js';
import { boundedJsonParser, cannotPoison, type JsonParser } from '../../src/http/json-body.js';
import { MAX_JSON_DEPTH } from '../../src/http/json-depth.js';
import { startApp } from '../helpers.js';

/** A guarded parser that records what it was given and refuses it. */
function spy() {
  const seen: string[] = [];
  const guarded: JsonParser = (_req, text, done) => { seen.push(text); done(new Error('guarded parser refused it')); };
  return { seen, parse: boundedJsonParser(guarded) };
}
const run = (parse: JsonParser, text: string) => new Promise<{ err: Error | null; body?: unknown }>((resolve) => {
  parse({} as never, text, (err, body) => resolve({ err, body }));
});

t.test('which bodies can hold a poisoned key', async (t) => {
  t.ok(cannotPoison('{"inputs":[{"data":[1,2,3]}]}'));
  t.notOk(cannotPoison('{"__proto__":{}}'));
  t.notOk(cannotPoison('{"constructor":{"prototype":{}}}'));
  t.notOk(cannotPoison('{"\\u005f_proto__":{}}'), 'an escape could spell either word');
  t.notOk(cannotPoison('{"a":"\\n"}'), 'any backslash at all');
});

t.test('a plain body skips the guarded parser; a suspect or broken one goes to it', async (t) => {
  const { seen, parse } = spy();
  t.same(await run(parse, '{"a":[1,2.5e-3]}'), { err: null, body: { a: [1, 2.5e-3] } });
  t.same(seen, [], 'parsed without the guarded parser');
  for (const text of ['{"__proto__":{"x":1}}', '{"\\u005f_proto__":{"x":1}}', '{"constructor":{"prototype":{"x":1}}}', '{"a":"\\u0041"}', '{"a":[1,']) {
    const { err } = await run(parse, text);
    t.match(err?.message, /guarded parser refused it/, `${text}: the guarded parser decides`);
  }
  t.equal(seen.length, 5);
});

t.test('the nesting bound comes before any parser', async (t) => {
  const { seen, parse } = spy();
  const { err } = await run(parse, '['.repeat(MAX_JSON_DEPTH + 1) + ']'.repeat(MAX_JSON_DEPTH + 1));
  t.ok(err instanceof InputError && err.code === 'too_deep');
  t.same(seen, []);
});

t.test('both scopes refuse poisoned keys, plain and escaped, and take a plain body', async (t) => {
  const app = await startApp({ workers: 1 });
  t.teardown(() => app.close());
  const post = (url: string, payload: string) => app.server.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload });
  for (const url of ['/classify', '/v2/models/tiny-ensemble/infer']) {
    for (const payload of ['{"__proto__":{"x":1}}', '{"\\u005f_proto__":{"x":1}}', '{"constructor":{"prototype":{"x":1}}}']) {
      const r = await post(url, payload);
      t.equal(r.statusCode, 400, `${url} ${payload}: 400`);
      t.match(r.body, /not valid JSON/, 'named as invalid JSON');
    }
    const plain = await post(url, '{"unexpected": 1}');
    t.equal(plain.statusCode, 400, `${url}: a plain body is parsed and then validated`);
    t.notMatch(plain.body, /not valid JSON/);
  }
});
