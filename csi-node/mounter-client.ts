/**
 * The node plugin's side of the mounter sidecar (csi-node/mounter-service.ts): a
 * FuseProcessLauncher whose mount processes live in the mounter's container, plus the watch that
 * tells the plugin when the mounter restarted (so it can repair what died with it).
 *
 * One connection per request: requests are rare (stage/unstage/repair), and nothing then depends
 * on a connection surviving a mounter restart. Failures to reach the mounter are UNAVAILABLE, so
 * the CSI call fails with a code kubelet retries.
 */
import net from 'node:net';
import { SpaceError, type ErrorCode } from '../capsule/errors.js';
import type { Logger } from '../capsule/log.js';
import type { MountProcessRecord } from './node-state.js';
import type { FuseStageSpec } from './mounters/fuse.js';
import type { FuseProcessLauncher } from './mounters/launcher.js';
import { lineReader, type MounterEntry, type MounterHello, type MounterResponse } from './mounter-protocol.js';

export interface MounterClientOptions {
  /** How long start() may take: the mounter waits up to 30 s for the mount to appear. */
  startTimeoutMs?: number;
  /** Every other request (stop may wait 15 s for a process to exit, then unmount). */
  timeoutMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class MounterClient implements FuseProcessLauncher {
  private nextId = 1;
  private readonly startTimeoutMs: number;
  private readonly timeoutMs: number;

  constructor(readonly socketPath: string, opts: MounterClientOptions = {}) {
    this.startTimeoutMs = opts.startTimeoutMs ?? 60_000;
    this.timeoutMs = opts.timeoutMs ?? 45_000;
  }

  private request<T>(body: Record<string, unknown>, timeoutMs = this.timeoutMs): Promise<T> {
    const id = this.nextId++;
    const op = String(body.op);
    return new Promise<T>((resolve, reject) => {
      const socket = net.createConnection(this.socketPath);
      let settled = false;
      const finish = (err: Error | undefined, value?: T) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.destroy();
        if (err) reject(err);
        else resolve(value as T);
      };
      const unavailable = (why: string) => new SpaceError('UNAVAILABLE', `mounter at ${this.socketPath}: ${op} ${why}`);
      const timer = setTimeout(() => finish(unavailable(`did not answer within ${timeoutMs} ms`)), timeoutMs);
      socket.once('connect', () => socket.write(JSON.stringify({ ...body, id }) + '\n'));
      socket.on('error', (e: NodeJS.ErrnoException) => finish(unavailable(`failed: ${e.code ?? e.message} (is the csi-mounter container running?)`)));
      socket.on('close', () => finish(unavailable('failed: the connection closed before an answer')));
      lineReader(socket, (line) => {
        let r: MounterResponse;
        try {
          r = JSON.parse(line) as MounterResponse;
        } catch {
          finish(new SpaceError('INTERNAL', `mounter at ${this.socketPath} sent a malformed line`));
          return;
        }
        if (r.id !== id && r.id !== -1) return;
        if (r.ok) finish(undefined, r.result as T);
        else finish(new SpaceError(r.error.code as ErrorCode, `mounter: ${r.error.message}`));
      }, () => finish(new SpaceError('INTERNAL', `mounter at ${this.socketPath} sent an oversized line`)));
    });
  }

  hello(): Promise<MounterHello> {
    return this.request<MounterHello>({ op: 'hello' }, 5000);
  }

  list(): Promise<MounterEntry[]> {
    return this.request<MounterEntry[]>({ op: 'list' });
  }

  async start(spec: FuseStageSpec, log: Logger): Promise<MountProcessRecord> {
    const rec = await this.request<MountProcessRecord>({ op: 'start', spec }, this.startTimeoutMs);
    log.info('fuse.mount-process.started', { pid: rec.pid, staging: spec.stagingPath, mounter: this.socketPath });
    return rec;
  }

  async stop(rec: MountProcessRecord | undefined, stagingPath: string, log: Logger): Promise<void> {
    await this.request<null>({ op: 'stop', stagingPath, ...(rec ? { record: rec } : {}) });
    log.info('fuse.mount-process.stopped', { pid: rec?.pid ?? null, staging: stagingPath, mounter: this.socketPath });
  }

  /**
   * Alive means: the mounter serves `stagingPath` with this very process and it runs. The pid
   * alone means nothing here: the mounter's container has its own PID namespace.
   */
  async alive(rec: MountProcessRecord, stagingPath: string): Promise<boolean> {
    const e = (await this.list()).find((x) => x.stagingPath === stagingPath);
    return !!e && e.alive && e.record.pid === rec.pid && e.record.startedAt === rec.startedAt;
  }

  /** Wait until the mounter answers (the sidecar may start after the plugin), up to timeoutMs. */
  async waitReady(timeoutMs: number): Promise<MounterHello> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await this.hello();
      } catch (e) {
        if (Date.now() >= deadline) throw e;
        await sleep(250);
      }
    }
  }

  /**
   * Keep a connection to the mounter open and call `onNewInstance` whenever, after it closes, the
   * mounter that answers again is a different process than `known` (a restart: in Kubernetes its
   * mount processes died with its container). Also called on first contact when `known` is
   * undefined. Event-driven: the closed connection is the signal, not a polling timer.
   */
  watch(known: string | undefined, onNewInstance: (h: MounterHello) => void, log?: Logger): { close(): void } {
    let closed = false;
    let current: net.Socket | undefined;
    let last = known;
    // The hello is asked on the connection that is then kept open, so a restart between the
    // question and the watching cannot slip by unnoticed.
    const session = () => new Promise<void>((resolve, reject) => {
      const s = (current = net.createConnection(this.socketPath));
      let greeted = false;
      s.on('error', (e) => (greeted ? undefined : reject(e)));
      s.on('close', () => (greeted ? resolve() : reject(new Error('closed before hello'))));
      s.once('connect', () => s.write(JSON.stringify({ id: 0, op: 'hello' }) + '\n'));
      lineReader(s, (line) => {
        if (greeted) return;
        try {
          const r = JSON.parse(line) as MounterResponse;
          if (!r.ok) throw new Error(r.error.message);
          greeted = true;
          const h = r.result as MounterHello;
          if (h.instance !== last) {
            last = h.instance;
            onNewInstance(h);
          }
        } catch (e) {
          s.destroy();
          reject(e);
        }
      }, () => s.destroy());
    });
    const loop = async () => {
      for (let delay = 200; !closed; ) {
        try {
          await session();
          delay = 200;
          if (!closed) log?.warn('csi.mounter.connection-lost', { socket: this.socketPath });
        } catch {
          if (closed) return;
          // unref'd: a closed-down plugin must not wait for this backoff to exit.
          await new Promise((r) => setTimeout(r, delay).unref());
          delay = Math.min(delay * 2, 5000);
        }
      }
    };
    void loop();
    return {
      close() {
        closed = true;
        current?.destroy();
      },
    };
  }
}
