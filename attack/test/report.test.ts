import t from 'tap';
import { median, renderMarkdown, resultsTable, summarize, type ImageOutcome, type Report } from '../report.js';

const base: ImageOutcome = {
  image: 'x.png', label: 1, startCorrectVotes: 3, correctAtStart: true, stop: 'budget', queries: 100, anyHitQuery: null,
  verifyWrongVotes: 0, verified: false, linf: 0.1, attackLoss: 0.2, seconds: 1,
};
const outcomes: ImageOutcome[] = [
  { ...base, image: 'a', stop: 'success', queries: 10, anyHitQuery: 10, verifyWrongVotes: 3, verified: true },
  { ...base, image: 'b', stop: 'success', queries: 30, anyHitQuery: 30, verifyWrongVotes: 3, verified: true },
  { ...base, image: 'c', stop: 'success', queries: 50, anyHitQuery: 50, verifyWrongVotes: 1, verified: false },
  { ...base, image: 'd', stop: 'budget', queries: 100, anyHitQuery: 70, verifyWrongVotes: 0, verified: false },
  { ...base, image: 'e' },
  { ...base, image: 'f', startCorrectVotes: 0, correctAtStart: false, stop: 'not-attacked', queries: 0, verifyWrongVotes: null, linf: null },
  { ...base, image: 'g', stop: 'time', queries: 40, verifyWrongVotes: null },
];

t.test('median', async (t) => {
  t.equal(median([]), null);
  t.equal(median([3, 1, 2]), 2);
  t.equal(median([4, 1, 3, 2]), 2.5);
});

t.test('summaries count on images correct at start, under both definitions', async (t) => {
  const s = summarize(outcomes, 3);
  t.equal(s.images, 7);
  t.equal(s.correctAtStart, 6);
  t.equal(s.attacked, 5, 'the time-cut image is left out');
  t.equal(s.cutByTime, 1);
  t.same(s.verified, { successes: 2, rate: 2 / 5, meanQueries: 20, medianQueries: 20 });
  t.same(s.anyHit, { successes: 4, rate: 4 / 5, meanQueries: 40, medianQueries: 40 });
  t.equal(s.robustAccuracy, 3 / 6, '3 attacked and not broken, over 5 attacked + 1 wrong at start');
  t.same(s.requests, { attack: 10 + 30 + 50 + 100 + 100 + 0 + 40, verify: 5 * 3 });
  const empty = summarize([], 3);
  t.equal(empty.verified.rate, null);
  t.equal(empty.robustAccuracy, null);
});

t.test('the markdown report carries the command, the targets and the results table', async (t) => {
  const summary = summarize(outcomes, 3);
  const report: Report = {
    tool: 'redserve attack', command: 'npm run attack -- --url http://h:1', seed: 7, startedAt: '2025-01-01T00:00:00.000Z',
    finishedAt: '2025-01-01T00:01:00.000Z', seconds: 60,
    settings: { attacks: ['square'], eps: 0.1, queriesPerImage: 100, verify: 3, timeLimitSeconds: 60, pInit: 0.8, hsjGradQueries: 100, images: 7, imageSource: 'dir' },
    stoppedByTimeLimit: true,
    targets: [{
      url: 'http://h:1', models: { name: 'm', members: 5, sampling: 'random', input: {} as never, labels: [] },
      requests: { metadata: 1, start: 21, attack: 320, verify: 15, total: 357 },
    }],
    results: [{ target: 'http://h:1', model: 'm', sampling: 'random', attack: 'square', eot: 1, summary, images: outcomes }],
  };
  const md = renderMarkdown(report);
  t.match(md, /^# Query attacks over HTTP/);
  t.match(md, /command: `npm run attack -- --url http:\/\/h:1`/);
  t.match(md, /seed 7/);
  t.match(md, /stopped by the 60 s time limit/);
  t.match(md, /\| http:\/\/h:1 \| m \| {2}\| {2}\| 5 \| random \| {2}\| 1 \+ 21 \+ 320 \+ 15 = 357 \|/);
  const table = resultsTable(report.results);
  t.equal(table.split('\n').length, 3, 'header, rule, one row');
  t.match(table, /\| m \| random \| square \| 6\/7 \| 2\/5 = 40\.0% \(\+1 cut by time\) \| 4\/5 = 80\.0% \| 20 \/ 20 \| 40 \/ 40 \| 50\.0% \| 345 \|/);
  t.ok(md.includes(table), 'the markdown holds the table');
});
