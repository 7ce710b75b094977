/**
 * A capsule mounted read-write through the gateway's FUSE view (LocalViewManager), in its own
 * process, as a gateway would serve it. For bench/fuse.ts.
 *
 *   node dist/bench/capsule-mount-child.js DATADIR MOUNTPOINT [--no-fsync] [--plain]
 *
 * Opens (creating if needed) a store in DATADIR and a capsule "bench" (AES-256-GCM encryption,
 * no compression, 1 MiB segments; --plain: no encryption), mounts it rw at MOUNTPOINT and prints
 * "ready". --no-fsync opens the store with fsync:false (default: fdatasync per segment).
 * On SIGUSR2 prints one JSON line {"cpu": {user, system} (µs), "ops": FUSE counters}
 * (cumulative). On SIGTERM/SIGINT unmounts (committing buffered writes), closes the store, exits.
 */
import { Store } from '../capsule/store.js';
import { validatePolicy } from '../capsule/policy.js';
import { createLogger } from '../capsule/log.js';
import { LocalViewManager } from '../gateway/fuse/views.js';

const REF = 'bench';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const flags = new Set(args.filter((a) => a.startsWith('--')));
  const [dir, target] = args.filter((a) => !a.startsWith('--'));
  if (!dir || !target) {
    console.error('usage: capsule-mount-child.js DATADIR MOUNTPOINT [--no-fsync] [--plain]');
    process.exit(2);
  }
  const log = createLogger({ component: 'bench-capsule-mount', level: 'warn' });
  const store = Store.open(dir, { fsync: !flags.has('--no-fsync'), logger: log });
  const existing = await store.list();
  if (!existing.some((c) => c.id === REF)) {
    await store.create({ id: REF, policy: validatePolicy({ encryption: !flags.has('--plain'), compression: 'none' }) });
  }
  const views = new LocalViewManager(store, log);
  if (!views.fuse.ok) {
    console.error(`FUSE unavailable: ${views.fuse.reason}`);
    await store.close();
    process.exit(3);
  }
  const info = await views.mount({ ref: REF, target, rw: true });
  const mount = views.fuseMount(info.target);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    let rc = 0;
    try {
      await views.closeAll();
      await store.close();
    } catch (e) {
      console.error(`capsule-mount-child: shutdown failed: ${(e as Error).message}`);
      rc = 1;
    }
    process.exit(rc);
  };
  process.on('SIGUSR2', () => process.stdout.write(JSON.stringify({ cpu: process.cpuUsage(), ops: mount?.stats ?? null }) + '\n'));
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  process.stdout.write('ready\n');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
