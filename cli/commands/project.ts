/**
 * spacectl project mount|umount: a kernel FUSE view of a capsule.
 *
 * A mount is served by the process that owns the data dir (one writer per head). `mount` asks
 * that process over its socket; when nobody owns the dir it starts one in the background (as
 * sshfs does) and returns once the mount is live. --foreground keeps the serving process attached
 * instead. Either way the owner started for a mount exits once its last mount goes away
 * (`project umount`), as `sshfs -f` does, or on SIGTERM/SIGINT/SIGHUP.
 */
import path from 'node:path';
import { readOwner } from '../../capsule/lock.js';
import { Store } from '../../capsule/store.js';
import { serverCacheBytes } from '../../capsule/cache-size.js';
import { tuneHeapForServing } from '../../gateway/heap-tuning.js';
import { createLogger } from '../../capsule/log.js';
import { startDetached } from '../detached.js';
import { SpaceError, invalid } from '../../capsule/errors.js';
import { GatewayClient } from '../../gateway/client.js';
import { startGateway } from '../../gateway/server.js';
import { LocalViewManager } from '../../gateway/fuse/views.js';
import type { ExportInfo, ExportSpec, MountInfo, MountSpec, ViewManager } from '../../gateway/views-api.js';
import { GatewayExports } from '../../gateway/exports.js';
import { DEFAULT_NVME_LISTEN, NvmeExports } from '../../gateway/nvme/exports.js';
import { DEFAULT_NFS_LISTEN, NfsExports } from '../../gateway/nfs/gateway-exports.js';
import { joinHostPort } from '../../gateway/address.js';
import type { Command } from '../command.js';
import { out } from '../command.js';
import { clientTls, dataDirOf } from '../target.js';
import type { Flags } from '../args.js';

function describe(m: MountInfo): string {
  if (m.kind === 'content-file') {
    return `FUSE is unavailable here: placed a read-only copy of capsule ${m.capsuleId} at ${m.target} instead (not a live view)`;
  }
  return `mounted capsule ${m.capsuleId} at ${m.target} (${m.rw ? 'read-write' : 'read-only'}); try: cat ${path.join(m.target, 'content')}`;
}

/** Wraps the view manager so a background owner can exit when its last mount is gone. */
class IdleAwareViews implements ViewManager {
  constructor(private readonly inner: ViewManager, private readonly onIdle: () => void) {}
  mount(spec: MountSpec) {
    return this.inner.mount(spec);
  }
  async unmount(target: string) {
    await this.inner.unmount(target);
    if (this.inner.list().length === 0) setImmediate(this.onIdle);
  }
  list() {
    return this.inner.list();
  }
  closeAll() {
    return this.inner.closeAll();
  }
}

async function mountForeground(dataDir: string, spec: MountSpec): Promise<void> {
  const logger = createLogger({ component: 'mount' });
  tuneHeapForServing(logger);
  const store = Store.open(dataDir, { logger: logger.child({ component: 'store' }) });
  let stop!: () => void;
  const stopped = new Promise<void>((r) => (stop = r));
  const local = new LocalViewManager(store, logger.child({ component: 'fuse' }));
  const views = new IdleAwareViews(local, () => stop());
  // Serve the Capsule API on the data dir's socket only: other spacectl commands route here.
  const gw = await startGateway({ dataDir, store, views, listen: '', httpListen: '', logger });
  // Listen before saying the mount is up: whoever waits for that line may signal us at once.
  const offSignals = onStopSignal(() => stop());
  try {
    const m = await views.mount(spec);
    out(describe(m));
  } catch (e) {
    await gw.close();
    offSignals();
    throw e;
  }
  await stopped;
  logger.info('mount.shutdown', { dataDir });
  await gw.close(); // unmounts every view, flushes and closes the store
  offSignals();
}

/** Start a detached owner process for the data dir and wait until the mount is live. */
async function mountBackground(dataDir: string, spec: MountSpec): Promise<void> {
  const bg = startDetached(dataDir, 'mount.log', ['project', 'mount', '--id', spec.ref, '--target', spec.target, '--data-dir', dataDir, '--foreground', ...(spec.rw ? ['--rw'] : [])]);
  const { child, logFile } = bg;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (bg.exitCode() !== null) throw new SpaceError('FAILED_PRECONDITION', bg.reason());
    const owner = readOwner(dataDir);
    if (owner?.endpoint && owner.pid === child.pid) {
      const client = new GatewayClient(owner.endpoint);
      try {
        const m = (await client.listMounts()).find((x) => x.target === spec.target);
        if (m) {
          child.unref();
          out(describe(m));
          return;
        }
      } catch {
        /* not serving yet */
      } finally {
        client.close();
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGTERM');
  throw new SpaceError('UNAVAILABLE', `mount did not become live within 30 s; see ${logFile}`);
}

function ownerClient(f: Flags, dataDir: string): GatewayClient | null {
  const gateway = f.str('gateway');
  if (gateway) return new GatewayClient(gateway, clientTls(f));
  const owner = readOwner(dataDir);
  return owner?.endpoint ? new GatewayClient(owner.endpoint) : null;
}

async function mount(f: Flags): Promise<void> {
  const ref = f.ref()!;
  const targetArg = f.str('target') ?? f.positionals[0];
  if (!targetArg) throw invalid('project mount needs --target DIR');
  const target = path.resolve(targetArg);
  const spec: MountSpec = { ref, target, rw: f.bool('rw') };
  const foreground = f.bool('foreground');
  // Accepted for older background starts; a mount's owner always exits when idle now.
  f.bool('exit-when-idle');
  const dataDir = dataDirOf(f);
  const client = ownerClient(f, dataDir);
  f.rejectUnknown();
  if (client) {
    try {
      out(describe(await client.mount(spec)));
    } finally {
      client.close();
    }
    return;
  }
  // Check what we can before forking, so the user sees the plain error.
  const store = Store.open(dataDir);
  try {
    await store.get(ref);
  } finally {
    await store.close();
  }
  if (foreground) return mountForeground(dataDir, spec);
  return mountBackground(dataDir, spec);
}

async function umount(f: Flags): Promise<void> {
  const targetArg = f.str('target') ?? f.positionals[0];
  if (!targetArg) throw invalid('project umount needs --target DIR');
  const target = path.resolve(targetArg);
  const dataDir = dataDirOf(f);
  const client = ownerClient(f, dataDir);
  f.rejectUnknown();
  if (!client) throw new SpaceError('NOT_FOUND', `nothing is mounted at ${target} by data dir ${dataDir} (no running owner)`);
  try {
    await client.unmount(target);
  } finally {
    client.close();
  }
  out(`unmounted ${target}`);
}

/** Wait for SIGINT/SIGTERM/SIGHUP. */
const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;

/** Call `handler` on SIGTERM, SIGINT or SIGHUP; returns what removes it again. */
function onStopSignal(handler: () => void): () => void {
  for (const sig of STOP_SIGNALS) process.on(sig, handler);
  return () => {
    for (const sig of STOP_SIGNALS) process.off(sig, handler);
  };
}

/**
 * Resolves on SIGINT/SIGTERM/SIGHUP, and keeps the process alive until then. Signal listeners do
 * not hold Node's event loop open: a command that serves through a gateway holds only its client
 * connection, and once that went idle the loop emptied and the process exited in the middle of
 * "serving" (a SIGTERM arriving during that exit then killed it outright).
 */
function untilSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    const keepAlive = setInterval(() => {}, 1 << 30);
    const off = onStopSignal(() => {
      off();
      clearInterval(keepAlive);
      resolve();
    });
  });
}

function describeExport(e: ExportInfo): void {
  // stdout: the NQN or export path alone (scripts read it); stderr: how to use it.
  out(e.name);
  const host = e.address === '0.0.0.0' || e.address === '::' ? '<this host>' : e.address;
  const what = `capsule ${e.capsuleId}${e.protocol === 'nvme' ? ` (${e.file ?? 'content'})` : ''}`;
  const how = e.protocol === 'nvme'
    ? `  connect: nvme connect -t tcp -a ${host} -s ${e.port} -n ${e.name}\n`
    : `  mount:   mount -t nfs -o vers=4.2,port=${e.port} ${host}:${e.name} /mnt\n` +
      `           mount -t nfs -o vers=3,proto=tcp,nolock,port=${e.port},mountport=${e.mountPort ?? e.port},mountproto=tcp ${host}:${e.name} /mnt\n`;
  process.stderr.write(
    `serving ${what} over ${e.protocol === 'nvme' ? 'NVMe/TCP' : 'NFS'} on ${joinHostPort(e.address, e.port)}, ${e.readOnly ? 'read-only' : 'read-write'}\n` +
    how +
    `  stop with Ctrl-C\n`,
  );
}

/**
 * spacectl project nvme|nfs: serve a capsule as an NVMe/TCP namespace or an NFS export, in the
 * foreground until a signal. When a gateway already owns the data dir, it serves the export for
 * as long as this command runs; otherwise this process opens the store and serves it (and the
 * data dir's socket, so other spacectl commands keep working meanwhile).
 */
async function serveExport(protocol: 'nvme' | 'nfs', f: Flags): Promise<void> {
  const ref = f.ref()!;
  const allowed = f.str(protocol === 'nvme' ? 'allow-host' : 'allow-client');
  const spec: ExportSpec = {
    protocol,
    ref,
    readOnly: f.bool('read-only'),
    listen: f.str('listen') ?? (protocol === 'nvme' ? DEFAULT_NVME_LISTEN : DEFAULT_NFS_LISTEN),
    allowed: allowed ? allowed.split(',').map((x) => x.trim()).filter(Boolean) : [],
  };
  if (protocol === 'nvme') {
    const nqn = f.str('nqn');
    const file = f.str('file');
    const blockSize = f.int('block-size');
    if (nqn) spec.name = nqn;
    if (file) spec.file = file;
    if (blockSize !== undefined) spec.blockSize = blockSize;
  } else {
    const exportPath = f.str('export-path');
    if (exportPath) spec.name = exportPath;
  }
  const dataDir = dataDirOf(f);
  const client = ownerClient(f, dataDir);
  f.rejectUnknown();
  if (client) {
    try {
      const e = await client.export(spec);
      // Listen before printing: whoever reads the NQN may signal us at once.
      const stop = untilSignal();
      describeExport(e);
      await stop;
      await client.unexport(protocol, e.name);
    } finally {
      client.close();
    }
    return;
  }
  const logger = createLogger({ component: protocol });
  tuneHeapForServing(logger);
  const store = Store.open(dataDir, { logger: logger.child({ component: 'store' }), cacheBytes: serverCacheBytes() });
  const backend = protocol === 'nvme' ? new NvmeExports(store, logger, spec.listen) : new NfsExports(store, logger, spec.listen);
  const exports = new GatewayExports([backend]);
  const gw = await startGateway({ dataDir, store, exports, listen: '', httpListen: '', logger });
  let stop: Promise<void>;
  try {
    const e = await exports.export(spec);
    stop = untilSignal(); // before printing, as above
    describeExport(e);
  } catch (e) {
    await gw.close();
    throw e;
  }
  await stop;
  await gw.close(); // withdraws the export, flushes what clients wrote, closes the store
}

export const project: Command = {
  name: 'project',
  summary: 'project a capsule as a view: mount (FUSE) / umount, nvme (NVMe/TCP namespace), nfs (NFS export)',
  usage: [
    'spacectl project mount --id ID --target DIR [--rw] [--foreground]',
    '       spacectl project umount --target DIR',
    `       spacectl project nvme --id ID [--listen ${DEFAULT_NVME_LISTEN}] [--read-only] [--nqn NQN] [--file content] [--block-size 512|4096] [--allow-host NQN,...]`,
    `       spacectl project nfs --id ID [--listen ${DEFAULT_NFS_LISTEN}] [--read-only] [--export-path /P] [--allow-client CIDR,...]`,
    '       spacectl project --view mount|nvme|nfs ...   (the same commands)',
  ].join('\n'),
  booleans: ['rw', 'foreground', 'exit-when-idle', 'read-only'],
  async run(f) {
    const sub = f.str('view') ?? f.positionals.shift();
    if (sub === 'mount' || sub === 'fuse') return mount(f);
    if (sub === 'umount' || sub === 'unmount') return umount(f);
    if (sub === 'nvme' || sub === 'nfs') return serveExport(sub, f);
    throw invalid(`project needs a view: mount, umount, nvme or nfs (got ${sub ?? 'nothing'})`);
  },
};
