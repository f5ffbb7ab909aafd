/**
 * The red-team run: every image against every target with every attack, counting every request.
 *
 * Order: image by image, and for each image every target and attack, so that a run cut by the time
 * limit has treated every (target, attack) pair on the same images. Per (target, image): a start
 * check of R fresh queries (majority right = correct at start; only those are attacked). Per attack:
 * a fresh Oracle with the per-image budget and the run's deadline, the attack, then R fresh queries
 * on its final image (majority wrong = verified). Attack randomness is seeded per (seed, image,
 * attack), the same for every target, so targets are compared on the same random choices.
 */
import { adaptiveClassify, DEFAULT_TRANSFORM, type AdaptiveStats } from './adaptive.js';
import { AttackError, type TargetClient } from './client.js';
import { hopSkipJump } from './hsj.js';
import { toPixels, type LabeledImage } from './images.js';
import { argmax, linfDistance, Oracle, StopAttack, type Classify } from './oracle.js';
import type { Progress } from './progress.js';
import { summarize, type AttackRow, type ImageOutcome, type Report, type TargetRecord } from './report.js';
import { deriveSeed, Rng } from './rng.js';
import { squareAttack, type AttackResult } from './square.js';

export const ATTACK_KINDS = ['square', 'hsj'] as const;
export type AttackKind = (typeof ATTACK_KINDS)[number];

export interface AttackSpec {
  readonly kind: AttackKind;
  /** Answers per score (Square) or per decision (HopSkipJump); 1 = the plain attack. */
  readonly eot: number;
  /** Transform every query and resample refused ones (src/attack/adaptive.ts). */
  readonly adaptive?: boolean;
}

export const attackName = (a: AttackSpec) => `${a.kind}${a.eot === 1 ? '' : `-eot${a.eot}`}${a.adaptive ? '-adaptive' : ''}`;

/**
 * Addresses for X-Forwarded-For, one per identity a detection run needs (198.18.0.0/15 is the
 * range set aside for benchmarks, so it names no real client).
 */
function identityAddress(n: number): string {
  return `198.${18 + ((n >> 16) & 1)}.${(n >> 8) & 255}.${n & 255}`;
}

export interface HarnessOptions {
  readonly targets: readonly TargetClient[];
  readonly images: readonly LabeledImage[];
  readonly attacks: readonly AttackSpec[];
  readonly eps: number;
  /** Attack queries per image (start check and verification excluded). */
  readonly queries: number;
  /** R: fresh queries for the start check and for verification. */
  readonly verify: number;
  readonly seed: number;
  readonly timeLimitSeconds: number;
  readonly pInit: number;
  readonly hsjGradQueries: number;
  readonly imageSource: string;
  readonly command: string;
  readonly progress?: Progress;
  /**
   * Against a `--detect log --detect-header on` service started with --trust-proxy: give each
   * attack run its own client identity (and the start check and verification of each image
   * another), and record after how many of its queries the service first flagged it.
   */
  readonly detection?: boolean;
  /**
   * Where the start checks and verifications go instead of the target (one target only): the same
   * package served without detection. Against a `--detect reject` service they would be refused
   * (R copies of one image, near duplicates of the attack's queries), and they are the evaluation's
   * measurement, not the attacker's.
   */
  readonly verifier?: TargetClient;
}

export async function runAttacks(o: HarnessOptions): Promise<Report> {
  const startedAt = new Date();
  const deadlineMs = startedAt.getTime() + o.timeLimitSeconds * 1000;
  const outcomes = o.targets.map(() => o.attacks.map((): ImageOutcome[] => []));
  const startRequests = o.targets.map(() => 0);
  const totalUnits = o.images.length * o.targets.length * o.attacks.length;
  let unitsDone = 0;
  let stoppedByTimeLimit = false;
  let identities = 0;

  if (o.verifier && o.targets.length !== 1) throw new AttackError('--verify-url: only with one --url');
  for (const target of o.targets) {
    if (o.eps > target.pixelMax) {
      throw new AttackError(`--eps: ${o.eps} exceeds the pixel range [0, ${target.pixelMax}] of ${target.url}`);
    }
    const bad = o.images.find((img) => img.label >= target.classes);
    if (bad) throw new AttackError(`${bad.name}: label ${bad.label} is out of range [0, ${target.classes}) for ${target.url}`);
  }

  run: for (const [imageIndex, image] of o.images.entries()) {
    for (const [t, target] of o.targets.entries()) {
      if (Date.now() >= deadlineMs) {
        stoppedByTimeLimit = true;
        break run;
      }
      const where = `img ${imageIndex + 1}/${o.images.length} ${target.info.name}@${target.info.sampling}`;
      const x0 = await toPixels(image, target.info.input);
      const scout = o.detection ? identityAddress(identities++) : null;
      target.identity = scout;
      const checker = o.verifier ?? target;
      const startVotes = await votes(checker, x0, o.verify, image.label);
      startRequests[t] += o.verify;
      const correctAtStart = 2 * startVotes > o.verify;

      for (const [a, spec] of o.attacks.entries()) {
        const began = performance.now();
        const detail = `${where} ${attackName(spec)}`;
        if (!correctAtStart) {
          outcomes[t][a].push({
            image: image.name, label: image.label, startCorrectVotes: startVotes, correctAtStart, stop: 'not-attacked',
            queries: 0, anyHitQuery: null, verifyWrongVotes: null, verified: false, linf: null, attackLoss: null, seconds: 0,
          });
          o.progress?.update({ done: ++unitsDone, total: totalUnits, detail: `${detail} wrong at start` }, true);
          continue;
        }
        if (o.detection) target.identity = identityAddress(identities++);
        let detectedAtQuery: number | null = null;
        let detectionHeader: string | null = null;
        const noteDetection = () => {
          if (detectedAtQuery === null && target.lastDetection !== null) {
            detectedAtQuery = oracle.queries;
            detectionHeader = target.lastDetection;
          }
        };
        const stats: AdaptiveStats = { sent: 0, refused: 0, gaveUp: 0 };
        const lo = 0;
        const hi = target.pixelMax;
        let classify: Classify = async (x) => {
          const probs = await target.classify(x);
          noteDetection();
          return probs;
        };
        if (spec.adaptive) {
          classify = adaptiveClassify(async (x) => {
            const answer = await target.answer(x);
            noteDetection();
            return answer;
          }, target.info.input.shape, lo, hi, new Rng(deriveSeed(o.seed, imageIndex, 1000 + ATTACK_KINDS.indexOf(spec.kind), spec.eot)),
          DEFAULT_TRANSFORM, () => {
            // A resample is one more request: charged to the image's budget like any query.
            if (oracle.remaining <= 0) throw new StopAttack('budget');
            oracle.queries++;
          }, stats);
        }
        const oracle: Oracle = new Oracle(async (x) => {
          o.progress?.update({ done: unitsDone, total: totalUnits, detail: `${detail} q ${oracle.queries}/${o.queries}` });
          return classify(x);
        }, { budget: o.queries, deadlineMs, x0, label: image.label, eps: o.eps });
        const rng = new Rng(deriveSeed(o.seed, imageIndex, ATTACK_KINDS.indexOf(spec.kind), spec.eot));
        const result: AttackResult = spec.kind === 'square'
          ? await squareAttack(oracle, x0, image.label, { shape: target.info.input.shape, eps: o.eps, lo, hi, eot: spec.eot, pInit: o.pInit, rng })
          : await hopSkipJump(oracle, x0, { eps: o.eps, lo, hi, eot: spec.eot, rng, gradQueries: o.hsjGradQueries });
        target.identity = scout;
        // A run cut by time leaves this image's verdict unknown: no verification, excluded from rates.
        const wrong = result.stop === 'time' ? null : o.verify - await votes(checker, result.x, o.verify, image.label);
        outcomes[t][a].push({
          image: image.name, label: image.label, startCorrectVotes: startVotes, correctAtStart, stop: result.stop,
          queries: oracle.queries, anyHitQuery: oracle.firstHit, verifyWrongVotes: wrong,
          verified: wrong !== null && 2 * wrong > o.verify, linf: linfDistance(result.x, x0),
          attackLoss: Number.isFinite(result.loss) ? result.loss : null, seconds: (performance.now() - began) / 1000,
          ...(o.detection ? { detectedAtQuery, detectionHeader } : {}),
          ...(spec.adaptive ? { refused: stats.refused, gaveUp: stats.gaveUp } : {}),
        });
        const flagged = o.detection ? `, flagged at ${detectedAtQuery ?? 'never'}` : '';
        const verdict = `${wrong === null ? result.stop : `${result.stop}, ${wrong}/${o.verify} wrong`}${flagged}`;
        o.progress?.update({ done: ++unitsDone, total: totalUnits, detail: `${detail} ${oracle.queries} q (${verdict})` }, true);
        if (result.stop === 'time') {
          stoppedByTimeLimit = true;
          break run;
        }
      }
    }
  }
  o.progress?.finish();

  const results: AttackRow[] = [];
  const targets: TargetRecord[] = o.targets.map((target, t) => {
    const rows = o.attacks.map((spec, a) => ({
      target: target.url, model: target.info.name, sampling: target.info.sampling, attack: attackName(spec), eot: spec.eot,
      summary: summarize(outcomes[t][a], o.verify), images: outcomes[t][a],
    }));
    results.push(...rows);
    const attack = rows.reduce((s, r) => s + r.summary.requests.attack, 0);
    const verify = rows.reduce((s, r) => s + r.summary.requests.verify, 0);
    const seen = o.verifier ? [target.classifyRequests, o.verifier.classifyRequests] : [target.classifyRequests];
    const expected = o.verifier ? [attack, startRequests[t] + verify] : [startRequests[t] + attack + verify];
    if (seen.some((n, k) => n !== expected[k])) {
      throw new Error(`request accounting mismatch for ${target.url}: ${startRequests[t]} + ${attack} + ${verify} != ${seen.join(' + ')}`);
    }
    return {
      url: target.url, models: target.info, ...(o.verifier ? { verifier: o.verifier.url } : {}),
      requests: {
        metadata: target.metadataRequests, start: startRequests[t], attack, verify,
        total: target.metadataRequests + target.classifyRequests + (o.verifier ? o.verifier.classifyRequests + o.verifier.metadataRequests : 0),
      },
    };
  });
  const finishedAt = new Date();
  return {
    tool: 'redserve attack',
    command: o.command,
    seed: o.seed,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    seconds: (finishedAt.getTime() - startedAt.getTime()) / 1000,
    settings: {
      attacks: o.attacks.map(attackName), eps: o.eps, queriesPerImage: o.queries, verify: o.verify,
      timeLimitSeconds: o.timeLimitSeconds, pInit: o.pInit, hsjGradQueries: o.hsjGradQueries,
      images: o.images.length, imageSource: o.imageSource, ...(o.detection ? { detection: true } : {}),
    },
    stoppedByTimeLimit,
    targets,
    results,
  };
}

/** Right answers among `r` fresh queries of x (not counted against any attack's budget). */
async function votes(target: TargetClient, x: Float64Array, r: number, label: number): Promise<number> {
  let right = 0;
  for (let k = 0; k < r; k++) if (argmax(await target.classify(x)) === label) right++;
  return right;
}
