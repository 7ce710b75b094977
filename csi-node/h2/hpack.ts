/**
 * HPACK (RFC 7541) header block decoding with the decoder's dynamic table, and encoding as plain
 * literals. Just enough for the authority proxy: it reads what a client's encoder produced and
 * writes blocks that never touch the server's dynamic table.
 */

/** The static table (RFC 7541 Appendix A), index 1..61. */
const STATIC: readonly (readonly [string, string])[] = [
  [':authority', ''], [':method', 'GET'], [':method', 'POST'], [':path', '/'], [':path', '/index.html'],
  [':scheme', 'http'], [':scheme', 'https'], [':status', '200'], [':status', '204'], [':status', '206'],
  [':status', '304'], [':status', '400'], [':status', '404'], [':status', '500'], ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'], ['accept-language', ''], ['accept-ranges', ''], ['accept', ''],
  ['access-control-allow-origin', ''], ['age', ''], ['allow', ''], ['authorization', ''], ['cache-control', ''],
  ['content-disposition', ''], ['content-encoding', ''], ['content-language', ''], ['content-length', ''],
  ['content-location', ''], ['content-range', ''], ['content-type', ''], ['cookie', ''], ['date', ''],
  ['etag', ''], ['expect', ''], ['expires', ''], ['from', ''], ['host', ''], ['if-match', ''],
  ['if-modified-since', ''], ['if-none-match', ''], ['if-range', ''], ['if-unmodified-since', ''],
  ['last-modified', ''], ['link', ''], ['location', ''], ['max-forwards', ''], ['proxy-authenticate', ''],
  ['proxy-authorization', ''], ['range', ''], ['referer', ''], ['refresh', ''], ['retry-after', ''],
  ['server', ''], ['set-cookie', ''], ['strict-transport-security', ''], ['transfer-encoding', ''],
  ['user-agent', ''], ['vary', ''], ['via', ''], ['www-authenticate', ''],
];

/**
 * Code lengths of the HPACK Huffman code for symbols 0..256 (RFC 7541 Appendix B). The code is
 * canonical, so the codes themselves follow from the lengths.
 */
const CODE_LENGTHS = [13,23,28,28,28,28,28,28,28,24,30,28,28,30,28,28,28,28,28,28,28,28,30,28,28,28,28,28,28,28,28,28,6,10,10,12,13,6,8,11,10,10,8,11,8,6,6,6,5,5,5,6,6,6,6,6,6,6,7,8,15,6,12,10,13,6,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,8,7,8,13,19,13,14,6,15,5,6,5,6,5,6,6,6,5,7,7,6,6,6,5,6,7,6,5,5,6,7,7,7,7,7,15,11,14,13,28,20,22,20,20,22,22,22,23,22,23,23,23,23,23,24,23,24,24,22,23,24,23,23,23,23,21,22,23,22,23,23,24,22,21,20,22,22,23,23,21,23,22,22,24,21,22,23,23,21,21,22,21,23,22,23,23,20,22,22,22,23,22,22,23,26,26,20,19,22,23,22,25,26,26,26,27,27,26,24,25,19,21,26,27,27,26,27,24,21,21,26,26,28,27,27,27,20,24,20,21,22,21,21,23,22,22,25,25,24,24,26,23,26,27,26,26,27,27,27,27,27,28,27,27,27,27,27,26,30];
const EOS = 256;

/** Decoding tree of the canonical code: node -> [child0, child1]; leaves hold ~symbol. */
const TREE: Int32Array = (() => {
  const order = [...CODE_LENGTHS.keys()].sort((a, b) => CODE_LENGTHS[a]! - CODE_LENGTHS[b]! || a - b);
  const tree = new Int32Array(2 * 2 * 512).fill(0); // node i: tree[2i], tree[2i+1]; 0 = empty
  let nodes = 1;
  let code = 0;
  let prevLen = CODE_LENGTHS[order[0]!]!;
  order.forEach((sym, i) => {
    const len = CODE_LENGTHS[sym]!;
    if (i > 0) code = (code + 1) << (len - prevLen);
    prevLen = len;
    let node = 0;
    for (let b = len - 1; b >= 0; b--) {
      const bit = (code >>> b) & 1;
      if (b === 0) {
        tree[2 * node + bit] = ~sym;
      } else {
        if (tree[2 * node + bit] === 0) tree[2 * node + bit] = nodes++;
        node = tree[2 * node + bit]!;
      }
    }
  });
  return tree;
})();

export class HpackError extends Error {}

function huffmanDecode(src: Buffer): string {
  const out: number[] = [];
  let node = 0;
  let bitsSinceSymbol = 0;
  let allOnes = true;
  for (const byte of src) {
    for (let b = 7; b >= 0; b--) {
      const bit = (byte >> b) & 1;
      const next = TREE[2 * node + bit]!;
      bitsSinceSymbol++;
      allOnes &&= bit === 1;
      if (next < 0) {
        const sym = ~next;
        if (sym === EOS) throw new HpackError('EOS symbol inside a Huffman string');
        out.push(sym);
        node = 0;
        bitsSinceSymbol = 0;
        allOnes = true;
      } else if (next === 0) {
        throw new HpackError('invalid Huffman code');
      } else {
        node = next;
      }
    }
  }
  // Padding: at most 7 bits, all ones (a prefix of EOS).
  if (bitsSinceSymbol > 7 || !allOnes) throw new HpackError('invalid Huffman padding');
  return Buffer.from(out).toString('latin1');
}

class Reader {
  pos = 0;
  constructor(private readonly b: Buffer) {}
  get done(): boolean {
    return this.pos >= this.b.length;
  }
  peek(): number {
    if (this.pos >= this.b.length) throw new HpackError('truncated header block');
    return this.b[this.pos]!;
  }
  integer(prefixBits: number): number {
    const max = (1 << prefixBits) - 1;
    let v = this.peek() & max;
    this.pos++;
    if (v < max) return v;
    let shift = 0;
    for (;;) {
      const byte = this.peek();
      this.pos++;
      v += (byte & 0x7f) * 2 ** shift;
      shift += 7;
      if (!(byte & 0x80)) break;
      if (shift > 28) throw new HpackError('integer too large');
    }
    return v;
  }
  string(): string {
    const huffman = (this.peek() & 0x80) !== 0;
    const len = this.integer(7);
    if (this.pos + len > this.b.length) throw new HpackError('truncated string literal');
    const raw = this.b.subarray(this.pos, this.pos + len);
    this.pos += len;
    return huffman ? huffmanDecode(raw) : raw.toString('latin1');
  }
}

/** The decoding side of one HPACK context (one direction of one connection). */
export class HpackDecoder {
  private dynamic: [string, string][] = []; // newest first
  private size = 0;
  private maxSize = 4096;

  constructor(private readonly limit = 65536) {}

  private entry(index: number): [string, string] {
    if (index >= 1 && index <= STATIC.length) return [...STATIC[index - 1]!] as [string, string];
    const d = this.dynamic[index - STATIC.length - 1];
    if (!d) throw new HpackError(`header index ${index} out of range`);
    return [d[0], d[1]];
  }

  private add(name: string, value: string): void {
    const sz = name.length + value.length + 32;
    this.dynamic.unshift([name, value]);
    this.size += sz;
    this.evict();
  }

  private evict(): void {
    while (this.size > this.maxSize && this.dynamic.length) {
      const [n, v] = this.dynamic.pop()!;
      this.size -= n.length + v.length + 32;
    }
  }

  decode(block: Buffer): [string, string][] {
    const r = new Reader(block);
    const out: [string, string][] = [];
    while (!r.done) {
      const first = r.peek();
      if (first & 0x80) {
        out.push(this.entry(r.integer(7)));
      } else if (first & 0x40) {
        const idx = r.integer(6);
        const name = idx ? this.entry(idx)[0] : r.string();
        const value = r.string();
        this.add(name, value);
        out.push([name, value]);
      } else if (first & 0x20) {
        const size = r.integer(5);
        if (size > this.limit) throw new HpackError(`dynamic table size ${size} above the limit`);
        this.maxSize = size;
        this.evict();
      } else {
        const idx = r.integer(4); // literal without indexing (0000) or never indexed (0001)
        const name = idx ? this.entry(idx)[0] : r.string();
        out.push([name, r.string()]);
      }
    }
    return out;
  }
}

function writeInteger(out: number[], value: number, prefixBits: number, firstByteFlags: number): void {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out.push(firstByteFlags | value);
    return;
  }
  out.push(firstByteFlags | max);
  let v = value - max;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
}

/** Encode headers as literals without indexing (no Huffman): the peer's table is never used. */
export function encodeLiterals(headers: readonly [string, string][]): Buffer {
  const out: number[] = [];
  for (const [name, value] of headers) {
    out.push(0x00);
    for (const s of [name, value]) {
      const bytes = Buffer.from(s, 'latin1');
      writeInteger(out, bytes.length, 7, 0x00);
      for (const b of bytes) out.push(b);
    }
  }
  return Buffer.from(out);
}
