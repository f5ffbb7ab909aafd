/**
 * deploy/grafana/redserve.json: every PromQL query (panels and variables) names only series the
 * service exports, read from the service's own registry (src/metrics.ts, with the default process
 * and Node.js metrics it registers), and groups only by labels those series carry.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { Metrics } from '../src/metrics.js';
import { ROOT } from './helpers.js';

const dashboard = JSON.parse(await readFile(path.join(ROOT, 'deploy', 'grafana', 'redserve.json'), 'utf8'));

/** Every series name the service's registry exposes, with each metric's label names. */
const metrics = new Metrics({ models: () => [], inflightRequests: () => 0, ready: () => false });
const exported = new Map<string, readonly string[]>();
const families = new Map<string, string>();
for (const m of await metrics.registry.getMetricsAsJSON()) {
  const labels = (metrics.registry.getSingleMetric(m.name) as unknown as { labelNames?: string[] }).labelNames ?? [];
  const type = String(m.type);
  const series = type === 'histogram' ? ['_bucket', '_sum', '_count'] : type === 'summary' ? ['', '_sum', '_count'] : [''];
  for (const s of series) {
    exported.set(m.name + s, s === '_bucket' ? [...labels, 'le'] : labels);
    families.set(m.name + s, m.name);
  }
}
/** Labels Prometheus adds to every scraped series. */
const TARGET_LABELS = ['instance', 'job'];

const PROMQL_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset']);
/** The metric names in a PromQL expression: identifiers that are neither functions, keywords, label matchers nor durations. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '');
  return [...bare.matchAll(/(?<![\w.$])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()/g)].map((m) => m[1]).filter((w) => !PROMQL_WORDS.has(w));
}
/** Label names in `by (...)` groupings and `{...}` matchers. */
function labelNames(expr: string): string[] {
  const grouped = [...expr.matchAll(/\bby\s*\(([^)]*)\)/g)].flatMap((m) => m[1].split(',').map((s) => s.trim()));
  const matched = [...expr.matchAll(/\{([^}]*)\}/g)].flatMap((m) => [...m[1].matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)].map((l) => l[1]));
  return [...grouped, ...matched].filter(Boolean);
}

interface Panel { title: string; type: string; targets?: { expr: string; refId: string }[]; panels?: Panel[] }
const panels = (dashboard.panels as Panel[]).flatMap((p) => [p, ...(p.panels ?? [])]);
const queries = [
  ...panels.flatMap((p) => (p.targets ?? []).map((target) => ({ where: `panel '${p.title}' ${target.refId}`, expr: target.expr }))),
  ...(dashboard.templating.list as { name: string; type: string; query: { query: string } }[]).filter((v) => v.type === 'query')
    .map((v) => ({ where: `variable $${v.name}`, expr: v.query.query.replace(/^label_values\((.*),\s*(\w+)\)$/, '$1{$2=""}') })),
];

t.test('the metric-name reader finds what a query names', async (t) => {
  t.same(metricNames('histogram_quantile(0.95, sum by (le) (rate(a_bucket{instance=~"$instance", route="/x"}[$__rate_interval])))'), ['a_bucket']);
  t.same(metricNames('sum(rate(a_sum[5m])) / ignoring(member) group_left sum(b_total) > bool 0'), ['a_sum', 'b_total']);
  t.same(labelNames('sum by (route, status) (rate(x{instance=~"$i"}[1m]))'), ['route', 'status', 'instance']);
});

t.test('every dashboard query names a series the service exports, grouped by labels it carries', async (t) => {
  t.ok(queries.length >= 20, `${queries.length} queries`);
  const used = new Set<string>();
  for (const q of queries) {
    const names = metricNames(q.expr);
    t.ok(names.length > 0, `${q.where}: names a metric`);
    for (const name of names) {
      used.add(name);
      t.ok(exported.has(name), `${q.where}: ${name} is exported`);
      for (const label of labelNames(q.expr)) {
        t.ok([...(exported.get(name) ?? []), ...TARGET_LABELS].includes(label), `${q.where}: ${name} has label '${label}'`);
      }
    }
  }
  const service = [...new Set(families.values())].filter((n) => n.startsWith('redserve_'));
  const shown = new Set([...used].map((n) => families.get(n)));
  t.comment(`service metrics on the dashboard: ${service.filter((n) => shown.has(n)).length} of ${service.length}; `
    + `not shown: ${service.filter((n) => !shown.has(n)).join(', ') || 'none'}`);
});

t.test('the dashboard is importable: a uid, a Prometheus data source variable, ids and positions', async (t) => {
  t.equal(dashboard.uid, 'redserve');
  t.ok(dashboard.templating.list.some((v: { type: string; query: string }) => v.type === 'datasource' && v.query === 'prometheus'));
  const ids = panels.map((p) => (p as unknown as { id: number }).id);
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  for (const p of panels) {
    const g = (p as unknown as { gridPos: { w: number; x: number } }).gridPos;
    t.ok(g && g.x + g.w <= 24, `${p.title}: within the 24-column grid`);
    if (p.type !== 'row') t.ok((p.targets ?? []).every((q) => q.refId), `${p.title}: every query has a refId`);
  }
});
