/**
 * Reads into memory we choose, for sockets a server accepted.
 *
 * net.Socket's `onread` option (a buffer, or a function giving the buffer for each read) lets
 * the kernel copy received bytes straight into our memory, but Node honours it only for sockets
 * it builds from options, not for those a net.Server accepts. So the accepted socket (paused on
 * connect, so nothing was read yet) hands its handle to a new socket built with `onread`, and is
 * then destroyed as an empty shell: that settles the server's connection count, and the handle
 * lives on in the new socket.
 *
 * This leans on two long-standing internals of Node's net module: the `_handle` property and the
 * `handle` constructor option (what cluster and child_process use to pass sockets). When they
 * are not there as expected, null comes back and the caller keeps the ordinary 'data' path.
 */
import net from 'node:net';

export interface UserBufferReads {
  /** Memory for the next read. */
  buffer: () => Buffer;
  /** `n` bytes were read into the memory the last buffer() gave; false pauses reading. */
  callback: (n: number, buf: Buffer) => boolean | void;
}

interface SocketInternals {
  _handle?: { useUserBuffer?: unknown; reading?: boolean } | null;
}

/** `accepted` re-made to read through `reads`, or null (then `accepted` is untouched). */
export function withUserBufferReads(accepted: net.Socket, reads: UserBufferReads): net.Socket | null {
  const inner = accepted as unknown as SocketInternals;
  const handle = inner._handle;
  if (!handle || typeof handle.useUserBuffer !== 'function' || handle.reading || accepted.destroyed) return null;
  let socket: net.Socket;
  try {
    socket = new net.Socket({ handle, readable: true, writable: true, onread: reads } as net.SocketConstructorOpts);
  } catch {
    return null;
  }
  inner._handle = null;
  accepted.destroy();
  return socket;
}
