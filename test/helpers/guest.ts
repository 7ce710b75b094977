// Tests drive a real Linux kernel (NVMe/TCP initiator and target, NFS client, ext4) through a tiny
// QEMU guest: hack/guest/run-guest.sh boots it and runs a shell script inside. The guest reaches
// the host's 127.0.0.1 as 10.0.2.2, so a test can serve a protocol from this very process to it.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const RUN_GUEST = path.join('hack', 'guest', 'run-guest.sh');

/** The repo root: compiled, this file is dist/test/helpers/guest.js (three levels down); the
 * fallbacks cover running from another layout (ts-node, a copied dist) inside the repo. */
function findRepo(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [path.resolve(here, '..', '..', '..'), path.resolve(here, '..', '..')];
  for (let dir = process.cwd(); ; dir = path.dirname(dir)) {
    candidates.push(dir);
    if (path.dirname(dir) === dir) break;
  }
  return candidates.find((d) => fs.existsSync(path.join(d, RUN_GUEST))) ?? candidates[0]!;
}

export const REPO = findRepo();
export const GUEST_DIR = process.env.SPACE_GUEST_DIR ?? path.join(REPO, '.cache', 'guest');

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '').split(path.delimiter).some((d) => {
    try {
      fs.accessSync(path.join(d, cmd), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** Whether a guest can boot here: QEMU installed and the guest built (hack/install-deps.sh does
 * both). Only checks files, so it is cheap enough for a before() hook. */
export function guestAvailability(): { ok: true } | { ok: false; reason: string } {
  if (!fs.existsSync(path.join(REPO, RUN_GUEST))) return { ok: false, reason: `${RUN_GUEST} not found under ${REPO}` };
  if (!onPath('qemu-system-x86_64')) return { ok: false, reason: 'qemu-system-x86_64 not installed (hack/install-deps.sh)' };
  for (const f of ['initramfs.cpio', path.join('kernel', 'vmlinuz')]) {
    if (!fs.existsSync(path.join(GUEST_DIR, f))) return { ok: false, reason: `guest not built: ${path.join(GUEST_DIR, f)} missing (hack/guest/build-initramfs.sh)` };
  }
  return { ok: true };
}

export interface GuestResult {
  /** the script's exit status; 124 = timed out, 125 = the guest gave no result, 2 = harness error */
  code: number;
  /** what the script printed (stdout and stderr merged, as on the guest console); when the script
   * did not run to its end, run-guest.sh's diagnostics (console tail) are appended */
  output: string;
  /** wall-clock seconds for the whole run, boot included */
  seconds: number;
}

export interface GuestOptions {
  /** limit for the whole run, boot included (default 180 s) */
  timeoutMs?: number;
  /** host files copied into the guest's /root (the script's cwd) */
  files?: string[];
  /** extra environment for run-guest.sh: its GUEST_* options (GUEST_FWD, GUEST_SHARE, GUEST_MEM,
   * GUEST_APPEND, VERBOSE, ...). Values the script needs go into the script text itself. */
  env?: Record<string, string>;
}

// Guests run in their own process groups (see runGuest), so they would outlive a test process that
// exits early (mocha --exit, a failed run) and burn CPU until their timeout; stop them on exit.
const live = new Set<number>();
process.on('exit', () => {
  for (const pid of live) killGroup(pid, 'SIGTERM');
});

function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, signal);
  } catch {
    /* already gone */
  }
}

/**
 * Boot a guest and run `script` in it with busybox sh. Fully asynchronous: a server the guest
 * talks to may run in this same process, so nothing here may block the event loop.
 */
export async function runGuest(script: string, opts: GuestOptions = {}): Promise<GuestResult> {
  const timeoutMs = opts.timeoutMs ?? 180_000;
  const dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'space-guest-'));
  const scriptFile = path.join(dir, 'script.sh');
  await fs.promises.writeFile(scriptFile, script);
  const started = process.hrtime.bigint();
  try {
    return await new Promise<GuestResult>((resolve, reject) => {
      const child = spawn('bash', [path.join(REPO, RUN_GUEST), scriptFile, ...(opts.files ?? [])], {
        cwd: REPO,
        // run-guest.sh enforces the limit itself (exit 124 with the console tail); the timer below
        // is only a backstop 15 s later
        env: { ...process.env, GUEST_TIMEOUT: String(Math.max(1, Math.ceil(timeoutMs / 1000))), ...opts.env },
        stdio: ['ignore', 'pipe', 'pipe'],
        // own process group: QEMU stays in it (timeout --foreground), so one kill stops everything
        detached: true,
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      if (child.pid) live.add(child.pid);
      let killed = false;
      let hardKill: NodeJS.Timeout | undefined;
      const backstop = setTimeout(() => {
        killed = true;
        // TERM first: QEMU quits and run-guest.sh removes its temp dir; KILL if that hangs
        killGroup(child.pid, 'SIGTERM');
        hardKill = setTimeout(() => killGroup(child.pid, 'SIGKILL'), 5_000);
      }, timeoutMs + 15_000);
      child.on('error', (e) => {
        clearTimeout(backstop);
        reject(e);
      });
      child.on('close', (status, signal) => {
        clearTimeout(backstop);
        clearTimeout(hardKill);
        if (child.pid) live.delete(child.pid);
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        const code = killed ? 124 : (status ?? 128 + (signal ? os.constants.signals[signal] : 0));
        let output = Buffer.concat(out).toString();
        const diag = Buffer.concat(err).toString();
        // run-guest.sh reports "script-rc=<n>" when the script really ran to its end; otherwise the
        // harness failed (no build, timeout, panic) and its diagnostics belong in the result
        if (!/script-rc=\d+/.test(diag)) output += `\n--- run-guest.sh stderr ---\n${diag}`;
        resolve({ code, output, seconds });
      });
    });
  } finally {
    await fs.promises.rm(dir, { recursive: true, force: true });
  }
}

/**
 * In a before() hook: skip the suite when no guest can boot here, except under CI, where the
 * guest is installed by hack/install-deps.sh and its absence is a broken setup.
 */
export function needGuest(ctx: Mocha.Context): void {
  const avail = guestAvailability();
  if (avail.ok) return;
  if (process.env.CI) throw new Error(`guest unavailable in CI: ${avail.reason}`);
  ctx.skip();
}
