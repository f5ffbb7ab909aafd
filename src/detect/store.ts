/**
 * Bounded fingerprint stores. Both are rings: when full, the oldest fingerprint makes room, so
 * memory is fixed by the flags, never by traffic.
 *
 * - ClientHistory: one client's last `capacity` fingerprints, compared one by one (a merge of two
 *   sorted arrays each). Small and private to the client, so no other client's traffic can push an
 *   attacker's own recent queries out of it.
 * - GlobalIndex: the last `capacity` fingerprints of every client together, with an inverted index
 *   (hash -> slots holding it), so that a query is compared with all of them at the cost of the
 *   slots that share a hash with it. It catches an attack spread over many keys or addresses.
 *   A hash held by `maxPostings` slots already is common to many unrelated images; it is not
 *   indexed further, which bounds both the memory and the work per query. One owner holds at most
 *   `perOwner` slots: its queries past that are not stored, so one identity can neither plant
 *   more than that nor flush the other owners' queries out of the ring.
 */
import type { Fingerprint } from './fingerprint.js';

/** The best match a store holds for a query. */
export interface Match {
  /** Hashes shared with the closest stored fingerprint (0 when the store holds nothing alike). */
  readonly shared: number;
  /** The closest stored fingerprint is the same tensor, byte for byte (a re-upload). */
  readonly exact: boolean;
  /** Slot of the closest stored fingerprint (-1 when none): what `repeat` takes. */
  readonly slot: number;
}

const NO_MATCH: Match = { shared: 0, exact: false, slot: -1 };
/** Distinct owners closestOther reports at most. */
export const MAX_MATCHED_OWNERS = 16;

export class ClientHistory {
  private readonly hashes: Uint32Array;
  private readonly lengths: Uint16Array;
  private readonly digests: Float64Array;
  /** Re-uploads of each slot's exact tensor seen after it was stored. */
  private readonly repeats: Uint32Array;
  private next = 0;
  private stored = 0;

  constructor(readonly capacity: number, private readonly hashesPerFingerprint: number) {
    this.hashes = new Uint32Array(capacity * hashesPerFingerprint);
    this.lengths = new Uint16Array(capacity);
    this.digests = new Float64Array(capacity);
    this.repeats = new Uint32Array(capacity);
  }

  get size(): number {
    return this.stored;
  }

  /** Bytes held by the typed arrays (the bulk of a client's memory). */
  get bytes(): number {
    return this.hashes.byteLength + this.lengths.byteLength + this.digests.byteLength + this.repeats.byteLength;
  }

  /** The stored fingerprint closest to `fp`; an exact re-upload wins over any near match. */
  closest(fp: Fingerprint): Match {
    let best = NO_MATCH;
    const k = this.hashesPerFingerprint;
    const a = fp.hashes;
    const stored = this.hashes;
    for (let s = 0; s < this.stored; s++) {
      if (this.digests[s] === fp.digest) return { shared: this.lengths[s], exact: true, slot: s };
      // Merge of two ascending lists, inline: a subarray per slot would allocate on every query.
      let i = 0;
      let j = s * k;
      const end = j + this.lengths[s];
      let shared = 0;
      while (i < a.length && j < end) {
        const x = a[i];
        const y = stored[j];
        if (x === y) {
          shared++;
          i++;
          j++;
        } else if (x < y) {
          i++;
        } else {
          j++;
        }
      }
      if (shared > best.shared) best = { shared, exact: false, slot: s };
    }
    return best;
  }

  /** Count one more re-upload of the slot's tensor; returns how many there have been. */
  repeat(slot: number): number {
    return ++this.repeats[slot];
  }

  add(fp: Fingerprint): void {
    const k = this.hashesPerFingerprint;
    const s = this.next;
    this.hashes.set(fp.hashes.subarray(0, k), s * k);
    this.lengths[s] = Math.min(fp.hashes.length, k);
    this.digests[s] = fp.digest;
    this.repeats[s] = 0;
    this.next = (s + 1) % this.capacity;
    this.stored = Math.min(this.stored + 1, this.capacity);
  }
}

export class GlobalIndex {
  private readonly hashes: Uint32Array;
  private readonly lengths: Uint16Array;
  private readonly digests: Float64Array;
  /** Owner of each slot (an index into `owners`), so a match can be told own from other. */
  private readonly ownerOf: Int32Array;
  private readonly postings = new Map<number, number[]>();
  /** Per-query scratch: shared-hash counts by slot, and the slots touched. */
  private readonly counts: Uint16Array;
  private readonly touched: Int32Array;
  /** Slots each owner holds now (owners holding none are absent). */
  private readonly slotsOf = new Map<number, number>();
  private next = 0;
  private stored = 0;
  private postingEntries = 0;

  constructor(readonly capacity: number, private readonly hashesPerFingerprint: number, readonly maxPostings: number,
    readonly perOwner = capacity) {
    this.hashes = new Uint32Array(capacity * hashesPerFingerprint);
    this.lengths = new Uint16Array(capacity);
    this.digests = new Float64Array(capacity);
    this.ownerOf = new Int32Array(capacity).fill(-1);
    this.counts = new Uint16Array(capacity);
    this.touched = new Int32Array(capacity);
  }

  get size(): number {
    return this.stored;
  }

  /** Slots `owner` holds now (at most perOwner). */
  heldBy(owner: number): number {
    return this.slotsOf.get(owner) ?? 0;
  }

  /** Slot entries in the inverted index (at most capacity * hashes). */
  get indexed(): number {
    return this.postingEntries;
  }

  /**
   * The closest stored fingerprint that another owner sent (`owner`'s own are its ClientHistory's
   * business), and the distinct other owners of every stored fingerprint sharing at least
   * `threshold` hashes with it (at most MAX_MATCHED_OWNERS). Exact re-uploads across owners are not
   * matches: a popular image sent by many clients is not an attack, and one client's re-uploads are
   * counted in its own history.
   */
  closestOther(fp: Fingerprint, owner: number, threshold = Infinity): Match & { readonly owners: readonly number[] } {
    let touchedCount = 0;
    for (const h of fp.hashes) {
      const list = this.postings.get(h);
      if (list === undefined) continue;
      for (const s of list) {
        if (this.counts[s] === 0) this.touched[touchedCount++] = s;
        this.counts[s]++;
      }
    }
    let best = NO_MATCH;
    const owners: number[] = [];
    for (let t = 0; t < touchedCount; t++) {
      const s = this.touched[t];
      const shared = this.counts[s];
      this.counts[s] = 0;
      if (this.ownerOf[s] === owner || this.digests[s] === fp.digest) continue;
      if (shared > best.shared) best = { shared, exact: false, slot: s };
      if (shared >= threshold && owners.length < MAX_MATCHED_OWNERS && !owners.includes(this.ownerOf[s])) owners.push(this.ownerOf[s]);
    }
    return { ...best, owners };
  }

  /** Store `fp` as `owner`'s; false (nothing stored) when the owner already holds perOwner slots. */
  add(fp: Fingerprint, owner: number): boolean {
    const held = this.slotsOf.get(owner) ?? 0;
    if (held >= this.perOwner) return false;
    const k = this.hashesPerFingerprint;
    const s = this.next;
    if (this.ownerOf[s] !== -1) this.evict(s);
    this.slotsOf.set(owner, (this.slotsOf.get(owner) ?? 0) + 1);
    const length = Math.min(fp.hashes.length, k);
    this.hashes.set(fp.hashes.subarray(0, length), s * k);
    this.lengths[s] = length;
    this.digests[s] = fp.digest;
    this.ownerOf[s] = owner;
    for (let i = 0; i < length; i++) {
      const h = fp.hashes[i];
      const list = this.postings.get(h);
      if (list === undefined) {
        this.postings.set(h, [s]);
        this.postingEntries++;
      } else if (list.length < this.maxPostings) {
        list.push(s);
        this.postingEntries++;
      }
    }
    this.next = (s + 1) % this.capacity;
    this.stored = Math.min(this.stored + 1, this.capacity);
    return true;
  }

  private evict(s: number): void {
    const owner = this.ownerOf[s];
    const held = (this.slotsOf.get(owner) ?? 1) - 1;
    if (held > 0) this.slotsOf.set(owner, held);
    else this.slotsOf.delete(owner);
    const k = this.hashesPerFingerprint;
    for (let i = 0; i < this.lengths[s]; i++) {
      const h = this.hashes[s * k + i];
      const list = this.postings.get(h);
      if (list === undefined) continue;
      const at = list.indexOf(s);
      if (at < 0) continue; // not indexed: the hash was already common when this slot was stored
      list[at] = list[list.length - 1];
      list.pop();
      this.postingEntries--;
      if (list.length === 0) this.postings.delete(h);
    }
    this.ownerOf[s] = -1;
  }
}

/**
 * A map with a fixed number of entries that forgets the least recently used one when full
 * (a Map keeps insertion order; a use re-inserts the key at the end).
 */
export class LruMap<V> {
  private readonly map = new Map<string, V>();

  constructor(readonly capacity: number) {}

  get size(): number {
    return this.map.size;
  }

  /** The entry for `key`, made by `create` when absent (evicting the least recently used). */
  use(key: string, create: () => V): V {
    let value = this.map.get(key);
    if (value !== undefined) {
      this.map.delete(key);
    } else {
      if (this.map.size >= this.capacity) this.map.delete(this.map.keys().next().value!);
      value = create();
    }
    this.map.set(key, value);
    return value;
  }

  has(key: string): boolean {
    return this.map.has(key);
  }
}
