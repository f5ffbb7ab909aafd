/**
 * The attack report: per image outcomes, per (target, attack) summaries, and the markdown rendering.
 *
 * Success is counted on images the target classified correctly at the start (the majority of R
 * fresh answers right), under two definitions:
 * - verified: the attack's final image (inside the eps ball) is wrong on the majority of R fresh
 *   answers; this is what a user of a randomised service would actually suffer;
 * - any-hit: at least one answer during the attack, for a point inside the eps ball, was wrong;
 *   the weak, optimistic-for-the-attacker definition that randomisation can make look very good or
 *   very bad.
 * Queries to success: verified counts the attack queries spent when it stopped; any-hit counts up to
 * and including the first wrong answer. Start checks and verification queries are counted apart.
 */
import type { ModelInfo } from './client.js';

export interface ImageOutcome {
  readonly image: string;
  readonly label: number;
  /** Right answers among the R start queries. */
  readonly startCorrectVotes: number;
  readonly correctAtStart: boolean;
  /** Why the attack stopped: its own success, budget, time, no starting point (HopSkipJump), or not run. */
  readonly stop: 'success' | 'budget' | 'time' | 'no-start' | 'not-attacked';
  /** Attack queries spent on this image (start and verification excluded). */
  readonly queries: number;
  /** 1-based query index of the first wrong answer inside the eps ball, or null. */
  readonly anyHitQuery: number | null;
  /** Wrong answers among the R verification queries of the final image, or null when not verified. */
  readonly verifyWrongVotes: number | null;
  readonly verified: boolean;
  /** Linf distance of the final image from the clean one (always <= eps). */
  readonly linf: number | null;
  /** The attack's own last loss: Square's margin, HopSkipJump's boundary distance. */
  readonly attackLoss: number | null;
  readonly seconds: number;
  /** Detection runs only: the attack query whose answer first carried the service's detection header, or null. */
  readonly detectedAtQuery?: number | null;
  /** Detection runs only: that header's value (reason, scope, the service's own query count). */
  readonly detectionHeader?: string | null;
  /** Adaptive attacks only: requests the service refused, and queries given up after too many refusals. */
  readonly refused?: number;
  readonly gaveUp?: number;
}

/** How a detecting service saw the attack runs of one row (detection runs only). */
export interface DetectionSummary {
  /** Attack runs (images attacked to the end). */
  readonly runs: number;
  /** Runs the service flagged during the attack. */
  readonly flagged: number;
  readonly medianQuery: number | null;
  readonly maxQuery: number | null;
  /** Runs verified-successful before their first flag (a reject service would not have stopped them). */
  readonly verifiedBeforeFlag: number;
  readonly refused: number;
}

export interface Rate {
  readonly successes: number;
  /** successes / attacked images that ran to completion; null when there are none. */
  readonly rate: number | null;
  readonly meanQueries: number | null;
  readonly medianQueries: number | null;
}

export interface Summary {
  readonly images: number;
  readonly correctAtStart: number;
  /** Attacks that ran to the end (success or budget), the denominator of the rates. */
  readonly attacked: number;
  /** Attacks cut by the time limit, excluded from the rates. */
  readonly cutByTime: number;
  readonly verified: Rate;
  readonly anyHit: Rate;
  /** Images correct at start and not verified-broken, over the images wrong at start or attacked to the end. */
  readonly robustAccuracy: number | null;
  readonly requests: { readonly attack: number; readonly verify: number };
  readonly detection?: DetectionSummary;
}

export interface AttackRow {
  readonly target: string;
  readonly model: string;
  readonly sampling: string;
  readonly attack: string;
  readonly eot: number;
  readonly summary: Summary;
  readonly images: readonly ImageOutcome[];
}

export interface TargetRecord {
  readonly url: string;
  /** GET /models as the target answered it. */
  readonly models: ModelInfo;
  /** The service the start checks and verifications went to, when not the target (--verify-url). */
  readonly verifier?: string;
  /** Every HTTP request sent to this target, by purpose. */
  readonly requests: { readonly metadata: number; readonly start: number; readonly attack: number; readonly verify: number; readonly total: number };
}

export interface Report {
  readonly tool: 'redserve attack';
  readonly command: string;
  readonly seed: number;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly seconds: number;
  readonly settings: {
    readonly attacks: readonly string[];
    readonly eps: number;
    readonly queriesPerImage: number;
    readonly verify: number;
    readonly timeLimitSeconds: number;
    readonly pInit: number;
    readonly hsjGradQueries: number;
    readonly images: number;
    readonly imageSource: string;
    readonly detection?: boolean;
  };
  /** True when the time limit stopped the run before every image was attacked. */
  readonly stoppedByTimeLimit: boolean;
  readonly targets: readonly TargetRecord[];
  readonly results: readonly AttackRow[];
}

export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function mean(values: readonly number[]): number | null {
  return values.length === 0 ? null : values.reduce((a, b) => a + b, 0) / values.length;
}

function rate(successQueries: readonly number[], attacked: number): Rate {
  return {
    successes: successQueries.length,
    rate: attacked === 0 ? null : successQueries.length / attacked,
    meanQueries: mean(successQueries),
    medianQueries: median(successQueries),
  };
}

export function summarize(images: readonly ImageOutcome[], verifyVotes: number): Summary {
  const done = images.filter((o) => o.correctAtStart && o.stop !== 'time' && o.stop !== 'not-attacked');
  const correct = images.filter((o) => o.correctAtStart).length;
  const verified = done.filter((o) => o.verified);
  // Robust accuracy is over the images whose fate is known: wrong at start, or attacked to the end.
  const known = images.filter((o) => !o.correctAtStart).length + done.length;
  const tracked = done.filter((o) => o.detectedAtQuery !== undefined);
  const flaggedAt = tracked.filter((o) => o.detectedAtQuery !== null).map((o) => o.detectedAtQuery!);
  const detection: DetectionSummary | undefined = tracked.length === 0 ? undefined : {
    runs: tracked.length,
    flagged: flaggedAt.length,
    medianQuery: median(flaggedAt),
    maxQuery: flaggedAt.length === 0 ? null : Math.max(...flaggedAt),
    verifiedBeforeFlag: tracked.filter((o) => o.verified && (o.detectedAtQuery === null || o.detectedAtQuery! > o.queries)).length,
    refused: tracked.reduce((n, o) => n + (o.refused ?? 0), 0),
  };
  return {
    ...(detection ? { detection } : {}),
    images: images.length,
    correctAtStart: correct,
    attacked: done.length,
    cutByTime: images.filter((o) => o.correctAtStart && o.stop === 'time').length,
    verified: rate(verified.map((o) => o.queries), done.length),
    anyHit: rate(done.filter((o) => o.anyHitQuery !== null).map((o) => o.anyHitQuery!), done.length),
    robustAccuracy: known === 0 ? null : (done.length - verified.length) / known,
    requests: {
      attack: images.reduce((s, o) => s + o.queries, 0),
      verify: images.reduce((s, o) => s + (o.verifyWrongVotes === null ? 0 : verifyVotes), 0),
    },
  };
}

const pct = (v: number | null) => (v === null ? 'n/a' : `${(100 * v).toFixed(1)}%`);
const num = (v: number | null) => (v === null ? 'n/a' : Number.isInteger(v) ? String(v) : v.toFixed(1));

/** The summary table: one row per (target, attack). */
export function resultsTable(results: readonly AttackRow[]): string {
  const head = '| model | sampling | attack | correct at start | verified success | any-hit success | '
    + 'median / mean queries (verified) | median / mean queries (any-hit) | robust acc. (verified) | requests |';
  const rule = '|---|---|---|---|---|---|---|---|---|---|';
  const rows = results.map((r) => {
    const s = r.summary;
    const cut = s.cutByTime > 0 ? ` (+${s.cutByTime} cut by time)` : '';
    return `| ${r.model} | ${r.sampling} | ${r.attack} | ${s.correctAtStart}/${s.images} | `
      + `${s.verified.successes}/${s.attacked} = ${pct(s.verified.rate)}${cut} | ${s.anyHit.successes}/${s.attacked} = ${pct(s.anyHit.rate)} | `
      + `${num(s.verified.medianQueries)} / ${num(s.verified.meanQueries)} | ${num(s.anyHit.medianQueries)} / ${num(s.anyHit.meanQueries)} | `
      + `${pct(s.robustAccuracy)} | ${s.requests.attack + s.requests.verify} |`;
  });
  return [head, rule, ...rows].join('\n');
}

/** Detection runs: one row per (target, attack): how many runs were flagged and after how many queries. */
export function detectionTable(results: readonly AttackRow[]): string {
  const head = '| model | attack | runs flagged | first flag: median / max attack query | verified success | verified before its flag | refused requests |';
  const rows = results.filter((r) => r.summary.detection).map((r) => {
    const d = r.summary.detection!;
    return `| ${r.model} | ${r.attack} | ${d.flagged}/${d.runs} | ${num(d.medianQuery)} / ${num(d.maxQuery)} | `
      + `${r.summary.verified.successes}/${r.summary.attacked} | ${d.verifiedBeforeFlag}/${d.runs} | ${d.refused} |`;
  });
  return [head, '|---|---|---|---|---|---|---|', ...rows].join('\n');
}

export function renderMarkdown(report: Report): string {
  const s = report.settings;
  const lines = [
    '# Query attacks over HTTP',
    '',
    `- command: \`${report.command}\``,
    `- seed ${report.seed}; started ${report.startedAt}; ${report.seconds.toFixed(0)} s`
      + (report.stoppedByTimeLimit ? ` (**stopped by the ${s.timeLimitSeconds} s time limit**)` : ''),
    `- eps ${s.eps} (Linf, pixel space [0, 1]); ${s.queriesPerImage} attack queries per image; R = ${s.verify} fresh queries `
      + `for the start check and for verification; ${s.images} images from ${s.imageSource}`,
    `- attacks: ${s.attacks.join(', ')} (Square p_init ${s.pInit}; HopSkipJump B0 ${s.hsjGradQueries} gradient probes)`,
    '',
    '## Targets',
    '',
    '| url | model | version | kind | members | sampling | provider | requests (metadata + start + attack + verify) |',
    '|---|---|---|---|---|---|---|---|',
    ...report.targets.map((t) => `| ${t.url} | ${t.models.name} | ${t.models.version ?? ''} | ${t.models.kind ?? ''} | ${t.models.members} | `
      + `${t.models.sampling} | ${t.models.provider ?? ''} | ${t.requests.metadata} + ${t.requests.start} + ${t.requests.attack} + `
      + `${t.requests.verify} = ${t.requests.total} |`),
    '',
    '## Results',
    '',
    resultsTable(report.results),
    '',
    '- correct at start: images right on the majority of R fresh queries; only these are attacked.',
    '- verified success: the final image (inside the eps ball) is wrong on the majority of R fresh queries.',
    '- any-hit success: one answer during the attack, for an image inside the eps ball, was wrong.',
    '- queries: attack queries only (verified: spent when the attack stopped; any-hit: up to the first wrong answer).',
    '- robust acc. (verified): images correct at start and not verified-broken, over all images (those cut by time left out).',
    '- requests: attack plus verification requests of that row; the start check is per target (see Targets).',
    '',
  ];
  if (report.results.some((r) => r.summary.detection)) {
    lines.push('## Detection', '', detectionTable(report.results), '',
      '- each attack run had its own client identity (X-Forwarded-For; the service trusts the proxy), the start check and '
      + 'verification another; flagged: the first attack query whose answer carried X-Redserve-Detection.',
      '- verified before its flag: verified success reached before the first flag (or never flagged): a `--detect reject` '
      + 'service with a cool-down would not have stopped it.', '');
  }
  return lines.join('\n');
}
