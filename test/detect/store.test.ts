import t from 'tap';
import type { Fingerprint } from '../../src/detect/fingerprint.js';
import { ClientHistory, GlobalIndex, LruMap } from '../../src/detect/store.js';

/** A fingerprint from explicit hashes (sorted here) and a digest. */
const fp = (hashes: number[], digest: number): Fingerprint => ({ hashes: Uint32Array.from([...hashes].sort((a, b) => a - b)), digest });
const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

t.test('ClientHistory: closest match, exact re-uploads, ring eviction, fixed memory', async (t) => {
  const h = new ClientHistory(3, 10);
  const bytes = h.bytes;
  t.equal(bytes, 3 * 10 * 4 + 3 * 2 + 3 * 8 + 3 * 4, 'typed arrays sized by capacity x hashes');
  t.same(h.closest(fp(range(0, 10), 1)), { shared: 0, exact: false, slot: -1 }, 'empty history');

  h.add(fp(range(0, 10), 1));
  h.add(fp(range(100, 10), 2));
  t.same(h.closest(fp([...range(0, 6), ...range(500, 4)], 9)), { shared: 6, exact: false, slot: 0 }, 'near match: 6 shared');
  t.same(h.closest(fp(range(100, 10), 2)), { shared: 10, exact: true, slot: 1 }, 'same digest: exact');
  t.equal(h.repeat(1), 1);
  t.equal(h.repeat(1), 2, 're-uploads are counted per slot');

  h.add(fp(range(200, 10), 3));
  h.add(fp(range(300, 10), 4)); // evicts slot 0 (digest 1)
  t.equal(h.size, 3, 'never more than capacity');
  t.same(h.closest(fp(range(0, 10), 1)), { shared: 0, exact: false, slot: -1 }, 'the oldest is forgotten');
  t.same(h.closest(fp(range(300, 10), 4)), { shared: 10, exact: true, slot: 0 }, 'the newest took its slot');
  t.equal(h.repeat(0), 1, 'a reused slot starts its repeat count again');
  for (let i = 0; i < 1000; i++) h.add(fp(range(i * 10, 10), 1000 + i));
  t.equal(h.bytes, bytes, 'memory does not grow with traffic');

  // A fingerprint longer than the slot keeps its first (smallest) hashes.
  const short = new ClientHistory(2, 4);
  short.add(fp(range(0, 8), 5));
  t.equal(short.closest(fp(range(0, 8), 6)).shared, 4);
});

t.test('GlobalIndex: other owners only, exact re-uploads ignored, eviction unindexes', async (t) => {
  const g = new GlobalIndex(3, 10, 100);
  g.add(fp(range(0, 10), 1), 7);
  t.same(g.closestOther(fp([...range(0, 8), 900, 901], 2), 7), { shared: 0, exact: false, slot: -1, owners: [] }, "the owner's own queries are not matched here");
  t.same(g.closestOther(fp([...range(0, 8), 900, 901], 2), 8), { shared: 8, exact: false, slot: 0, owners: [] }, 'another owner matches');
  t.same(g.closestOther(fp(range(0, 10), 1), 8), { shared: 0, exact: false, slot: -1, owners: [] }, 'the same image from another owner is not a match');
  t.equal(g.indexed, 10);

  g.add(fp(range(100, 10), 2), 8);
  g.add(fp(range(200, 10), 3), 8);
  t.equal(g.indexed, 30);
  g.add(fp(range(300, 10), 4), 8); // evicts owner 7's slot
  t.equal(g.size, 3);
  t.equal(g.indexed, 30, 'evicted hashes leave the index');
  t.equal(g.closestOther(fp(range(0, 10), 99), 9).shared, 0, 'an evicted fingerprint is not matched');
  t.equal(g.closestOther(fp(range(300, 10), 99), 9).shared, 10);
  for (let i = 0; i < 500; i++) g.add(fp(range(1000 + i * 10, 10), 5000 + i), i % 4);
  t.ok(g.indexed <= 3 * 10, `index entries bounded by capacity x hashes (${g.indexed})`);
});

t.test('GlobalIndex: a hash common to many fingerprints stops being indexed', async (t) => {
  const g = new GlobalIndex(10, 2, 3);
  for (let i = 0; i < 5; i++) g.add(fp([42, 1000 + i], 10 + i), i);
  t.equal(g.indexed, 3 + 5, 'hash 42 indexed for its first 3 slots only');
  t.equal(g.closestOther(fp([42, 7], 99), 99).shared, 1, 'still counted where indexed');
  for (let i = 0; i < 20; i++) g.add(fp([5000 + i, 6000 + i], 100 + i), 1);
  t.equal(g.indexed, 20, 'evicting unindexed entries leaves the index consistent');
});

t.test('LruMap: bounded, least recently used forgotten first', async (t) => {
  const m = new LruMap<number>(2);
  let made = 0;
  m.use('a', () => ++made);
  m.use('b', () => ++made);
  t.equal(m.use('a', () => ++made), 1, 'existing entry returned');
  m.use('c', () => ++made); // evicts b, the least recently used
  t.equal(m.size, 2);
  t.ok(m.has('a') && m.has('c') && !m.has('b'));
  t.equal(m.use('b', () => ++made), 4, 'a forgotten key starts again');
});

t.test('GlobalIndex: the distinct other owners at the threshold; one owner holds at most perOwner slots', async (t) => {
  const g = new GlobalIndex(10, 10, 100, 2);
  t.ok(g.add(fp(range(0, 10), 1), 1));
  t.ok(g.add(fp([...range(0, 9), 50], 2), 1));
  t.notOk(g.add(fp([...range(0, 8), 60, 61], 3), 1), "owner 1's third fingerprint is not stored");
  t.equal(g.heldBy(1), 2);
  t.ok(g.add(fp([...range(0, 7), 70, 71, 72], 4), 2));
  const m = g.closestOther(fp([...range(0, 9), 99], 9), 3, 7);
  t.same([m.shared, [...m.owners].sort()], [9, [1, 2]], 'owners 1 and 2 at 7 shared hashes or more');
  t.same(g.closestOther(fp([...range(0, 9), 99], 9), 3, 8).owners, [1], 'only owner 1 at 8');
  for (let i = 0; i < 10; i++) g.add(fp(range(1000 + 10 * i, 10), 100 + i), 10 + i);
  t.equal(g.heldBy(1), 0, 'eviction gives the slots back');
  t.ok(g.add(fp(range(0, 10), 200), 1), 'and the owner may store again');
});
