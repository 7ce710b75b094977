/**
 * The kernel side of a mount point: is something mounted at a path, is it a dead FUSE mount, and
 * how to take it away. Every probe that could touch a FUSE mount runs in a child process (never
 * in this one): the FUSE loop of our own mounts is served by this process's JS thread, and a
 * synchronous or thread-pool call that waits on our own mount can deadlock it.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import type { Logger } from '../../capsule/log.js';

export interface MountEntry {
  target: string;
  fstype: string;
  source: string;
}

/** /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The mount at exactly `target` (the top one when several are stacked), if any. */
export function mountAt(target: string): MountEntry | undefined {
  let text: string;
  try {
    text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return undefined;
  }
  let found: MountEntry | undefined;
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length < 10 || unescape(f[4]!) !== target) continue;
    const sep = f.indexOf('-', 6);
    if (sep < 0) continue;
    found = { target, fstype: f[sep + 1] ?? '', source: unescape(f[sep + 2] ?? '') };
  }
  return found;
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: string[], timeoutMs = 10_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr: stderr || (err && code === -1 ? err.message : '') });
    });
  });
}

/**
 * A FUSE mount whose server is gone answers ENOTCONN ("Transport endpoint is not connected").
 * Probed with stat(1) in a child with a timeout, so a hung server cannot hang us.
 */
export async function isStaleFuseMount(target: string): Promise<boolean> {
  const r = await run('stat', ['-c', '%i', target], 3000);
  return r.code !== 0 && /not connected/i.test(r.stderr);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface UnmountOptions {
  /** Plain (non-lazy) attempts before falling back to a lazy detach. */
  retries?: number;
  retryDelayMs?: number;
  logger?: Logger;
}

export type UnmountResult = 'clean' | 'lazy' | 'gone';

/**
 * Unmount `target`: plain `fusermount -u` first so data and handles are released in order; when a
 * process keeps the mount busy, retry a few times, then detach lazily (`fusermount -uz`): the
 * mount disappears from the namespace at once and the kernel drops it when the last user leaves.
 */
export async function unmountKernel(target: string, opts: UnmountOptions = {}): Promise<UnmountResult> {
  const retries = opts.retries ?? 5;
  const delay = opts.retryDelayMs ?? 200;
  let last = '';
  for (let i = 0; i < retries; i++) {
    if (!mountAt(target)) return 'gone';
    const r = await run('fusermount', ['-u', target]);
    if (r.code === 0) return 'clean';
    last = r.stderr.trim();
    if (!/busy/i.test(last)) break; // not a busy mount: retrying will not help
    await sleep(delay * (i + 1));
  }
  if (!mountAt(target)) return 'gone';
  opts.logger?.warn('fuse.unmount.lazy', { target, reason: last || 'unmount failed', msg: 'target is busy; detached lazily, the kernel releases it when the last user leaves' });
  const r = await run('fusermount', ['-uz', target]);
  if (r.code !== 0 && mountAt(target)) throw new Error(`unmounting ${target} failed: ${r.stderr.trim() || last}`);
  return 'lazy';
}
