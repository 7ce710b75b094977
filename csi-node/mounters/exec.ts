/**
 * The one way the node mounters run host tools (mount, umount, nvme, blkid, mkfs.ext4 ...).
 * Injectable so tests can assert the exact argv of tools whose peers are not on this machine
 * (NVMe/TCP targets, NFS servers) and replay recorded outputs instead.
 *
 * Always a child process with a timeout, never a synchronous call: a tool touching a dead or
 * hung FUSE mount must not block the plugin's event loop.
 */
import { execFile } from 'node:child_process';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export type CommandRunner = (cmd: string, args: string[], opts?: { timeoutMs?: number }) => Promise<CommandResult>;

export const execRunner: CommandRunner = (cmd, args, opts = {}) =>
  new Promise((resolve) => {
    execFile(cmd, args, { timeout: opts.timeoutMs ?? 60_000, encoding: 'utf8', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const raw = err as (Error & { code?: unknown }) | null;
      const code = raw ? (typeof raw.code === 'number' ? raw.code : -1) : 0;
      resolve({ code, stdout, stderr: stderr || (raw && code === -1 ? raw.message : '') });
    });
  });

/** A failed tool run, with its command line and stderr (what an operator needs to debug). */
export class CommandError extends Error {
  constructor(readonly cmd: string, readonly args: string[], readonly result: CommandResult) {
    super(`${cmd} ${args.join(' ')} failed (exit ${result.code}): ${(result.stderr || result.stdout).trim()}`);
  }
}

/** Run and throw CommandError on a non-zero exit. */
export async function runChecked(run: CommandRunner, cmd: string, args: string[], opts?: { timeoutMs?: number }): Promise<CommandResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new CommandError(cmd, args, r);
  return r;
}
