/**
 * The libnfs-utils command line clients (nfs-ls, nfs-cat, nfs-cp) as test peers: a real NFS
 * client implementation independent of the kernel's.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const BINARIES = ['nfs-ls', 'nfs-cat', 'nfs-cp'];

function which(bin: string): string | undefined {
  for (const d of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const p = path.join(d, bin);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** In a before() hook: skip without libnfs-utils, except under CI (hack/install-deps.sh installs it). */
export function needLibnfs(ctx: Mocha.Context): void {
  const missing = BINARIES.filter((b) => !which(b));
  if (!missing.length) return;
  if (process.env.CI) throw new Error(`libnfs-utils binaries missing: ${missing.join(', ')} (apt-get install -y libnfs-utils)`);
  ctx.skip();
}

export interface Run {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Always asynchronous: the server answering the client lives in this process. */
export function run(bin: string, args: string[], timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(bin, args, { encoding: 'buffer', timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr: stderr.toString() });
    });
  });
}

export async function mustRun(bin: string, args: string[]): Promise<Buffer> {
  const r = await run(bin, args);
  assert.equal(r.code, 0, `${bin} ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}
