/**
 * A fast path for the commonest request: a PNG that is already the model's input, i.e. exactly the
 * model's width and height, 8-bit grey for a grey model or 8-bit RGB for an RGB one, not interlaced,
 * and with no chunk that could change its pixels under sharp (no orientation, colour profile, gamma,
 * transparency or palette). For such a file sharp's pipeline (rotate, flatten, convert, resize to the
 * same size) returns the stored samples unchanged, so they can be read directly: inflate the IDAT
 * stream with node:zlib and undo the PNG row filters. For a 28x28 image sharp's per-call set-up
 * (a libvips pipeline) costs far more than the decode itself; see the README's benchmark.
 *
 * Anything else, or anything odd about the file (bad CRC, missing IEND, short data), returns null and
 * goes through sharp, which decodes it in full and writes the error messages. The tests hold the two
 * paths to identical output. One oddity is refused here instead: compressed data that inflates past
 * what the header says the image needs. Inflation stops at that size (a small file can inflate to
 * gigabytes, synchronously, on the event loop), and the request gets an InputError. The walk over
 * chunks is bounded too: a file of more than MAX_CHUNKS chunks (650,000 empty IDATs fit in 8 MB and
 * take a third of a second of CRCs here) goes to sharp, which reads it off the event loop.
 */
import { crc32, inflateSync } from 'node:zlib';
import { InputError } from '../errors.js';

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
/** Ancillary chunks that cannot change decoded pixels (text, physical size, time stamp). */
const INERT = new Set(['tEXt', 'zTXt', 'iTXt', 'pHYs', 'tIME']);
/** Chunks the fast path walks before it leaves the file to sharp (a 28x28 PNG has 3 to 10). */
export const MAX_CHUNKS = 256;
const GREY = 0;
const RGB = 2;

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/** Undo the per-row filters of a non-interlaced 8-bit image in place; false on an unknown filter. */
function unfilter(raw: Buffer, out: Uint8Array, height: number, rowBytes: number, bpp: number): boolean {
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (rowBytes + 1)];
    const src = y * (rowBytes + 1) + 1;
    const row = y * rowBytes;
    const prev = row - rowBytes;
    for (let i = 0; i < rowBytes; i++) {
      const x = raw[src + i];
      const left = i >= bpp ? out[row + i - bpp] : 0;
      const up = y > 0 ? out[prev + i] : 0;
      const upLeft = y > 0 && i >= bpp ? out[prev + i - bpp] : 0;
      let v: number;
      switch (filter) {
        case 0: v = x; break;
        case 1: v = x + left; break;
        case 2: v = x + up; break;
        case 3: v = x + ((left + up) >> 1); break;
        case 4: v = x + paeth(left, up, upLeft); break;
        default: return false;
      }
      out[row + i] = v & 0xff;
    }
  }
  return true;
}

/**
 * The HWC samples of `bytes` when it is a plain PNG of exactly width x height x channels (1 grey,
 * 3 RGB) as described above; null when it is not, or when anything about it needs sharp. Throws
 * InputError `image_data_mismatch` when its data inflates past what its header needs; `what` names
 * the image in that error.
 */
export function decodePlainPng(bytes: Uint8Array, width: number, height: number, channels: number,
  what = 'image'): Uint8Array | null {
  if (typeof crc32 !== 'function') return null; // node < 20.15
  if (bytes.length < 8 + 25 + 12 || SIGNATURE.some((b, i) => bytes[i] !== b)) return null;
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const idat: Buffer[] = [];
  let offset = 8;
  let sawHeader = false;
  let sawEnd = false;
  for (let chunks = 0; offset + 12 <= buf.length && !sawEnd; chunks++) {
    if (chunks >= MAX_CHUNKS) return null;
    const length = buf.readUInt32BE(offset);
    const end = offset + 12 + length;
    if (end > buf.length) return null;
    const type = buf.toString('latin1', offset + 4, offset + 8);
    const data = buf.subarray(offset + 8, offset + 8 + length);
    if (crc32(buf.subarray(offset + 4, offset + 8 + length)) !== buf.readUInt32BE(offset + 8 + length)) return null;
    if (!sawHeader) {
      if (type !== 'IHDR' || length !== 13) return null;
      const colourType = channels === 1 ? GREY : channels === 3 ? RGB : -1;
      if (data.readUInt32BE(0) !== width || data.readUInt32BE(4) !== height || data[8] !== 8 || data[9] !== colourType
        || data[10] !== 0 || data[11] !== 0 || data[12] !== 0) return null;
      sawHeader = true;
    } else if (type === 'IDAT') {
      idat.push(data);
    } else if (type === 'IEND') {
      sawEnd = true;
    } else if (!INERT.has(type)) {
      return null;
    }
    offset = end;
  }
  if (!sawEnd || idat.length === 0) return null;
  const rowBytes = width * channels;
  const needBytes = height * (rowBytes + 1);
  let raw: Buffer;
  try {
    raw = inflateSync(idat.length === 1 ? idat[0] : Buffer.concat(idat), { maxOutputLength: needBytes });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new InputError('image_data_mismatch', `${what}: the PNG's image data inflates to more than the ${needBytes} bytes `
        + `its ${width}x${height} ${channels === 1 ? 'grey' : 'RGB'} header needs`);
    }
    return null;
  }
  if (raw.length !== needBytes) return null;
  const out = new Uint8Array(height * rowBytes);
  return unfilter(raw, out, height, rowBytes, channels) ? out : null;
}
