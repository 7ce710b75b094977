/**
 * The mounter sidecar: the long-lived owner of the node's FUSE mount processes.
 *
 * In Kubernetes a restart of the csi-plugin container (crash, OOM kill, failed liveness probe)
 * kills every process in that container, including mount processes it started "detached"; each
 * pod on the node using a FUSE volume then sees "transport endpoint is not connected" until a
 * repair. So the mount processes are started by this small service instead, which runs as a
 * separate container of the same DaemonSet pod (`spacectl csi-mounter`): the plugin container can
 * restart freely, and the FUSE mounts, made under the kubelet dir with Bidirectional propagation,
 * stay visible to the host and to the next plugin instance.
 *
 * The plugin asks over a unix socket (csi-node/mounter-protocol.ts) to start, stop and list mount
 * processes. What it asks is kept in a state file (pids + argv + spec), so a restarted mounter
 * adopts the mount processes that outlived it (they run in their own sessions) and knows which
 * ones died. It never restarts dead ones on its own: a dead FUSE mount also leaves the pods'
 * bind mounts dead, and only the plugin knows those (see node-service repair()).
 *
 * It deliberately does little else: every extra line here is code that, when it crashes, takes
 * every FUSE volume of the node down with it.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { SpaceError, type ErrorCode } from '../capsule/errors.js';
import type { Logger } from '../capsule/log.js';
import { writeAtomic, type MountProcessRecord } from './node-state.js';
import { detachStale, fuseStageHealthy, mountProcessAlive, startMountProcess, stopMountProcess, type FuseStageSpec } from './mounters/fuse.js';
import { mountAtPath, readMountInfo } from './mounters/mountinfo.js';
import { lineReader, MOUNTER_PROTOCOL_VERSION, type MounterEntry, type MounterHello, type MounterRequest, type MounterResponse } from './mounter-protocol.js';

export interface MounterServiceOptions {
  /** Absolute path of the unix socket to listen on. */
  socketPath: string;
  /** The state file and the mount processes' logs live here. */
  stateDir: string;
  logger: Logger;
}

export interface MounterService {
  socketPath: string;
  hello: MounterHello;
  /** What a restart found in the state file: processes still running / gone. */
  adopted: { alive: number; dead: number };
  /** Stop listening. Mount processes keep running: pods keep their data. */
  close(): Promise<void>;
}

interface Entry {
  spec: FuseStageSpec;
  record: MountProcessRecord;
}

interface StateFile {
  version: 1;
  mounts: Record<string, Entry>;
}

const STATE_FILE = 'mounter-state.json';

class MounterError extends SpaceError {}
const fail = (code: ErrorCode, message: string) => new MounterError(code, message);

/** The mounter's table of mount processes, by staging path, saved atomically on every change. */
class MountTable {
  private mounts = new Map<string, Entry>();
  private saving: Promise<void> = Promise.resolve();

  private constructor(readonly file: string) {}

  static async open(dir: string): Promise<MountTable> {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const t = new MountTable(path.join(dir, STATE_FILE));
    try {
      const parsed = JSON.parse(await fsp.readFile(t.file, 'utf8')) as StateFile;
      if (parsed?.version !== 1 || typeof parsed.mounts !== 'object') throw new Error(`unsupported state format in ${t.file}`);
      for (const [p, e] of Object.entries(parsed.mounts)) t.mounts.set(p, e);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    return t;
  }

  get(stagingPath: string): Entry | undefined {
    return this.mounts.get(stagingPath);
  }

  entries(): [string, Entry][] {
    return [...this.mounts];
  }

  async set(stagingPath: string, e: Entry): Promise<void> {
    this.mounts.set(stagingPath, e);
    await this.save();
  }

  async delete(stagingPath: string): Promise<void> {
    if (this.mounts.delete(stagingPath)) await this.save();
  }

  private save(): Promise<void> {
    const text = JSON.stringify({ version: 1, mounts: Object.fromEntries(this.mounts) } satisfies StateFile, null, 2);
    // Serialized: two renames racing could otherwise land the older content last.
    const next = this.saving.then(() => writeAtomic(this.file, text));
    this.saving = next.catch(() => {});
    return next;
  }
}

function str(v: unknown, field: string): string {
  if (typeof v !== 'string' || !v) throw fail('INVALID_ARGUMENT', `${field} must be a non-empty string`);
  return v;
}

function absPath(v: unknown, field: string): string {
  const p = str(v, field);
  if (!path.isAbsolute(p) || path.resolve(p) !== p) throw fail('INVALID_ARGUMENT', `${field} must be a normalized absolute path (got ${p})`);
  return p;
}

function isRecord(v: unknown): v is MountProcessRecord {
  const r = v as MountProcessRecord;
  return !!r && Number.isInteger(r.pid) && r.pid > 0 && Array.isArray(r.args) && r.args.every((a) => typeof a === 'string');
}

const sameMount = (a: FuseStageSpec, b: FuseStageSpec) => a.volumeId === b.volumeId && a.capsuleId === b.capsuleId && a.gateway === b.gateway && a.rw === b.rw;

/** Is something listening on the socket? (A second mounter must not steal a live one's socket.) */
function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.createConnection(socketPath);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

export async function startMounterService(opts: MounterServiceOptions): Promise<MounterService> {
  const log = opts.logger;
  const socketPath = opts.socketPath;
  if (!path.isAbsolute(socketPath)) throw fail('INVALID_ARGUMENT', `the mounter socket must be an absolute path (got ${socketPath})`);
  const logDir = path.join(opts.stateDir, 'logs');
  const table = await MountTable.open(opts.stateDir);
  const hello: MounterHello = { version: MOUNTER_PROTOCOL_VERSION, instance: randomUUID(), pid: process.pid, startedAt: new Date().toISOString() };

  // Adoption: processes recorded by a previous instance that still run are ours again (stop()
  // signals them by pid); dead ones stay listed as dead until the plugin repairs or unstages them.
  const adopted = { alive: 0, dead: 0 };
  for (const [p, e] of table.entries()) {
    const alive = mountProcessAlive(e.record);
    adopted[alive ? 'alive' : 'dead']++;
    log[alive ? 'info' : 'warn'](alive ? 'mounter.adopted' : 'mounter.found-dead', { volume: e.spec.volumeId, staging: p, pid: e.record.pid });
  }

  /** Operations on one staging path run one after another (a repeated start waits, then finds the mount). */
  const locks = new Map<string, Promise<unknown>>();
  function serialized<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const run = (locks.get(key) ?? Promise.resolve()).then(fn);
    const tail = run.then(() => {}, () => {});
    locks.set(key, tail);
    void tail.then(() => {
      if (locks.get(key) === tail) locks.delete(key);
    });
    return run;
  }

  async function start(raw: Partial<FuseStageSpec> | undefined): Promise<MountProcessRecord> {
    const stagingPath = absPath(raw?.stagingPath, 'spec.stagingPath');
    const volumeId = str(raw?.volumeId, 'spec.volumeId');
    if (typeof raw?.rw !== 'boolean') throw fail('INVALID_ARGUMENT', 'spec.rw must be a boolean');
    const spec: FuseStageSpec = {
      volumeId,
      capsuleId: str(raw.capsuleId, 'spec.capsuleId'),
      stagingPath,
      gateway: str(raw.gateway, 'spec.gateway'),
      rw: raw.rw,
      // The client's logFile is a path in *its* container, and a socket client should not pick
      // files this root process appends to: the logs go to the mounter's own state dir.
      logFile: path.join(logDir, `${volumeId.replace(/[^A-Za-z0-9._-]/g, '_')}.log`),
    };
    const vlog = log.child({ volume: volumeId, capsule: spec.capsuleId });
    return serialized(stagingPath, async () => {
      const old = table.get(stagingPath);
      if (old) {
        const h = await fuseStageHealthy(old.record, stagingPath);
        if (h.ok && sameMount(old.spec, spec)) {
          vlog.info('mounter.start.exists', { staging: stagingPath, pid: old.record.pid });
          return old.record; // idempotent: already live
        }
        if (h.ok) throw fail('ALREADY_EXISTS', `${stagingPath} is served for volume ${old.spec.volumeId} (capsule ${old.spec.capsuleId}, ${old.spec.rw ? 'rw' : 'ro'})`);
        vlog.warn('mounter.start.replacing', { staging: stagingPath, pid: old.record.pid, reason: h.reason });
        await stopMountProcess(old.record, stagingPath, vlog); // hung-but-alive too
        await table.delete(stagingPath);
      }
      // A leftover mount (a dead one, or one nobody here knows) would make the new process's
      // mount look live before it is: detach it first.
      if (mountAtPath(await readMountInfo(), stagingPath)) await detachStale(stagingPath, vlog);
      const record = await startMountProcess(spec, vlog);
      await table.set(stagingPath, { spec, record });
      vlog.info('mounter.started', { staging: stagingPath, pid: record.pid, rw: spec.rw });
      return record;
    });
  }

  async function stop(stagingPathRaw: unknown, record: unknown): Promise<null> {
    const stagingPath = absPath(stagingPathRaw, 'stagingPath');
    if (record !== undefined && record !== null && !isRecord(record)) throw fail('INVALID_ARGUMENT', 'record must be {pid, args, startedAt}');
    return serialized(stagingPath, async () => {
      const e = table.get(stagingPath);
      // Ours when we have it; otherwise the caller's record, e.g. a process the plugin started
      // itself before it was switched to a mounter (mountProcessAlive checks the argv, so a pid
      // that means something else here is left alone).
      const rec = e?.record ?? (record as MountProcessRecord | undefined);
      const vlog = log.child({ volume: e?.spec.volumeId ?? null });
      await stopMountProcess(rec, stagingPath, vlog);
      await table.delete(stagingPath);
      vlog.info('mounter.stopped', { staging: stagingPath, pid: rec?.pid ?? null });
      return null;
    });
  }

  async function list(): Promise<MounterEntry[]> {
    const mounts = await readMountInfo();
    return table.entries().map(([p, e]) => ({
      stagingPath: p,
      volumeId: e.spec.volumeId,
      capsuleId: e.spec.capsuleId,
      gateway: e.spec.gateway,
      rw: e.spec.rw,
      record: e.record,
      alive: mountProcessAlive(e.record),
      mounted: !!mountAtPath(mounts, p)?.fstype.startsWith('fuse'),
    }));
  }

  async function handle(req: MounterRequest): Promise<unknown> {
    switch (req.op) {
      case 'hello':
        return hello;
      case 'start':
        return start(req.spec);
      case 'stop':
        return stop(req.stagingPath, req.record);
      case 'list':
        return list();
      default:
        throw fail('INVALID_ARGUMENT', `unknown op ${JSON.stringify((req as { op?: unknown }).op)}`);
    }
  }

  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    // A client that goes away mid-request must not take anything with it: the operation runs to
    // completion (and is recorded); only its answer is dropped.
    socket.on('error', (e) => log.debug('mounter.client-error', { err: e }));
    const reply = (r: MounterResponse) => {
      if (socket.writable) socket.write(JSON.stringify(r) + '\n');
    };
    lineReader(socket, (line) => {
      let req: MounterRequest;
      try {
        req = JSON.parse(line) as MounterRequest;
        if (typeof req !== 'object' || req === null || typeof req.id !== 'number') throw new Error('a request needs a numeric id');
      } catch (e) {
        reply({ id: -1, ok: false, error: { code: 'INVALID_ARGUMENT', message: `bad request: ${(e as Error).message}` } });
        return;
      }
      handle(req).then(
        (result) => reply({ id: req.id, ok: true, result: result ?? null }),
        (e: unknown) => {
          const code: ErrorCode = e instanceof SpaceError ? e.code : 'INTERNAL';
          if (code === 'INTERNAL') log.error('mounter.op.failed', { op: req.op, err: e });
          reply({ id: req.id, ok: false, error: { code, message: (e as Error)?.message ?? String(e) } });
        },
      );
    }, () => {
      reply({ id: -1, ok: false, error: { code: 'INVALID_ARGUMENT', message: 'request line too long' } });
      socket.end();
    });
  });

  await fsp.mkdir(path.dirname(socketPath), { recursive: true });
  if (fs.existsSync(socketPath)) {
    if (await socketAnswers(socketPath)) throw fail('FAILED_PRECONDITION', `another mounter is already serving ${socketPath}`);
    fs.rmSync(socketPath, { force: true }); // left by a killed instance
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // Whoever can connect can make this root process mount things: owner only.
  fs.chmodSync(socketPath, 0o600);
  log.info('mounter.listening', { socket: socketPath, instance: hello.instance, adoptedAlive: adopted.alive, adoptedDead: adopted.dead });

  let closed = false;
  return {
    socketPath,
    hello,
    adopted,
    async close() {
      if (closed) return;
      closed = true;
      const done = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await done;
      // In-flight operations finish their state writes before we go.
      await Promise.allSettled([...locks.values()]);
      log.info('mounter.stopped-listening', { socket: socketPath });
    },
  };
}
