/**
 * FUSE staging: one mount process per volume (csi-node/mount-process.ts), started detached in its
 * own session so a restart or crash of the node plugin does not take the mount down with it —
 * the classic failure of FUSE CSI drivers, where every pod then sees "transport endpoint is not
 * connected". The pid and argv are kept in the node state so a restarted plugin can tell a live
 * mount from a dead one and start a replacement (see node-service repair()).
 *
 * Detaching does not help when the plugin runs in a container: a container restart kills every
 * process in it. There the plugin runs with --mounter-socket and these functions are called by
 * the mounter sidecar instead (csi-node/mounter-service.ts, mounters/launcher.ts).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, unmountKernel } from '../../gateway/fuse/kernel.js';
import type { Logger } from '../../capsule/log.js';
import type { MountProcessRecord } from '../node-state.js';
import { mountAtPath, readMountInfo } from './mountinfo.js';

export const MOUNT_PROCESS_JS = fileURLToPath(new URL('../mount-process.js', import.meta.url));

export interface FuseStageSpec {
  volumeId: string;
  capsuleId: string;
  stagingPath: string;
  gateway: string;
  rw: boolean;
  /** Where the mount process's stderr (its JSON log) goes. */
  logFile: string;
}

export function mountProcessArgs(s: FuseStageSpec): string[] {
  return [MOUNT_PROCESS_JS, '--capsule', s.capsuleId, '--target', s.stagingPath, '--gateway', s.gateway, '--volume', s.volumeId, ...(s.rw ? ['--rw'] : [])];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Start the mount process and wait until its FUSE mount is live at the staging path. */
export async function startMountProcess(s: FuseStageSpec, log: Logger, timeoutMs = 30_000): Promise<MountProcessRecord> {
  await fsp.mkdir(path.dirname(s.logFile), { recursive: true });
  const fd = fs.openSync(s.logFile, 'a');
  const logStart = fs.fstatSync(fd).size;
  const args = mountProcessArgs(s);
  // detached: its own process group and session, so signals aimed at the plugin's group (and
  // the plugin's exit) leave it alone; stdio goes to a file, not to pipes that die with us.
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  let exited: number | null = null;
  child.on('exit', (code) => (exited = code ?? 1));
  const pid = child.pid!;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited !== null) {
      const tail = fs.readFileSync(s.logFile, 'utf8').slice(logStart).trim().split('\n');
      const own = tail.filter((l) => l.startsWith('csi-mount: '));
      throw new Error(`mount process for ${s.capsuleId} exited (${exited}): ${(own.length ? own : tail.slice(-3)).join('; ')}`);
    }
    const m = mountAtPath(await readMountInfo(), s.stagingPath);
    if (m && m.fstype.startsWith('fuse')) {
      child.unref();
      log.info('fuse.mount-process.started', { pid, staging: s.stagingPath });
      return { pid, args: args.slice(1), startedAt: new Date().toISOString() };
    }
    await sleep(50);
  }
  child.kill('SIGKILL');
  throw new Error(`mount process for ${s.capsuleId} did not mount ${s.stagingPath} within ${timeoutMs} ms; see ${s.logFile}`);
}

/** Alive and still ours: a recycled pid running something else does not count. */
export function mountProcessAlive(rec: MountProcessRecord): boolean {
  try {
    process.kill(rec.pid, 0);
  } catch {
    return false;
  }
  try {
    const cmdline = fs.readFileSync(`/proc/${rec.pid}/cmdline`, 'utf8').split('\0');
    if (fs.readFileSync(`/proc/${rec.pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z')) return false; // zombie
    return rec.args.every((a) => cmdline.includes(a));
  } catch {
    return false;
  }
}

/**
 * A staged FUSE volume is healthy when its process lives and the mount answers. `alive` is asked
 * about the process: by default this process's view of /proc; a plugin whose mount processes live
 * in a mounter sidecar (another PID namespace) asks the mounter instead.
 */
export async function fuseStageHealthy(
  rec: MountProcessRecord | undefined,
  stagingPath: string,
  alive: (rec: MountProcessRecord) => boolean | Promise<boolean> = mountProcessAlive,
): Promise<{ ok: boolean; reason?: string }> {
  if (!rec || !(await alive(rec))) return { ok: false, reason: `mount process ${rec?.pid ?? '?'} is not running` };
  const m = mountAtPath(await readMountInfo(), stagingPath);
  if (!m || !m.fstype.startsWith('fuse')) return { ok: false, reason: `nothing is mounted at ${stagingPath}` };
  const dead = await deadMountReason(stagingPath);
  if (dead) return { ok: false, reason: dead };
  return { ok: true };
}

/**
 * Why a FUSE mount (or a bind of one) is dead, or undefined when it answers. The kernel reports a
 * gone server as ENOTCONN ("transport endpoint is not connected"), or as ECONNABORTED ("software
 * caused connection abort") once the connection was aborted. Probed by stat(1) in a child with a
 * timeout, so a hung server cannot hang the plugin.
 */
export async function deadMountReason(p: string): Promise<string | undefined> {
  const r = await run('stat', ['-c', '%i', p], 3000);
  if (r.code === 0) return undefined;
  const m = /transport endpoint is not connected|software caused connection abort/i.exec(r.stderr);
  if (m) return m[0].toLowerCase();
  if (r.code === -1) return `stat ${p} did not answer within 3 s`;
  return undefined;
}

/** Stop the mount process (it unmounts on SIGTERM); then make sure no mount is left. */
export async function stopMountProcess(rec: MountProcessRecord | undefined, stagingPath: string, log: Logger): Promise<void> {
  if (rec && mountProcessAlive(rec)) {
    process.kill(rec.pid, 'SIGTERM');
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && mountProcessAlive(rec)) await sleep(50);
    if (mountProcessAlive(rec)) {
      log.warn('fuse.mount-process.kill', { pid: rec.pid, msg: 'did not exit within 15 s of SIGTERM' });
      process.kill(rec.pid, 'SIGKILL');
    }
  }
  await unmountKernel(stagingPath, { retries: 2, logger: log });
}

/** A dead FUSE mount cannot be unmounted cleanly: detach it lazily so the path is reusable. */
export async function detachStale(stagingPath: string, log: Logger): Promise<void> {
  await unmountKernel(stagingPath, { retries: 1, logger: log });
}
