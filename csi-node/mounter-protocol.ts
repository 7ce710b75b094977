/**
 * The wire format between the node plugin and the mounter sidecar: newline-delimited JSON over a
 * unix socket. One request object per line, one response line per request, matched by `id`;
 * several requests may be in flight on one connection.
 *
 * Why not gRPC (which the plugin already speaks to kubelet): both ends are the same binary from
 * the same image, there are four operations with plain-object arguments, and there is nothing to
 * version against another implementation. JSON lines over node:net needs no .proto and no
 * dependency, is debuggable with `socat - UNIX:/csi/mounter.sock`, and a plain socket tells the
 * plugin the moment the mounter goes away (the connection closes), which is how the plugin
 * notices a mounter restart; grpc-js hides that behind its own reconnect/backoff.
 *
 *   → {"id":1,"op":"hello"}                              ← {"id":1,"ok":true,"result":MounterHello}
 *   → {"id":2,"op":"start","spec":FuseStageSpec}         ← {"id":2,"ok":true,"result":MountProcessRecord}
 *   → {"id":3,"op":"stop","stagingPath":"/p","record"?}  ← {"id":3,"ok":true,"result":null}
 *   → {"id":4,"op":"list"}                               ← {"id":4,"ok":true,"result":MounterEntry[]}
 *   failures:                                            ← {"id":N,"ok":false,"error":{"code","message"}}
 */
import type { Socket } from 'node:net';
import type { ErrorCode } from '../capsule/errors.js';
import type { MountProcessRecord } from './node-state.js';
import type { FuseStageSpec } from './mounters/fuse.js';

export const MOUNTER_PROTOCOL_VERSION = 1;

/** A line longer than this is not a request of ours: drop the connection rather than buffer it. */
export const MAX_LINE_BYTES = 1 << 20;

export interface MounterHello {
  version: number;
  /** Random per mounter process: a changed instance means the mounter restarted. */
  instance: string;
  pid: number;
  startedAt: string;
}

export interface MounterEntry {
  stagingPath: string;
  volumeId: string;
  capsuleId: string;
  gateway: string;
  rw: boolean;
  record: MountProcessRecord;
  /** The process is running and is still our mount process (argv checked). */
  alive: boolean;
  /** A FUSE filesystem is mounted at stagingPath (as this mounter sees it). */
  mounted: boolean;
}

export type MounterRequest =
  | { id: number; op: 'hello' }
  | { id: number; op: 'start'; spec: FuseStageSpec }
  | { id: number; op: 'stop'; stagingPath: string; record?: MountProcessRecord }
  | { id: number; op: 'list' };

export type MounterResponse =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: { code: ErrorCode; message: string } };

/**
 * Feed socket data in, get whole lines out. Calls `onOverflow` (once) when a line exceeds
 * MAX_LINE_BYTES without a newline.
 */
export function lineReader(socket: Socket, onLine: (line: string) => void, onOverflow: () => void): void {
  let buf = '';
  let dead = false;
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    if (dead) return;
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) onLine(line);
    }
    if (buf.length > MAX_LINE_BYTES) {
      dead = true;
      buf = '';
      onOverflow();
    }
  });
}
