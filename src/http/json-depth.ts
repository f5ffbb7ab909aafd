/**
 * A bound on JSON nesting, checked on the text before it is parsed: JSON.parse of a body nested a
 * million levels deep blocks the event loop for a third of a second and then the validator and
 * decoder walk it again. No request this service takes nests deeper than a handful of levels
 * (tensors are [N, C, H, W], KServe parameters are flat).
 */
import { InputError } from '../errors.js';

export const MAX_JSON_DEPTH = 64;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_ARRAY = 0x5b;
const OPEN_OBJECT = 0x7b;
/** What changes the depth or starts a string; everything else (digits, commas, dots) is skipped. */
const STRUCTURE = /["[\]{}]/g;
/** Inside a string: its end, or an escape (which skips the character after it). */
const STRING_END = /["\\]/g;

/**
 * Whether `text` holds more than `limit` opening brackets (inside strings too): if it does not, it
 * cannot nest deeper than `limit`. A tensor body has a handful (a flat `data` array) to about a
 * hundred (data nested as [N][C][H][W]); indexOf finds each far faster than a scan visits them.
 */
function moreOpeningsThan(text: string, limit: number): boolean {
  let n = 0;
  for (const bracket of ['[', '{']) {
    for (let at = text.indexOf(bracket); at !== -1; at = text.indexOf(bracket, at + 1)) {
      if (++n > limit) return true;
    }
  }
  return false;
}

/**
 * Throw too_deep when `text` nests arrays and objects deeper than MAX_JSON_DEPTH (brackets inside
 * strings do not count). Tensor bodies are mostly digits, commas and dots: the regular expressions
 * jump from one bracket or quote to the next instead of visiting every character (a Set lookup per
 * character cost 1.0-1.3 ms on a 60 KB ResNet body, more than JSON.parse of it; a plain loop of
 * comparisons 150 us; this about 36 us). A body with no more opening brackets than the bound cannot
 * be too deep, and most are let through on that count alone.
 */
export function checkJsonDepth(text: string): void {
  if (!moreOpeningsThan(text, MAX_JSON_DEPTH)) return;
  let depth = 0;
  STRUCTURE.lastIndex = 0;
  for (let m = STRUCTURE.exec(text); m !== null; m = STRUCTURE.exec(text)) {
    const c = text.charCodeAt(m.index);
    if (c === QUOTE) {
      STRING_END.lastIndex = m.index + 1;
      let end = STRING_END.exec(text);
      while (end !== null && text.charCodeAt(end.index) === BACKSLASH) {
        STRING_END.lastIndex = end.index + 2;
        end = STRING_END.exec(text);
      }
      if (end === null) return; // an unterminated string: JSON.parse names it
      STRUCTURE.lastIndex = end.index + 1;
    } else if (c === OPEN_ARRAY || c === OPEN_OBJECT) {
      if (++depth > MAX_JSON_DEPTH) {
        throw new InputError('too_deep', `the JSON body nests deeper than ${MAX_JSON_DEPTH} levels (arrays and objects)`);
      }
    } else {
      depth--;
    }
  }
}
