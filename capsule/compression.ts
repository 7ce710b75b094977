/** Segment compression codecs. zstd comes from the zstd-napi binding (Node 20 has none built in). */
import zlib from 'node:zlib';
import { createRequire } from 'node:module';
import type { Compression } from './policy.js';

type Zstd = { compress(b: Uint8Array, p?: unknown): Buffer; decompress(b: Uint8Array): Buffer };
let zstd: Zstd | null | undefined;

function loadZstd(): Zstd | null {
  if (zstd === undefined) {
    try {
      zstd = createRequire(import.meta.url)('zstd-napi') as Zstd;
    } catch {
      zstd = null;
    }
  }
  return zstd;
}

export function zstdAvailable(): boolean {
  return loadZstd() !== null;
}

/** Codec ids as stored in segment headers; never renumber. */
export const CODEC_ID: Record<Compression, number> = { none: 0, gzip: 1, brotli: 2, zstd: 3 };
const CODEC_BY_ID: Compression[] = ['none', 'gzip', 'brotli', 'zstd'];

export function codecName(id: number): Compression {
  const c = CODEC_BY_ID[id];
  if (!c) throw new Error(`unknown compression codec id ${id}`);
  return c;
}

export function compress(codec: Compression, data: Buffer): Buffer {
  switch (codec) {
    case 'none': return data;
    case 'gzip': return zlib.gzipSync(data, { level: 6 });
    case 'brotli': return zlib.brotliCompressSync(data, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 4, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: data.length } });
    case 'zstd': {
      const z = loadZstd();
      if (!z) throw new Error('zstd is not available on this build');
      return z.compress(data);
    }
  }
}

export function decompress(codec: Compression, data: Buffer, maxOutput: number): Buffer {
  switch (codec) {
    case 'none': return data;
    case 'gzip': return zlib.gunzipSync(data, { maxOutputLength: maxOutput });
    case 'brotli': return zlib.brotliDecompressSync(data, { maxOutputLength: maxOutput });
    case 'zstd': {
      const z = loadZstd();
      if (!z) throw new Error('zstd is not available on this build');
      const out = z.decompress(data);
      if (out.length > maxOutput) throw new Error('zstd segment decompresses beyond its recorded size');
      return out;
    }
  }
}
