/**
 * A guest that stays up and runs commands on request: code under test that shells out (the CSI
 * node plugin's nvme-cli, blkid, mkfs, mount, resize2fs calls) runs them in the guest's real
 * kernel through this CommandRunner. The guest polls a small HTTP server in this process for the
 * next command and posts back its exit status and output (base64, so any bytes survive).
 */
import http from 'node:http';
import type { CommandResult, CommandRunner } from '../../csi-node/mounters/exec.js';
import { runGuest, type GuestResult } from './guest.js';

/** Tools the guest has as real binaries under /usr/sbin; busybox's applets would shadow them. */
const REAL_BINARIES = new Set(['nvme', 'blkid', 'mke2fs', 'mkfs.ext4', 'mkfs.ext3', 'mkfs.ext2', 'e2fsck', 'fsck.ext4', 'resize2fs', 'tune2fs', 'dumpe2fs']);

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

interface Pending {
  line: string;
  resolve: (r: CommandResult) => void;
}

export class GuestShell {
  private readonly queue: Pending[] = [];
  private waiting?: http.ServerResponse;
  private current?: Pending;
  private readonly server: http.Server;
  /** Resolves when the guest has exited (its script output, for diagnostics). */
  result!: Promise<GuestResult>;

  private constructor() {
    this.server = http.createServer((req, res) => {
      if (req.url === '/next') {
        this.waiting = res;
        this.dispatch();
        return;
      }
      if (req.url === '/result' && req.method === 'POST') {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          res.end('ok\n');
          const [rc, out, err] = Buffer.concat(chunks).toString().split('\n');
          const p = this.current;
          this.current = undefined;
          p?.resolve({ code: Number(rc), stdout: Buffer.from(out ?? '', 'base64').toString(), stderr: Buffer.from(err ?? '', 'base64').toString() });
        });
        return;
      }
      res.statusCode = 404;
      res.end();
    });
  }

  static async start(opts: { modules?: string[]; timeoutMs?: number } = {}): Promise<GuestShell> {
    const g = new GuestShell();
    await new Promise<void>((resolve) => g.server.listen(0, '127.0.0.1', resolve));
    const port = (g.server.address() as { port: number }).port;
    const url = `http://10.0.2.2:${port}`;
    const script = `
for m in ${(opts.modules ?? []).join(' ')}; do modprobe $m || echo "modprobe $m failed"; done
while :; do
  wget -q -O /tmp/cmd ${url}/next || { sleep 0.2; continue; }
  c=$(cat /tmp/cmd)
  [ "$c" = "@exit" ] && break
  [ "$c" = "@noop" ] && continue
  sh -c "$c" >/tmp/o 2>/tmp/e </dev/null; rc=$?
  { echo $rc; base64 -w0 /tmp/o; echo; base64 -w0 /tmp/e; echo; } > /tmp/res
  wget -q -O /dev/null --post-file=/tmp/res ${url}/result
done
echo guest-shell-done
`;
    g.result = runGuest(script, { timeoutMs: opts.timeoutMs ?? 240_000 });
    // A guest that dies early (boot failure) must fail the pending commands, not hang them.
    void g.result.then((r) => {
      const dead = { code: 255, stdout: '', stderr: `guest exited (${r.code}): ${r.output.slice(-2000)}` };
      for (const p of g.queue.splice(0)) p.resolve(dead);
      g.current?.resolve(dead);
      g.current = undefined;
    });
    return g;
  }

  private dispatch(): void {
    if (!this.waiting || this.current || this.queue.length === 0) return;
    const res = this.waiting;
    this.waiting = undefined;
    this.current = this.queue.shift()!;
    res.end(this.current.line);
  }

  /** Run `cmd args` in the guest. */
  run: CommandRunner = (cmd, args) => {
    const bin = REAL_BINARIES.has(cmd) ? `/usr/sbin/${cmd}` : cmd;
    return this.shell([bin, ...args].map(quote).join(' '));
  };

  /** Run a shell command line in the guest. */
  shell(line: string): Promise<CommandResult> {
    return new Promise((resolve) => {
      this.queue.push({ line, resolve });
      this.dispatch();
    });
  }

  async close(): Promise<GuestResult> {
    this.queue.push({ line: '@exit', resolve: () => {} });
    this.dispatch();
    const r = await this.result;
    this.waiting?.end('@exit');
    this.server.close();
    return r;
  }
}
