/**
 * Protocol servers keyed by listen address, started on first use and closed when the last export
 * on them goes away: a gateway that never exports over a protocol never binds its port, and an
 * unexported port is free again. Used by the NVMe/TCP and NFS export backends.
 */
import { SpaceError } from '../capsule/errors.js';
import { joinHostPort, parseHostPort } from './address.js';

export interface Closeable {
  close(): Promise<void>;
}

export class LazyListeners<S extends Closeable> {
  private readonly servers = new Map<string, Promise<S>>();

  /** `start(host, port, listen)` binds one server; `what` names the protocol in errors. */
  constructor(private readonly what: string, private readonly start: (host: string, port: number, listen: string) => Promise<S>) {}

  /** "host:port" in one spelling, so two ways of writing an address share a listener. */
  normalize(listen: string): string {
    const { host, port } = parseHostPort(listen, `${this.what} listen`);
    return joinHostPort(host, port);
  }

  /** The server on `listen` (normalized), started now if there is none. */
  async get(listen: string): Promise<S> {
    let s = this.servers.get(listen);
    if (!s) {
      const { host, port } = parseHostPort(listen, `${this.what} listen`);
      s = this.start(host, port, listen);
      this.servers.set(listen, s);
      s.catch(() => this.servers.delete(listen));
    }
    try {
      return await s;
    } catch (e) {
      throw new SpaceError('UNAVAILABLE', `cannot listen for ${this.what} on ${listen}: ${(e as Error).message}`, { cause: e });
    }
  }

  /** Close the server on `listen` (its last export is gone). */
  async release(listen: string, server: S): Promise<void> {
    if (this.servers.delete(listen)) await server.close();
  }

  async closeAll(): Promise<void> {
    const all = [...this.servers.values()];
    this.servers.clear();
    for (const s of all) await (await s.catch(() => undefined))?.close();
  }
}
