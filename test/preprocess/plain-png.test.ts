import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';
import t from 'tap';
import type { InputSpec } from '../../src/ensemble/manifest.js';
import { imageToTensor } from '../../src/preprocess/image.js';
import { decodePlainPng, MAX_CHUNKS } from '../../src/preprocess/plain-png.js';

const limits = { maxInputPixels: 10_000_000 };

/** A deterministic byte stream (xorshift), so every run checks the same images. */
function bytesFrom(seed: number, n: number): Uint8Array {
  let s = seed >>> 0 || 1;
  return Uint8Array.from({ length: n }, () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s & 0xff;
  });
}

function chunk(type: string, data: Uint8Array = new Uint8Array(0)): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])));
  return Buffer.concat([head, data, crc]);
}

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Our own PNG writer, so that each row filter (0-4) and odd layouts are exercised on purpose. */
function encode(pixels: Uint8Array, width: number, height: number, channels: 1 | 3, opts: {
  filters?: number[]; bitDepth?: number; colourType?: number; interlace?: number; extra?: Buffer[]; splitIdat?: number;
} = {}): Buffer {
  const rowBytes = width * channels;
  const filtered = Buffer.alloc(height * (rowBytes + 1));
  for (let y = 0; y < height; y++) {
    const f = opts.filters ? opts.filters[y % opts.filters.length] : 0;
    filtered[y * (rowBytes + 1)] = f;
    for (let i = 0; i < rowBytes; i++) {
      const at = (yy: number, ii: number) => (yy < 0 || ii < 0 ? 0 : pixels[yy * rowBytes + ii]);
      const a = at(y, i - channels), b = at(y - 1, i), c = at(y - 1, i - channels);
      const p = a + b - c;
      const pred = [0, a, b, (a + b) >> 1,
        Math.abs(p - a) <= Math.abs(p - b) && Math.abs(p - a) <= Math.abs(p - c) ? a : Math.abs(p - b) <= Math.abs(p - c) ? b : c][f];
      filtered[y * (rowBytes + 1) + 1 + i] = (pixels[y * rowBytes + i] - pred) & 0xff;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = opts.bitDepth ?? 8;
  ihdr[9] = opts.colourType ?? (channels === 1 ? 0 : 2);
  ihdr[12] = opts.interlace ?? 0;
  const z = deflateSync(filtered);
  const parts = opts.splitIdat ? [z.subarray(0, opts.splitIdat), z.subarray(opts.splitIdat)] : [z];
  return Buffer.concat([SIGNATURE, chunk('IHDR', ihdr), ...(opts.extra ?? []), ...parts.map((p) => chunk('IDAT', p)), chunk('IEND')]);
}

const grey: InputSpec = {
  name: 'input', shape: [1, 28, 28], channels: 'gray', scale: 1 / 255, mean: [0.2860], std: [0.3530],
  resize: { fit: 'fill', kernel: 'lanczos3', background: 0 },
};
const rgb: InputSpec = { ...grey, shape: [3, 8, 6], channels: 'rgb', mean: [0.4, 0.5, 0.6], std: [0.2, 0.25, 0.3] };

t.test('every row filter and a split IDAT decode to the exact samples', async (t) => {
  for (const [channels, w, h] of [[1, 28, 28], [3, 6, 8]] as const) {
    const pixels = bytesFrom(w * h * channels, w * h * channels);
    for (const f of [0, 1, 2, 3, 4]) {
      t.same(decodePlainPng(encode(pixels, w, h, channels, { filters: [f] }), w, h, channels), pixels, `${channels} ch, filter ${f}`);
    }
    const mixed = encode(pixels, w, h, channels, { filters: [4, 3, 2, 1, 0], splitIdat: 7, extra: [chunk('tEXt', Buffer.from('a\0b'))] });
    t.same(decodePlainPng(mixed, w, h, channels), pixels, `${channels} ch, mixed filters, two IDATs, a tEXt chunk`);
  }
});

/** sharp's path, forced by an unknown ancillary chunk that libvips ignores and the fast path refuses. */
function withUnknownChunk(png: Buffer): Buffer {
  return Buffer.concat([png.subarray(0, 33), chunk('prVt', Buffer.from('x')), png.subarray(33)]);
}

t.test('the fast path and sharp give identical tensors for PNGs that sharp itself wrote', async (t) => {
  const grey3 = await sharp(Buffer.alloc(28 * 28, 7), { raw: { width: 28, height: 28, channels: 1 } }).png().toBuffer();
  t.equal(decodePlainPng(grey3, 28, 28, 1), null, 'an RGB file for a grey model goes to sharp (its own grey conversion)');
  for (const [spec, channels] of [[grey, 1], [rgb, 3]] as const) {
    const [, h, w] = spec.shape;
    for (let seed = 1; seed <= 12; seed++) {
      const raw = Buffer.from(bytesFrom(seed * 7919, w * h * channels));
      const decoded = sharp(raw, { raw: { width: w, height: h, channels } });
      // Without b-w, sharp writes one raw channel as an RGB PNG (which rightly goes to sharp).
      const png = await (channels === 1 ? decoded.toColourspace('b-w') : decoded)
        .png({ compressionLevel: seed % 10, adaptiveFiltering: seed % 2 === 0, palette: false }).toBuffer();
      t.not(decodePlainPng(png, w, h, channels), null, `seed ${seed}: takes the fast path`);
      t.equal(decodePlainPng(withUnknownChunk(png), w, h, channels), null, 'an unknown chunk sends it to sharp');
      const fast = new Float32Array(w * h * channels);
      const slow = new Float32Array(w * h * channels);
      await imageToTensor(png, spec, limits, fast);
      await imageToTensor(withUnknownChunk(png), spec, limits, slow);
      t.same(Array.from(fast), Array.from(slow), `${spec.channels} seed ${seed}: bitwise equal`);
    }
  }
});

t.test('anything that needs sharp, or is damaged, is left to sharp (null)', async (t) => {
  const pixels = bytesFrom(5, 28 * 28);
  const good = encode(pixels, 28, 28, 1);
  const cases: [string, Buffer, number, number, number][] = [
    ['another size', good, 27, 28, 1],
    ['grey file for an RGB model', good, 28, 28, 3],
    ['16-bit', encode(pixels, 28, 28, 1, { bitDepth: 16 }), 28, 28, 1],
    ['palette', encode(pixels, 28, 28, 1, { colourType: 3 }), 28, 28, 1],
    ['grey + alpha', encode(pixels, 28, 28, 1, { colourType: 4 }), 28, 28, 1],
    ['interlaced', encode(pixels, 28, 28, 1, { interlace: 1 }), 28, 28, 1],
    ['EXIF orientation', encode(pixels, 28, 28, 1, { extra: [chunk('eXIf', Buffer.from('MM\0*'))] }), 28, 28, 1],
    ['colour profile', encode(pixels, 28, 28, 1, { extra: [chunk('iCCP', Buffer.from('p\0\0x'))] }), 28, 28, 1],
    ['gamma', encode(pixels, 28, 28, 1, { extra: [chunk('gAMA', Buffer.from([0, 0, 0xb1, 0x8f]))] }), 28, 28, 1],
    ['transparency', encode(pixels, 28, 28, 1, { extra: [chunk('tRNS', Buffer.from([0, 0]))] }), 28, 28, 1],
    ['unknown filter type', encode(pixels, 28, 28, 1, { filters: [5] }), 28, 28, 1],
    ['truncated (no IEND)', good.subarray(0, good.length - 12), 28, 28, 1],
    ['cut inside a chunk', good.subarray(0, good.length - 30), 28, 28, 1],
    ['not a PNG', Buffer.from('GIF89a not a png at all, padded to be long enough...'), 28, 28, 1],
    ['empty', Buffer.alloc(0), 28, 28, 1],
  ];
  const badCrc = Buffer.from(good);
  badCrc[40] ^= 0xff; // inside the IDAT data
  cases.push(['bad CRC', badCrc, 28, 28, 1]);
  const badZlib = encode(pixels, 28, 28, 1);
  const idatData = 33 + 8;
  badZlib.fill(0xff, idatData, idatData + 6);
  const fixed = Buffer.concat([badZlib.subarray(0, 33), chunk('IDAT', badZlib.subarray(idatData, badZlib.length - 16)), chunk('IEND')]);
  cases.push(['corrupt zlib stream', fixed, 28, 28, 1]);
  for (const [name, bytes, w, h, c] of cases) t.equal(decodePlainPng(bytes, w, h, c), null, name);
});

t.test('a damaged model-sized PNG still gets sharp\'s 400', async (t) => {
  const good = encode(bytesFrom(9, 28 * 28), 28, 28, 1);
  const out = new Float32Array(28 * 28);
  const err = await imageToTensor(good.subarray(0, good.length - 30), grey, limits, out).then(() => null, (e: unknown) => e);
  t.match(err, { name: 'InputError', code: 'truncated_image' }, 'an input error (the HTTP layer answers 400)');
  await imageToTensor(good, grey, limits, out);
  t.ok(Number.isFinite(out[0]), 'the intact file decodes');
});

t.test('a file of more chunks than the fast path walks goes to sharp, and decodes the same', async (t) => {
  const pixels = bytesFrom(7, 28 * 28);
  const plain = encode(pixels, 28, 28, 1);
  t.same(decodePlainPng(plain, 28, 28, 1), pixels, 'the plain file: fast path');
  const at = plain.length - 12; // before IEND
  const padded = Buffer.concat([plain.subarray(0, at), ...Array.from({ length: MAX_CHUNKS }, () => chunk('IDAT')), plain.subarray(at)]);
  t.equal(decodePlainPng(padded, 28, 28, 1), null, `${MAX_CHUNKS} more empty IDAT chunks: left to sharp`);
  const [fast, slow] = [new Float32Array(784), new Float32Array(784)];
  await imageToTensor(plain, grey, limits, fast);
  await imageToTensor(padded, grey, limits, slow);
  t.same(slow, fast, 'same tensor either way');
});
