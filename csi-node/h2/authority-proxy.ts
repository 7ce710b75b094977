/**
 * A front for the CSI gRPC socket that lets every Go client in.
 *
 * Go gRPC clients that dial a socket path without a scheme (as CSI sidecars built on older
 * csi-lib-utils do) send that path as :authority, e.g. "/csi/csi.sock". Node's HTTP/2 layer
 * (nghttp2) refuses an :authority holding '/' and resets the stream before grpc-js sees it,
 * and Node has no switch to relax that. So the plugin's public socket is this proxy: it passes
 * every byte through, except request header blocks, which it decodes (HPACK, mirroring the
 * client's dynamic table), repairs (an :authority that is not a valid RFC 3986 authority becomes
 * "localhost"; nothing else changes) and re-encodes as plain literals (the server's table stays
 * empty, so both sides stay consistent). The gRPC server itself listens on a private socket.
 */
import fs from 'node:fs';
import net from 'node:net';
import type { Logger } from '../../capsule/log.js';
import { HpackDecoder, HpackError, encodeLiterals } from './hpack.js';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const FRAME_HEADER = 9;
const HEADERS = 0x1;
const CONTINUATION = 0x9;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;
/** The default SETTINGS_MAX_FRAME_SIZE: frames we build never exceed it. */
const MAX_FRAME = 16384;
/** A header block bigger than this is refused (the connection is closed). */
const MAX_BLOCK = 1 << 20;

/** RFC 3986 authority characters: unreserved, sub-delims, ':', '@', '[', ']', '%'. */
const AUTHORITY = /^[A-Za-z0-9\-._~!$&'()*+,;=:@[\]%]*$/;

export function repairAuthority(headers: [string, string][]): { headers: [string, string][]; repaired?: string } {
  let repaired: string | undefined;
  const out = headers.map(([n, v]): [string, string] => {
    if (n === ':authority' && !AUTHORITY.test(v)) {
      repaired = v;
      return [n, 'localhost'];
    }
    return [n, v];
  });
  return { headers: out, repaired };
}

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(FRAME_HEADER);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

/** Rewrites the client-to-server direction of one HTTP/2 connection. */
export class RequestRewriter {
  private buf: Buffer = Buffer.alloc(0);
  private prefaceSeen = false;
  private readonly decoder = new HpackDecoder();
  private pending?: { stream: number; flags: number; fragments: Buffer[]; bytes: number };
  repairs = 0;

  constructor(private readonly onRepair: (authority: string) => void = () => {}) {}

  /** Feed client bytes; returns the bytes to forward. Throws on a malformed stream. */
  push(chunk: Buffer): Buffer[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: Buffer[] = [];
    if (!this.prefaceSeen) {
      if (this.buf.length < PREFACE.length) {
        if (!PREFACE.subarray(0, this.buf.length).equals(this.buf)) throw new HpackError('not an HTTP/2 connection preface');
        return out;
      }
      if (!this.buf.subarray(0, PREFACE.length).equals(PREFACE)) throw new HpackError('not an HTTP/2 connection preface');
      out.push(this.buf.subarray(0, PREFACE.length));
      this.buf = this.buf.subarray(PREFACE.length);
      this.prefaceSeen = true;
    }
    while (this.buf.length >= FRAME_HEADER) {
      const len = this.buf.readUIntBE(0, 3);
      if (this.buf.length < FRAME_HEADER + len) break;
      const type = this.buf[3]!;
      const flags = this.buf[4]!;
      const stream = this.buf.readUInt32BE(5) & 0x7fffffff;
      const whole = this.buf.subarray(0, FRAME_HEADER + len);
      const payload = whole.subarray(FRAME_HEADER);
      this.buf = this.buf.subarray(FRAME_HEADER + len);
      if (type === HEADERS) {
        let p = payload;
        let pad = 0;
        if (flags & PADDED) {
          pad = p[0] ?? 0;
          p = p.subarray(1);
        }
        if (flags & PRIORITY) p = p.subarray(5); // priority is advisory: dropped
        if (pad > p.length) throw new HpackError('padding longer than the HEADERS payload');
        p = p.subarray(0, p.length - pad);
        this.pending = { stream, flags, fragments: [p], bytes: p.length };
      } else if (type === CONTINUATION) {
        if (!this.pending || this.pending.stream !== stream) throw new HpackError('CONTINUATION without HEADERS');
        this.pending.fragments.push(payload);
        this.pending.bytes += payload.length;
      } else {
        if (this.pending) throw new HpackError('frame interleaved with a header block');
        out.push(whole);
        continue;
      }
      if (this.pending.bytes > MAX_BLOCK) throw new HpackError('header block too large');
      if (flags & END_HEADERS) {
        out.push(...this.rewrite(this.pending));
        this.pending = undefined;
      }
    }
    return out;
  }

  private rewrite(p: { stream: number; flags: number; fragments: Buffer[] }): Buffer[] {
    const decoded = this.decoder.decode(Buffer.concat(p.fragments));
    const { headers, repaired } = repairAuthority(decoded);
    if (repaired !== undefined) {
      this.repairs++;
      this.onRepair(repaired);
    }
    const block = encodeLiterals(headers);
    const frames: Buffer[] = [];
    for (let off = 0, first = true; first || off < block.length; first = false) {
      const piece = block.subarray(off, off + MAX_FRAME);
      off += piece.length;
      const last = off >= block.length;
      const flags = (last ? END_HEADERS : 0) | (first ? p.flags & END_STREAM : 0);
      frames.push(frame(first ? HEADERS : CONTINUATION, flags, p.stream, piece));
    }
    return frames;
  }
}

export interface AuthorityProxy {
  close(): Promise<void>;
}

/** Listen on `publicPath`; connect each client to the gRPC server at `backendPath`. */
export async function startAuthorityProxy(publicPath: string, backendPath: string, log: Logger): Promise<AuthorityProxy> {
  const sockets = new Set<net.Socket>();
  let warned = false;
  const server = net.createServer((client) => {
    const backend = net.connect(backendPath);
    sockets.add(client).add(backend);
    const rewriter = new RequestRewriter((authority) => {
      if (warned) return;
      warned = true;
      log.info('csi.authority_repaired', { authority, msg: 'a client sent an :authority Node rejects; rewritten to localhost' });
    });
    const end = () => {
      client.destroy();
      backend.destroy();
      sockets.delete(client);
      sockets.delete(backend);
    };
    client.on('data', (chunk: Buffer) => {
      let out: Buffer[];
      try {
        out = rewriter.push(chunk);
      } catch (e) {
        log.warn('csi.proxy_bad_stream', { err: e });
        end();
        return;
      }
      for (const b of out) if (!backend.write(b)) client.pause();
    });
    backend.on('drain', () => client.resume());
    backend.pipe(client);
    client.on('error', end).on('close', end);
    backend.on('error', end).on('close', end);
  });
  fs.rmSync(publicPath, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(publicPath, () => resolve());
  });
  return {
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
      fs.rmSync(publicPath, { force: true });
    }),
  };
}
