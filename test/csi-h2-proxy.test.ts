import assert from 'node:assert/strict';
import { HpackDecoder, HpackError, encodeLiterals } from '../csi-node/h2/hpack.js';
import { RequestRewriter, repairAuthority } from '../csi-node/h2/authority-proxy.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}

/** Split a forwarded byte stream back into frames (after the preface). */
function frames(bytes: Buffer): { type: number; flags: number; stream: number; payload: Buffer }[] {
  const out = [];
  let b = bytes.subarray(PREFACE.length);
  while (b.length) {
    const len = b.readUIntBE(0, 3);
    out.push({ type: b[3]!, flags: b[4]!, stream: b.readUInt32BE(5), payload: b.subarray(9, 9 + len) });
    b = b.subarray(9 + len);
  }
  return out;
}

describe('CSI socket: HPACK and the :authority repairing proxy', () => {
  it('decodes the RFC 7541 C.4 request examples (Huffman, dynamic table across blocks)', () => {
    const d = new HpackDecoder();
    assert.deepEqual(d.decode(hex('828684418cf1e3c2e5f23a6ba0ab90f4ff')), [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com']]);
    assert.deepEqual(d.decode(hex('828684be5886a8eb10649cbf')), [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com'], ['cache-control', 'no-cache']]);
    assert.deepEqual(d.decode(hex('828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf')), [[':method', 'GET'], [':scheme', 'https'], [':path', '/index.html'], [':authority', 'www.example.com'], ['custom-key', 'custom-value']]);
  });

  it('decodes the C.3 examples (plain literals) and round-trips its own literal encoding', () => {
    const d = new HpackDecoder();
    assert.deepEqual(d.decode(hex('828684410f7777772e6578616d706c652e636f6d')), [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com']]);
    const headers: [string, string][] = [[':path', '/csi.v1.Identity/Probe'], ['x-long', 'v'.repeat(300)]];
    assert.deepEqual(new HpackDecoder().decode(encodeLiterals(headers)), headers);
  });

  it('refuses malformed blocks with an HpackError', () => {
    for (const bad of ['ff', '41', '4003616263', 'be', '418cf1e3c2e5f23a6ba0ab90f4']) {
      assert.throws(() => new HpackDecoder().decode(hex(bad)), HpackError, bad);
    }
  });

  it('repairs only an :authority that is not a valid authority', () => {
    assert.deepEqual(repairAuthority([[':authority', '/csi/csi.sock'], [':path', '/a/b']]), { headers: [[':authority', 'localhost'], [':path', '/a/b']], repaired: '/csi/csi.sock' });
    for (const ok of ['localhost', 'unix:%2Fcsi%2Fcsi.sock', '[::1]:50051', 'csi.space.io']) {
      assert.equal(repairAuthority([[':authority', ok]]).repaired, undefined, ok);
    }
  });

  it('rewrites HEADERS (+CONTINUATION, padding, priority) and forwards other frames byte for byte, however the stream is cut', () => {
    const block = encodeLiterals([[':method', 'POST'], [':authority', '/csi/csi.sock'], [':path', '/csi.v1.Identity/Probe'], ['te', 'trailers']]);
    const settings = frame(0x4, 0, 0, Buffer.alloc(6));
    const padded = Buffer.concat([Buffer.from([3]), Buffer.alloc(5), block.subarray(0, 10), Buffer.alloc(3)]);
    const headers = frame(0x1, 0x8 | 0x20, 1, padded); // PADDED | PRIORITY, no END_HEADERS
    const cont = frame(0x9, 0x4, 1, block.subarray(10)); // END_HEADERS
    const data = frame(0x0, 0x1, 1, Buffer.from('00000000000', 'hex'));
    const input = Buffer.concat([PREFACE, settings, headers, cont, data]);
    for (const step of [input.length, 1, 7]) {
      const rw = new RequestRewriter();
      const out: Buffer[] = [];
      for (let i = 0; i < input.length; i += step) out.push(...rw.push(input.subarray(i, i + step)));
      const fr = frames(Buffer.concat(out));
      assert.deepEqual(fr.map((f) => f.type), [0x4, 0x1, 0x0], `step ${step}`);
      assert.equal(fr[1]!.flags, 0x4, 'one HEADERS frame with END_HEADERS, padding and priority gone');
      assert.deepEqual(new HpackDecoder().decode(fr[1]!.payload), [[':method', 'POST'], [':authority', 'localhost'], [':path', '/csi.v1.Identity/Probe'], ['te', 'trailers']]);
      assert.ok(fr[2]!.payload.equals(Buffer.from('00000000000', 'hex')));
      assert.equal(rw.repairs, 1);
    }
  });

  it('refuses what is not HTTP/2 and CONTINUATION without HEADERS', () => {
    assert.throws(() => new RequestRewriter().push(Buffer.from('GET / HTTP/1.1\r\n\r\n')), HpackError);
    assert.throws(() => new RequestRewriter().push(Buffer.concat([PREFACE, frame(0x9, 0x4, 1, Buffer.alloc(1))])), HpackError);
  });
});
