/**
 * The statistics extension is on the public port, so nothing in it may depend on which member
 * answered: with two images per request, the images drew one member or two, and the counts after
 * each request must move by the same amounts either way.
 */
import t from 'tap';
import { png, startApp } from '../helpers.js';

t.test('/v2/models/{name}/stats moves by the same amounts whichever members answered', async (t) => {
  const app = await startApp(); // random sampling over the tiny ensemble's members
  t.teardown(() => app.close());
  const name = (await app.server.inject({ url: '/models' })).json().name as string;
  const counts = async () => {
    const s = (await app.server.inject({ url: `/v2/models/${name}/stats` })).json().model_stats[0];
    const counters = Object.entries(s.inference_stats as Record<string, { count: number; ns: number }>)
      .map(([k, v]) => [k, v.count, k === 'success' ? 0 : v.ns]); // a request's own duration is its business
    return JSON.stringify([s.inference_count, s.execution_count, counters]);
  };
  const deltas = new Set<string>();
  let before = JSON.parse(await counts());
  for (let i = 0; i < 40; i++) {
    const images = [(await png(28, 28, 1, 3 * i)).toString('base64'), (await png(28, 28, 1, 3 * i + 1)).toString('base64')];
    const res = await app.server.inject({ method: 'POST', url: '/classify', payload: { images } });
    t.equal(res.statusCode, 200);
    const after = JSON.parse(await counts());
    const flat = (v: unknown): number[] => (Array.isArray(v) ? v.flatMap(flat) : typeof v === 'number' ? [v] : []);
    deltas.add(JSON.stringify(flat(after).map((x, k) => x - flat(before)[k])));
    before = after;
  }
  t.equal(deltas.size, 1, `one set of deltas for every request: ${[...deltas].join(' | ')}`);
  const [inferences, executions] = JSON.parse([...deltas][0]) as number[];
  t.equal(inferences, 2, 'inference_count: the two images answered');
  t.equal(executions, 1, 'execution_count: the one request answered');
});
