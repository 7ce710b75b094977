/**
 * NVMe/TCP framing without a socket: CRC32C, the incremental PduReader (any slicing of the byte
 * stream, digests, every header validation) and the encoders, which must round-trip through it.
 */
import assert from 'node:assert/strict';
import { crc32c, crc32cOf } from '../gateway/nvme/crc32c.js';
import { Fes, HLEN, PduFlag, PduType } from '../gateway/nvme/constants.js';
import { Command, buildSqe, decodeCqe, encodeCqe } from '../gateway/nvme/command.js';
import {
  CONTROLLER_ACCEPTS, HOST_ACCEPTS, PduError, PduReader, assemble, dataFields, encodeC2HData, encodeCapsuleCmd, encodeCapsuleResp,
  encodeH2CData, encodeICReq, encodeICResp, encodeR2T, encodeTermReq, icReqFields, icRespFields, r2tFields, termReqFields, type Pdu,
} from '../gateway/nvme/pdu.js';
import { prand } from './helpers/tmp.js';

/** Bit-at-a-time CRC32C: the definition, to check the table-driven one against. */
function crcReference(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return ~c >>> 0;
}

const controllerReader = (digests = false, maxPduBytes = 1 << 20) => {
  const r = new PduReader({ accept: CONTROLLER_ACCEPTS, maxPduBytes });
  r.headerDigest = digests;
  r.dataDigest = digests;
  return r;
};

const hostReader = (digests = false) => {
  const r = new PduReader({ accept: HOST_ACCEPTS, maxPduBytes: 1 << 20 });
  r.headerDigest = digests;
  r.dataDigest = digests;
  return r;
};

function expectPduError(fn: () => unknown, fes: number, fei: number, re?: RegExp): PduError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof PduError, `expected PduError, got ${String(e)}`);
    assert.equal(e.fes, fes, `FES of "${e.message}"`);
    assert.equal(e.fei, fei, `FEI of "${e.message}"`);
    if (re) assert.match(e.message, re);
    return e;
  }
  assert.fail(`expected PduError FES ${fes} FEI ${fei}`);
}

/** Comparable form of a PDU (buffers copied, so views into reused chunks cannot fool us). */
const plain = (p: Pdu) => ({ type: p.type, flags: p.flags, header: Buffer.from(p.header), data: p.data ? Buffer.from(p.data) : undefined, ok: p.dataDigestOk });

function commonHeader(type: number, flags: number, hlen: number, pdo: number, plen: number, total = Math.max(hlen, 8)): Buffer {
  const b = Buffer.alloc(total);
  b[0] = type;
  b[1] = flags;
  b[2] = hlen;
  b[3] = pdo;
  b.writeUInt32LE(plen, 4);
  return b;
}

function sampleSqe(opcode: number, cid: number): Buffer {
  return buildSqe({ opcode, cid, nsid: 1, sglId: 0x5a, sglLength: 4096, cdw: { 10: 0x11223344, 12: 7 } });
}

/** A host-to-controller stream of several PDUs of every kind the controller accepts. */
function hostStream(digests: boolean): { bytes: Buffer; count: number } {
  const dg = { header: digests, data: digests };
  const parts: Buffer[] = [
    encodeICReq({ headerDigest: digests, dataDigest: digests, hpda: 3, maxR2T: 5 }),
    ...encodeCapsuleCmd(sampleSqe(0x02, 1), undefined, dg),
    ...encodeCapsuleCmd(sampleSqe(0x01, 2), prand(1000, 11), dg),
    ...encodeH2CData(2, 7, 0, prand(333, 12), false, dg),
    ...encodeH2CData(2, 7, 333, prand(5, 13), true, dg),
    ...encodeCapsuleCmd(sampleSqe(0x00, 3), undefined, dg),
    encodeTermReq(PduType.H2CTermReq, Fes.PduSequenceError, 0x1234, prand(40, 14)),
  ];
  return { bytes: Buffer.concat(parts), count: 7 };
}

describe('nvme crc32c', function () {
  it('matches the published check values', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
    assert.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa);
    assert.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
    assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i))), 0x46dd794e);
    assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i))), 0x113fdb5c);
    assert.equal(crc32c(Buffer.alloc(0)), 0);
  });

  it('agrees with the bitwise definition at every length and alignment', () => {
    const buf = prand(300, 5);
    for (let len = 0; len <= 80; len++) {
      for (const start of [0, 1, 3, 7]) {
        const b = buf.subarray(start, start + len);
        assert.equal(crc32c(b), crcReference(b), `len ${len} start ${start}`);
      }
    }
    assert.equal(crc32c(buf), crcReference(buf));
  });

  it('chains across any split and over lists of buffers', () => {
    const data = prand(1000, 6);
    const whole = crc32c(data);
    for (let i = 0; i <= data.length; i += 37) {
      assert.equal(crc32c(data.subarray(i), crc32c(data.subarray(0, i))), whole, `split at ${i}`);
    }
    assert.equal(crc32c(data.subarray(500), crc32c(data.subarray(0, 500))), whole);
    assert.equal(crc32cOf([data.subarray(0, 1), data.subarray(1, 9), data.subarray(9, 9), data.subarray(9)]), whole);
    assert.equal(crc32cOf([]), 0);
    const v = Buffer.from('123456789');
    assert.equal(crc32c(v.subarray(4), crc32c(v.subarray(0, 4))), 0xe3069283);
  });
});

describe('nvme PDU reader', function () {
  for (const digests of [false, true]) {
    describe(digests ? 'with header and data digests' : 'without digests', function () {
      const { bytes, count } = hostStream(digests);
      const expected = controllerReader(digests).push(bytes).map(plain);

      it('frames a stream of several PDUs in one push', () => {
        assert.equal(expected.length, count);
        assert.deepEqual(expected.map((p) => p.type), [PduType.ICReq, PduType.CapsuleCmd, PduType.CapsuleCmd, PduType.H2CData, PduType.H2CData, PduType.CapsuleCmd, PduType.H2CTermReq]);
        assert.ok(expected.every((p) => p.ok));
        assert.deepEqual(expected[2]!.data, prand(1000, 11));
        assert.deepEqual(expected[3]!.data, prand(333, 12));
        assert.deepEqual(expected[4]!.data, prand(5, 13));
        assert.equal(expected[1]!.data, undefined);
        assert.equal(expected[6]!.data!.length, 40);
        assert.deepEqual(new Command(expected[2]!.header.subarray(8)).sqe, sampleSqe(0x01, 2));
      });

      it('frames it identically across every split point', () => {
        for (let i = 0; i <= bytes.length; i++) {
          const r = controllerReader(digests);
          const got = [...r.push(bytes.subarray(0, i)), ...r.push(bytes.subarray(i))].map(plain);
          assert.deepEqual(got, expected, `split at ${i}`);
          assert.equal(r.pending, 0);
        }
      });

      it('frames it identically across pairs of split points', () => {
        for (let i = 0; i <= bytes.length; i += 13) {
          for (let j = i; j <= bytes.length; j += 7) {
            const r = controllerReader(digests);
            const got = [...r.push(bytes.subarray(0, i)), ...r.push(bytes.subarray(i, j)), ...r.push(bytes.subarray(j))].map(plain);
            assert.equal(got.length, count, `splits at ${i}, ${j}`);
            assert.deepEqual(got, expected, `splits at ${i}, ${j}`);
          }
        }
      });

      it('frames it identically byte by byte, reporting what is pending', () => {
        const r = controllerReader(digests);
        const got: Pdu[] = [];
        let consumed = 0;
        for (let i = 0; i < bytes.length; i++) {
          const out = r.push(bytes.subarray(i, i + 1));
          for (const p of out) consumed += p.header[4]! | (p.header[5]! << 8) | (p.header[6]! << 16);
          got.push(...out);
          assert.equal(r.pending, i + 1 - consumed);
        }
        assert.deepEqual(got.map(plain), expected);
        assert.equal(r.pending, 0);
        // An empty push is harmless.
        assert.deepEqual(r.push(Buffer.alloc(0)), []);
      });
    });
  }

  it('hands out data as views of the received chunk when a PDU arrived whole', () => {
    const chunk = Buffer.concat(encodeCapsuleCmd(sampleSqe(0x01, 9), prand(512, 2), { header: false, data: false }));
    const [p] = controllerReader().push(chunk);
    assert.equal(p!.data!.buffer, chunk.buffer);
    assert.deepEqual(p!.data, prand(512, 2));
  });

  it('frames a large PDU trickled in one byte at a time', () => {
    // 256 KiB of H2CData in single bytes: the framer must stay linear in the bytes received.
    const data = prand(256 * 1024, 21);
    const bytes = Buffer.concat(encodeH2CData(1, 2, 0, data, true, { header: true, data: true }));
    const r = controllerReader(true);
    const got: Pdu[] = [];
    for (let i = 0; i < bytes.length; i++) got.push(...r.push(bytes.subarray(i, i + 1)));
    assert.equal(got.length, 1);
    assert.ok(got[0]!.dataDigestOk);
    assert.deepEqual(got[0]!.data, data);
    assert.deepEqual(dataFields(got[0]!.header), { cccid: 1, ttag: 2, datao: 0, datal: data.length });
  });

  describe('digests', function () {
    const dg = { header: true, data: true };

    it('verifies header and data digests', () => {
      const data = prand(4096, 3);
      const bytes = Buffer.concat(encodeCapsuleCmd(sampleSqe(0x01, 4), data, dg));
      assert.equal(bytes.length, 72 + 4 + 4096 + 4);
      assert.equal(bytes.readUInt32LE(72), crc32c(bytes.subarray(0, 72)));
      assert.equal(bytes.readUInt32LE(bytes.length - 4), crc32c(data));
      const [p] = controllerReader(true).push(bytes);
      assert.equal(p!.flags & (PduFlag.HDGSTF | PduFlag.DDGSTF), PduFlag.HDGSTF | PduFlag.DDGSTF);
      assert.ok(p!.dataDigestOk);
      assert.deepEqual(p!.data, data);
    });

    it('fails the connection on a header digest mismatch (FES 3)', () => {
      const bytes = Buffer.concat(encodeCapsuleCmd(sampleSqe(0x02, 4), undefined, dg));
      const badField = Buffer.from(bytes);
      badField[20] ^= 0x01; // a field no other check looks at (SQE byte 12)
      expectPduError(() => controllerReader(true).push(badField), Fes.HeaderDigestError, 0, /header digest/);
      const badDigest = Buffer.from(bytes);
      badDigest[73] ^= 0x80;
      const e = expectPduError(() => controllerReader(true).push(badDigest), Fes.HeaderDigestError, 0);
      assert.deepEqual(e.header, badDigest.subarray(0, 72));
      // The same mismatch on an H2CData PDU, arriving in pieces.
      const h2c = Buffer.concat(encodeH2CData(1, 1, 0, prand(100, 1), true, dg));
      h2c[12] ^= 0xff;
      const r = controllerReader(true);
      assert.deepEqual(r.push(h2c.subarray(0, 30)), []);
      expectPduError(() => r.push(h2c.subarray(30)), Fes.HeaderDigestError, 0);
    });

    it('flags a data digest mismatch on the PDU and goes on framing', () => {
      const data = prand(700, 4);
      const bad = Buffer.concat(encodeCapsuleCmd(sampleSqe(0x01, 5), data, dg));
      bad[76 + 100] ^= 0x04;
      const good = Buffer.concat(encodeH2CData(5, 0, 0, data, true, dg));
      const badDigest = Buffer.concat(encodeH2CData(5, 0, 0, data, true, dg));
      badDigest[badDigest.length - 1] ^= 0x01;
      const pdus = controllerReader(true).push(Buffer.concat([bad, good, badDigest]));
      assert.deepEqual(pdus.map((p) => p.dataDigestOk), [false, true, false]);
      assert.deepEqual(pdus[1]!.data, data);
    });

    it('accepts data digests alone, and header digests alone', () => {
      const data = prand(64, 8);
      const onlyData = new PduReader({ accept: CONTROLLER_ACCEPTS, maxPduBytes: 4096 });
      onlyData.dataDigest = true;
      const a = onlyData.push(Buffer.concat(encodeCapsuleCmd(sampleSqe(1, 1), data, { header: false, data: true })));
      assert.equal(a[0]!.flags & 3, PduFlag.DDGSTF);
      assert.deepEqual(a[0]!.data, data);
      const onlyHeader = new PduReader({ accept: CONTROLLER_ACCEPTS, maxPduBytes: 4096 });
      onlyHeader.headerDigest = true;
      const b = onlyHeader.push(Buffer.concat(encodeCapsuleCmd(sampleSqe(1, 1), data, { header: true, data: false })));
      assert.equal(b[0]!.flags & 3, PduFlag.HDGSTF);
      assert.deepEqual(b[0]!.data, data);
    });
  });

  describe('header validation', function () {
    it('rejects PDU types the receiver must not get, and unknown types (FEI 0)', () => {
      for (const t of [PduType.ICResp, PduType.C2HTermReq, PduType.CapsuleResp, PduType.C2HData, PduType.R2T, 0x08, 0x0a, 0x7f, 0xff]) {
        const e = expectPduError(() => controllerReader().push(commonHeader(t, 0, 24, 0, 24)), Fes.InvalidHeaderField, 0, /unexpected PDU type/);
        assert.equal(e.header![0], t);
      }
      for (const t of [PduType.ICReq, PduType.H2CTermReq, PduType.CapsuleCmd, PduType.H2CData]) {
        expectPduError(() => hostReader().push(commonHeader(t, 0, 24, 0, 24)), Fes.InvalidHeaderField, 0);
      }
    });

    it('checks the common header as soon as its 8 bytes are in', () => {
      const r = controllerReader();
      const h = commonHeader(PduType.CapsuleCmd, 0, 72, 0, 0x7fffffff, 8);
      assert.deepEqual(r.push(h.subarray(0, 7)), []);
      expectPduError(() => r.push(h.subarray(7)), Fes.DataLimitExceeded, 4);
    });

    it('rejects a wrong HLEN (FEI 2)', () => {
      expectPduError(() => controllerReader().push(commonHeader(PduType.CapsuleCmd, 0, 64, 0, 72)), Fes.InvalidHeaderField, 2, /HLEN 64/);
      expectPduError(() => controllerReader().push(commonHeader(PduType.ICReq, 0, 127, 0, 128)), Fes.InvalidHeaderField, 2);
      expectPduError(() => controllerReader().push(commonHeader(PduType.H2CData, 0, 0, 0, 24)), Fes.InvalidHeaderField, 2);
      expectPduError(() => hostReader().push(commonHeader(PduType.R2T, 0, 28, 0, 28)), Fes.InvalidHeaderField, 2);
    });

    it('rejects a PLEN shorter than the header and its digest (FEI 4)', () => {
      expectPduError(() => controllerReader().push(commonHeader(PduType.CapsuleCmd, 0, 72, 0, 71)), Fes.InvalidHeaderField, 4, /shorter than the header/);
      expectPduError(() => controllerReader().push(commonHeader(PduType.ICReq, 0, 128, 0, 0)), Fes.InvalidHeaderField, 4);
      expectPduError(() => controllerReader(true).push(commonHeader(PduType.CapsuleCmd, PduFlag.HDGSTF, 72, 0, 72)), Fes.InvalidHeaderField, 4);
      expectPduError(() => controllerReader().push(commonHeader(PduType.H2CTermReq, 0, 24, 0, 23)), Fes.InvalidHeaderField, 4);
    });

    it('rejects a PLEN beyond the limit (FES 5, FEI 4)', () => {
      expectPduError(() => controllerReader(false, 4096).push(commonHeader(PduType.CapsuleCmd, 0, 72, 72, 4097)), Fes.DataLimitExceeded, 4, /exceeds the limit/);
      expectPduError(() => controllerReader(false, 4096).push(commonHeader(PduType.H2CData, 0, 24, 24, 0xffffffff)), Fes.DataLimitExceeded, 4);
      // Exactly at the limit is fine.
      const ok = commonHeader(PduType.CapsuleCmd, 0, 72, 72, 4096, 4096);
      assert.equal(controllerReader(false, 4096).push(ok)[0]!.data!.length, 4096 - 72);
    });

    it('rejects a bad PDO (FEI 3)', () => {
      // Data starting inside the header, or past the PDU.
      expectPduError(() => controllerReader().push(commonHeader(PduType.CapsuleCmd, 0, 72, 8, 100)), Fes.InvalidHeaderField, 3, /PDO 8/);
      expectPduError(() => controllerReader().push(commonHeader(PduType.CapsuleCmd, 0, 72, 101, 100)), Fes.InvalidHeaderField, 3);
      expectPduError(() => controllerReader(true).push(commonHeader(PduType.H2CData, PduFlag.HDGSTF | PduFlag.DDGSTF, 24, 24, 40)), Fes.InvalidHeaderField, 3);
      // A PDO on a PDU without data.
      expectPduError(() => controllerReader().push(commonHeader(PduType.CapsuleCmd, 0, 72, 16, 72)), Fes.InvalidHeaderField, 3, /without data/);
      // PDO 0 or PDO = PLEN on a PDU without data is accepted.
      assert.equal(controllerReader().push(commonHeader(PduType.CapsuleCmd, 0, 72, 72, 72)).length, 1);
      assert.equal(controllerReader().push(commonHeader(PduType.CapsuleCmd, 0, 72, 0, 72)).length, 1);
      // Data digest that leaves no room for data at PDO.
      expectPduError(() => controllerReader(true).push(commonHeader(PduType.CapsuleCmd, PduFlag.HDGSTF | PduFlag.DDGSTF, 72, 78, 80)), Fes.InvalidHeaderField, 4, /too short/);
    });

    it('rejects digest flags that disagree with what was negotiated (FEI 1)', () => {
      expectPduError(() => controllerReader(false).push(commonHeader(PduType.CapsuleCmd, PduFlag.HDGSTF, 72, 0, 76)), Fes.InvalidHeaderField, 1, /not negotiated/);
      expectPduError(() => controllerReader(true).push(commonHeader(PduType.CapsuleCmd, 0, 72, 0, 72)), Fes.InvalidHeaderField, 1, /HDGSTF is clear/);
      expectPduError(() => controllerReader(false).push(commonHeader(PduType.CapsuleCmd, PduFlag.DDGSTF, 72, 72, 80)), Fes.InvalidHeaderField, 1, /DDGSTF set/);
      expectPduError(() => controllerReader(true).push(commonHeader(PduType.H2CData, PduFlag.HDGSTF, 24, 28, 60)), Fes.InvalidHeaderField, 1, /DDGSTF is clear/);
      expectPduError(() => hostReader(true).push(commonHeader(PduType.R2T, 0, 24, 0, 24)), Fes.InvalidHeaderField, 1);
      // ICReq and TermReq never carry digests, whatever was negotiated.
      assert.equal(controllerReader(true).push(encodeICReq({ headerDigest: true, dataDigest: true })).length, 1);
      assert.equal(controllerReader(true).push(encodeTermReq(PduType.H2CTermReq, 1, 0)).length, 1);
    });

    it('rejects data on a PDU type that carries none (FEI 4)', () => {
      expectPduError(() => controllerReader().push(commonHeader(PduType.ICReq, 0, 128, 128, 132)), Fes.InvalidHeaderField, 4, /carries none/);
      expectPduError(() => hostReader().push(commonHeader(PduType.CapsuleResp, 0, 24, 24, 32)), Fes.InvalidHeaderField, 4);
      expectPduError(() => hostReader().push(commonHeader(PduType.R2T, 0, 24, 24, 28)), Fes.InvalidHeaderField, 4);
      expectPduError(() => hostReader().push(commonHeader(PduType.ICResp, 0, 128, 0, 256)), Fes.InvalidHeaderField, 4);
    });

    it('keeps the offending common header on the error', () => {
      const h = commonHeader(PduType.CapsuleCmd, 0, 64, 0, 72);
      const e = expectPduError(() => controllerReader().push(h), Fes.InvalidHeaderField, 2);
      assert.deepEqual(e.header, h.subarray(0, 8));
      assert.equal(e.name, 'PduError');
    });
  });
});

describe('nvme PDU encoders', function () {
  it('round-trips ICReq and ICResp', () => {
    const req = encodeICReq({ pfv: 0, hpda: 7, headerDigest: true, dataDigest: false, maxR2T: 3 });
    assert.equal(req.length, HLEN.ICReq);
    const [p] = controllerReader().push(req);
    assert.equal(p!.type, PduType.ICReq);
    assert.deepEqual(icReqFields(p!.header), { pfv: 0, hpda: 7, dgst: 1, maxR2T: 3 });
    const resp = encodeICResp({ cpda: 2, headerDigest: false, dataDigest: true, maxH2CData: 131072 });
    const [q] = hostReader().push(resp);
    assert.equal(q!.type, PduType.ICResp);
    assert.equal(q!.header.readUInt32LE(4), 128);
    assert.deepEqual(icRespFields(q!.header), { pfv: 0, cpda: 2, dgst: 2, maxH2CData: 131072 });
  });

  it('assembles with PDO padding to the requested data alignment', () => {
    const data = prand(100, 7);
    for (const [align, hd, pdo] of [[0, false, 24], [4, false, 24], [8, false, 24], [16, false, 32], [128, false, 128], [128, true, 128], [32, true, 32], [16, true, 32]] as const) {
      const parts = encodeC2HData(3, 0, data, true, false, { header: hd, data: true, dataAlign: align });
      const bytes = Buffer.concat(parts);
      assert.equal(bytes[3], pdo, `align ${align} hd ${hd}`);
      assert.equal(bytes.readUInt32LE(4), pdo + 100 + 4);
      assert.equal(bytes.length, pdo + 100 + 4);
      const headerEnd = 24 + (hd ? 4 : 0);
      assert.ok(bytes.subarray(headerEnd, pdo).every((b) => b === 0), 'padding is zeros');
      // The data buffer itself is passed through, not copied.
      assert.equal(parts[1], data);
      const reader = hostReader(hd);
      reader.dataDigest = true;
      const [p] = reader.push(bytes);
      assert.deepEqual(p!.data, data);
      assert.ok(p!.dataDigestOk);
    }
    // No data: PDO 0, nothing padded.
    const empty = Buffer.concat(assemble(PduType.R2T, 0, Buffer.alloc(24), undefined, { header: false, data: true, dataAlign: 128 }));
    assert.equal(empty.length, 24);
    assert.equal(empty[3], 0);
    assert.equal(empty[1], 0, 'no digest flags without digests or data');
  });

  it('round-trips C2HData with its flags and fields', () => {
    const data = prand(5000, 9);
    for (const [last, success] of [[true, true], [true, false], [false, false]] as const) {
      const [p] = hostReader(true).push(Buffer.concat(encodeC2HData(0xbeef, 8192, data, last, success, { header: true, data: true })));
      assert.equal(p!.type, PduType.C2HData);
      assert.equal((p!.flags & PduFlag.LAST_PDU) !== 0, last);
      assert.equal((p!.flags & PduFlag.SUCCESS) !== 0, success);
      assert.equal(p!.flags & 3, 3);
      assert.deepEqual(dataFields(p!.header), { cccid: 0xbeef, ttag: 0, datao: 8192, datal: 5000 });
      assert.deepEqual(p!.data, data);
    }
  });

  it('round-trips H2CData and R2T', () => {
    const data = prand(4096, 10);
    const [h] = controllerReader().push(Buffer.concat(encodeH2CData(17, 0x1234, 65536, data, true, { header: false, data: false })));
    assert.equal(h!.type, PduType.H2CData);
    assert.equal(h!.flags, PduFlag.LAST_PDU);
    assert.deepEqual(dataFields(h!.header), { cccid: 17, ttag: 0x1234, datao: 65536, datal: 4096 });
    assert.deepEqual(h!.data, data);
    const [m] = controllerReader().push(Buffer.concat(encodeH2CData(17, 1, 0, data, false, { header: false, data: false })));
    assert.equal(m!.flags & PduFlag.LAST_PDU, 0);

    const r2t = Buffer.concat(encodeR2T(0x4242, 0xfffe, 262144, 1 << 20, { header: true, data: true }));
    assert.equal(r2t.length, 28);
    const [r] = hostReader(true).push(r2t);
    assert.equal(r!.type, PduType.R2T);
    assert.equal(r!.data, undefined);
    assert.deepEqual(r2tFields(r!.header), { cccid: 0x4242, ttag: 0xfffe, r2to: 262144, r2tl: 1 << 20 });
  });

  it('round-trips command capsules and completions', () => {
    const sqe = buildSqe({ opcode: 0x01, cid: 0x1111, nsid: 1, sglId: 0x01, sglLength: 1024, cdw: { 10: 0xdeadbeef, 11: 1, 12: (1 << 30) | 1 } });
    const data = prand(1024, 15);
    const [p] = controllerReader().push(Buffer.concat(encodeCapsuleCmd(sqe, data, { header: false, data: false })));
    const cmd = new Command(p!.header.subarray(8, 72));
    assert.equal(cmd.opcode, 1);
    assert.equal(cmd.cid, 0x1111);
    assert.equal(cmd.nsid, 1);
    assert.equal(cmd.psdt, 1);
    assert.equal(cmd.sglId, 0x01);
    assert.equal(cmd.sglLength, 1024);
    assert.equal(cmd.sglAddress, 0n);
    assert.equal(cmd.slba, 0x1deadbeefn);
    assert.equal(cmd.cdw(12), (1 << 30) | 1);
    assert.equal(cmd.direction, 'h2c');
    assert.deepEqual(p!.data, data);
    assert.equal(new Command(buildSqe({ opcode: 0x02, cid: 0 })).direction, 'c2h');
    assert.equal(new Command(buildSqe({ opcode: 0x00, cid: 0 })).direction, 'none');
    assert.equal(new Command(buildSqe({ opcode: 0x7f, cid: 0, fctype: 0x01 })).direction, 'h2c');
    assert.equal(new Command(buildSqe({ opcode: 0x7f, cid: 0, fctype: 0x04 })).direction, 'none');
    assert.equal(new Command(buildSqe({ opcode: 0x7f, cid: 0, fctype: 0x04 })).fctype, 0x04);

    const cqe = encodeCqe(0x2222, 3, 17, { status: { sct: 1, sc: 0x82, dnr: true }, dw0: 0x10100, dw1: 0xffffffff });
    const [r] = hostReader(true).push(Buffer.concat(encodeCapsuleResp(cqe, { header: true, data: true })));
    assert.equal(r!.type, PduType.CapsuleResp);
    assert.equal(r!.header.readUInt32LE(4), 28);
    assert.deepEqual(decodeCqe(r!.header.subarray(8, 24)), { dw0: 0x10100, dw1: 0xffffffff, sqhd: 17, sqid: 3, cid: 0x2222, sct: 1, sc: 0x82, dnr: true });
    const success = decodeCqe(encodeCqe(1, 0, 0, { status: { sct: 0, sc: 0 } }));
    assert.deepEqual([success.sct, success.sc, success.dnr, success.dw0], [0, 0, false, 0]);
    assert.equal(encodeCqe(1, 0, 0, { status: { sct: 0, sc: 0 } }).readUInt16LE(14) & 1, 0, 'phase bit is 0');
  });

  it('encodes TermReqs with the offending header, at most 152 bytes', () => {
    const offending = prand(200, 16);
    const t = encodeTermReq(PduType.C2HTermReq, Fes.DataOutOfRange, 0x10203, offending);
    assert.equal(t.length, 152);
    const [p] = hostReader(true).push(t);
    assert.equal(p!.type, PduType.C2HTermReq);
    assert.deepEqual(termReqFields(p!.header), { fes: Fes.DataOutOfRange, fei: 0x10203 });
    assert.deepEqual(p!.data, offending.subarray(0, 128));
    const short = encodeTermReq(PduType.H2CTermReq, Fes.HeaderDigestError, 0, offending.subarray(0, 24));
    assert.equal(short.length, 48);
    const [q] = controllerReader(true).push(short);
    assert.equal(q!.type, PduType.H2CTermReq);
    assert.deepEqual(q!.data, offending.subarray(0, 24));
    const bare = encodeTermReq(PduType.C2HTermReq, Fes.InvalidHeaderField, 2);
    assert.equal(bare.length, 24);
    assert.deepEqual(hostReader().push(bare)[0]!.data, Buffer.alloc(0));
  });
});
