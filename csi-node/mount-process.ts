/**
 * One FUSE mount of one capsule, served from its own process, for the CSI node plugin.
 *
 * Why not `spacectl project mount --gateway`: with --gateway that command asks the *gateway* to
 * mount (the FUSE session then lives in the gateway's process, on the gateway's host), which is
 * not what a node needs. Here the kernel mount lives on the node, in a process that outlives
 * restarts of the node plugin, and every file operation goes to the remote gateway over gRPC.
 *
 *   node dist/csi-node/mount-process.js --capsule ID --target DIR --gateway ADDR [--volume VOLID] [--rw]
 *
 * SIGTERM/SIGINT: unmount and exit 0. The mount is live once it shows in /proc/self/mountinfo.
 */
import { createLogger } from '../capsule/log.js';
import type { FileAttr } from '../capsule/types.js';
import { GatewayClient } from '../gateway/client.js';
import { SpaceError } from '../capsule/errors.js';
import { FuseMount, type MountableStore } from '../gateway/fuse/mount.js';
import { HeldBytes } from '../capsule/segment-pool.js';

/**
 * The gateway client as a FUSE store. Writes go straight to the gateway (durable when the call
 * returns) instead of a local dirty buffer: the only copy of the head lives with the gateway that
 * owns the capsule, so a node crash must not lose acknowledged writes. Flush is then a no-op.
 */
export function gatewayFuseStore(client: GatewayClient, capsuleId: string, hardMs = HARD_MOUNT_MS): MountableStore {
  const h = <T>(fn: () => Promise<T>) => hard(fn, hardMs);
  return {
    resolveId: (ref) => (ref === capsuleId ? capsuleId : ref),
    getattr: (r, p, v) => h(() => client.getattr(r, p, v)),
    readdir: (r, p, v) => h(() => client.readdir(r, p, v)),
    // The bytes arrive in a gRPC message of their own: nothing to give back.
    readHeld: (r, p, o, l) => h(() => client.read(r, p, o, l)).then((b) => new HeldBytes(b)),
    truncate: (r, p, s) => h(() => client.truncate(r, p, s)),
    mkdir: (r, p, m) => h(() => client.mkdir(r, p, m)),
    createFile: (r, p, m) => h(() => client.createFile(r, p, m)),
    unlink: (r, p) => h(() => client.unlink(r, p)),
    rmdir: (r, p) => h(() => client.rmdir(r, p)),
    rename: (r, f, t) => h(() => client.rename(r, f, t)),
    setattr: (r, p, a): Promise<FileAttr> => h(() => client.setattr(r, p, a)),
    writeBuffered: (r, p, o, d) => h(() => client.write(r, p, o, d)),
    flush: async () => {},
  };
}

/**
 * How long an operation waits for an unreachable gateway before failing (a gateway or plugin
 * restart takes seconds): like an NFS hard mount, the application sees a slow call instead of
 * an error, up to this bound. SPACE_CSI_HARD_MOUNT_MS overrides it.
 */
const HARD_MOUNT_MS = Number(process.env.SPACE_CSI_HARD_MOUNT_MS) || 60_000;

async function hard<T>(fn: () => Promise<T>, limitMs: number): Promise<T> {
  const deadline = Date.now() + limitMs;
  for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof SpaceError && e.code === 'UNAVAILABLE') || Date.now() + delay > deadline) throw e;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

function parseArgs(argv: string[]): { capsule: string; target: string; gateway: string; volume: string; rw: boolean } {
  const get = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const capsule = get('capsule');
  const target = get('target');
  const gateway = get('gateway');
  if (!capsule || !target || !gateway) throw new Error('usage: mount-process --capsule ID --target DIR --gateway ADDR [--volume VOLID] [--rw]');
  return { capsule, target, gateway, volume: get('volume') ?? capsule, rw: argv.includes('--rw') };
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const log = createLogger({ component: 'csi-mount', base: { volume: a.volume, capsule: a.capsule } });
  // Reconnect quickly after a gateway restart (the default backoff grows to minutes).
  const client = new GatewayClient(a.gateway, { channelOptions: { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 2000 } });
  // Resolve once, so a typo fails here with NOT_FOUND instead of as EIO on every access.
  const info = await client.get(a.capsule);
  const mount = await FuseMount.mount({
    store: gatewayFuseStore(client, info.id),
    ref: info.id,
    target: a.target,
    readOnly: !a.rw,
    allowOther: true, // pods run as arbitrary uids
    logger: log,
  });
  log.info('csi-mount.ready', { target: a.target, rw: a.rw, pid: process.pid });
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('csi-mount.stop', { signal });
    try {
      await mount.unmount({ force: true });
    } catch (e) {
      log.error('csi-mount.unmount-failed', { err: e });
    }
    client.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  // The plugin that started us may die and its pipes with it: never die of SIGHUP/EPIPE.
  process.on('SIGHUP', () => log.warn('csi-mount.sighup-ignored', {}));
}

main().catch((e: Error) => {
  process.stderr.write(`csi-mount: ${e.message}\n`);
  process.exit(1);
});
