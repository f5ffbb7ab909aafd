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
const CLOSE_ARRAY = 0x5d;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;

/**
 * Throw too_deep when `text` nests arrays and objects deeper than MAX_JSON_DEPTH (brackets inside
 * strings do not count). Tensor bodies are mostly digits, commas and dots, all below '[' (0x5b) and
 * none a quote: one comparison passes each of them. (A Set lookup per character made this scan cost
 * more than JSON.parse of the same body.)
 */
export function checkJsonDepth(text: string): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) inString = false;
      continue;
    }
    if (c < OPEN_ARRAY && c !== QUOTE) continue;
    switch (c) {
      case QUOTE:
        inString = true;
        break;
      case OPEN_ARRAY:
      case OPEN_OBJECT:
        if (++depth > MAX_JSON_DEPTH) {
          throw new InputError('too_deep', `the JSON body nests deeper than ${MAX_JSON_DEPTH} levels (arrays and objects)`);
        }
        break;
      case CLOSE_ARRAY:
      case CLOSE_OBJECT:
        depth--;
        break;
      default:
    }
  }
}
