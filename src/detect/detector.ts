/**
 * The stateful query-attack detector: fingerprints every pre-processed image, compares it with the
 * client's own recent queries and with every client's recent queries, and flags the client when a
 * query is too close to one already seen. Nothing here knows about HTTP (src/detect/http.ts turns a
 * verdict into a header, a log line, a metric or a 429) or about the ensemble: the detector sees
 * only inputs, never which member answers, so it cannot change or reveal the member draw.
 *
 * A query is flagged when
 * - it shares at least `threshold` kept hashes with one of the client's last `history` queries (a
 *   near duplicate: what a query attack sends); or
 * - it shares at least `threshold` with a stored query of another client, and the client's queries
 *   have by then matched stored queries of at least `globalOwners` distinct other clients. One
 *   match across clients is only suspicion: anyone can plant a popular image in the store, and the
 *   innocent client who later sends a re-encoded copy must not be locked out for it. A query
 *   attack spread over many identities matches many of them; a planted image matches its one
 *   planter. Each identity also holds at most `globalQuota` of the store's slots; or
 * - it is byte for byte a query the client sent before, more than `repeats` times over (an attacker
 *   averaging many answers for one image against the random draw; a person re-uploading the same
 *   photo does it a few times). A few exact re-uploads are never near-duplicate detections.
 * A flag starts a cool-down of `cooldownS` seconds: in reject mode every query of the client is
 * refused until it ends, in log mode its answers say so when the header is on.
 */
import { randomBytes } from 'node:crypto';
import type { DetectSettings } from '../config.js';
import { Fingerprinter, type Fingerprint, type FingerprintKey, type Normalisation } from './fingerprint.js';
import { ClientHistory, GlobalIndex, LruMap } from './store.js';

export type FlagReason = 'near_duplicate' | 'repeated_input';

/** How close a query came to the stored ones (what the flags are decided on, and what the evaluation sweeps). */
export interface Observation {
  /** Kept hashes shared with the closest of the client's own earlier queries (an exact re-upload: all of them). */
  readonly ownShared: number;
  /** Earlier exact re-uploads of this very input by the client (0: not a re-upload). */
  readonly repeats: number;
  /** Kept hashes shared with the closest stored query of another client (0 for a re-upload: not compared). */
  readonly globalShared: number;
  /** Distinct other clients whose stored queries this client's queries have matched so far, this one included. */
  readonly globalOwners: number;
}

/** The settings the flag rule reads. */
export type FlagRule = Pick<DetectSettings, 'threshold' | 'repeats' | 'globalOwners'>;

/**
 * The flag rule: why a query with this observation is flagged under `rule`, or null. The detector
 * decides with it, and the offline evaluation (bench/detect/) replays it at other thresholds.
 */
export function flagOf(seen: Observation, rule: FlagRule): { reason: FlagReason; scope: 'client' | 'global' } | null {
  // A re-upload is judged by its count alone, never as a near duplicate of its own first copy.
  if (seen.repeats > 0) return seen.repeats > rule.repeats ? { reason: 'repeated_input', scope: 'client' } : null;
  if (seen.ownShared >= rule.threshold) return { reason: 'near_duplicate', scope: 'client' };
  if (seen.globalShared >= rule.threshold && seen.globalOwners >= rule.globalOwners) return { reason: 'near_duplicate', scope: 'global' };
  return null;
}

/** What the detector says about one query. */
export type Verdict =
  | { readonly flagged: false; readonly query: number; readonly seen: Observation }
  | {
    readonly flagged: true;
    /** The client's queries so far, this one included. */
    readonly query: number;
    /** Null for a query refused in a cool-down without being fingerprinted. */
    readonly seen: Observation | null;
    readonly reason: FlagReason | 'cooldown';
    /** Whose earlier query this one matched ('client': its own; 'global': another client's). */
    readonly scope: 'client' | 'global' | null;
    /** Kept hashes shared with the closest earlier query. */
    readonly shared: number;
    /** This query started a new cool-down (a detection); false while one is running. */
    readonly detection: boolean;
    /** The client's query count at the detection that started the running cool-down. */
    readonly detectedAtQuery: number;
    /** Seconds until the cool-down ends (at least 1). */
    readonly retryAfterS: number;
  };

interface ClientState {
  readonly owner: number;
  readonly history: ClientHistory;
  queries: number;
  flaggedUntilMs: number;
  detectedAtQuery: number;
  /** Other owners whose stored queries this client's matched, at the threshold (kept up to settings.globalOwners). */
  readonly matchedOwners: number[];
}

/** Postings per hash in the global index before the hash counts as common (see store.ts). */
const MAX_POSTINGS = 256;

export function randomKey(): FingerprintKey {
  const b = randomBytes(12);
  return { base: b.readUInt32LE(0) | 1, mix: b.readUInt32LE(4), digest: b.readUInt32LE(8) };
}

export class Detector {
  readonly fingerprinter: Fingerprinter;
  private readonly clientStates: LruMap<ClientState>;
  private readonly global: GlobalIndex | null;
  private nextOwner = 0;

  constructor(readonly settings: DetectSettings, norm: Normalisation,
    options: { key?: FingerprintKey; nowMs?: () => number } = {}) {
    this.fingerprinter = new Fingerprinter(settings, norm, options.key ?? randomKey());
    this.clientStates = new LruMap(settings.clients);
    this.global = settings.globalSize > 0
      ? new GlobalIndex(settings.globalSize, settings.hashes, MAX_POSTINGS, settings.globalQuota) : null;
    this.nowMs = options.nowMs ?? (() => performance.now());
  }

  private readonly nowMs: () => number;

  get trackedClients(): number {
    return this.clientStates.size;
  }

  /** Screen one query (one image's tensor) from `client`, and remember it. */
  screen(client: string, tensor: Float32Array): Verdict {
    return this.screenFingerprint(client, this.fingerprinter.compute(tensor));
  }

  screenFingerprint(client: string, fp: Fingerprint): Verdict {
    const s = this.settings;
    const state = this.clientStates.use(client, () => ({
      owner: this.nextOwner++ % 2 ** 31,
      history: new ClientHistory(s.history, s.hashes),
      queries: 0,
      flaggedUntilMs: -Infinity,
      detectedAtQuery: 0,
      matchedOwners: [],
    }));
    state.queries++;
    const seen = this.observe(state, fp);
    const flag = flagOf(seen, s);
    const reason = flag?.reason ?? null;
    const scope = flag?.scope ?? null;
    const shared = Math.max(seen.ownShared, seen.globalShared);
    const now = this.nowMs();
    const coolingDown = now < state.flaggedUntilMs;
    if (reason !== null && !coolingDown) {
      state.flaggedUntilMs = now + s.cooldownS * 1000;
      state.detectedAtQuery = state.queries;
      return this.flagged(state, reason, scope, shared, true, now, seen);
    }
    if (coolingDown) return this.flagged(state, reason ?? 'cooldown', scope, shared, false, now, seen);
    return { flagged: false, query: state.queries, seen };
  }

  /** Compare the query with what the stores hold, then store it. */
  private observe(state: ClientState, fp: Fingerprint): Observation {
    const own = state.history.closest(fp);
    if (own.exact) {
      // A re-upload is not stored again: its first copy counts the repeats.
      return { ownShared: own.shared, repeats: state.history.repeat(own.slot), globalShared: 0, globalOwners: state.matchedOwners.length };
    }
    const other = this.global ? this.global.closestOther(fp, state.owner, this.settings.threshold) : null;
    const globalShared = other?.shared ?? 0;
    for (const owner of other?.owners ?? []) {
      if (state.matchedOwners.length >= this.settings.globalOwners) break;
      if (!state.matchedOwners.includes(owner)) state.matchedOwners.push(owner);
    }
    state.history.add(fp);
    this.global?.add(fp, state.owner);
    return { ownShared: own.shared, repeats: 0, globalShared, globalOwners: state.matchedOwners.length };
  }

  /** A client in its cool-down, without fingerprinting the query (reject mode refuses it anyway). */
  coolingDown(client: string): Verdict | null {
    if (!this.clientStates.has(client)) return null;
    const state = this.clientStates.use(client, () => { throw new Error('unreachable'); });
    const now = this.nowMs();
    if (now >= state.flaggedUntilMs) return null;
    state.queries++;
    return this.flagged(state, 'cooldown', null, 0, false, now, null);
  }

  private flagged(state: ClientState, reason: FlagReason | 'cooldown', scope: 'client' | 'global' | null,
    shared: number, detection: boolean, now: number, seen: Observation | null): Verdict {
    return {
      flagged: true, query: state.queries, seen, reason, scope, shared, detection, detectedAtQuery: state.detectedAtQuery,
      // Whole milliseconds first: (now + 120000) - now can exceed 120000 by a rounding error in
      // floating point, which Math.ceil would turn into 121 s.
      retryAfterS: Math.max(1, Math.ceil(Math.round(state.flaggedUntilMs - now) / 1000)),
    };
  }
}
