/**
 * Bind mounts: how a staged volume (a FUSE or NFS mount, or an NVMe filesystem) or a raw block
 * device is published at a pod's target path.
 */
import { runChecked, type CommandRunner } from './exec.js';
import { mountAtPath, readMountInfo } from './mountinfo.js';

/**
 * A read-only bind needs two steps: the kernel ignores MS_RDONLY on the initial MS_BIND and only
 * honours it on a remount of the bind. The explicit remount keeps that visible in logs and argv.
 */
export function bindArgs(source: string, target: string, readonly: boolean): string[][] {
  const steps = [['--bind', source, target]];
  if (readonly) steps.push(['-o', 'remount,bind,ro', target]);
  return steps;
}

export async function bindMount(run: CommandRunner, source: string, target: string, readonly: boolean): Promise<void> {
  const steps = bindArgs(source, target, readonly);
  await runChecked(run, 'mount', steps[0]!);
  try {
    for (const s of steps.slice(1)) await runChecked(run, 'mount', s);
  } catch (e) {
    // Never leave a writable bind behind a failed read-only publish.
    await run('umount', ['-l', target]);
    throw e;
  }
}

/** Unmount if mounted; a busy or dead (ENOTCONN) mount is detached lazily. */
export async function unmountPath(run: CommandRunner, target: string, opts: { lazy?: boolean } = {}): Promise<'gone' | 'clean' | 'lazy'> {
  let how: 'gone' | 'clean' | 'lazy' = 'gone';
  // Loop: a repeated publish after a crash can leave binds stacked on one target.
  for (let i = 0; i < 8 && mountAtPath(await readMountInfo(), target); i++) {
    if (!opts.lazy) {
      const r = await run('umount', [target]);
      if (r.code === 0) {
        if (how === 'gone') how = 'clean';
        continue;
      }
    }
    await runChecked(run, 'umount', ['-l', target]);
    how = 'lazy';
  }
  return how;
}
