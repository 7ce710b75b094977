import { execFile, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const SPACECTL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'cli', 'spacectl.js');
export const REPO = path.resolve(path.dirname(SPACECTL), '..', '..');

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run spacectl as a user would (a separate process), never throwing on a non-zero exit. */
export function spacectl(args: string[], env: Record<string, string>, input?: Buffer): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [SPACECTL, ...args], { cwd: REPO, env: { ...process.env, ...env }, maxBuffer: 256 << 20, encoding: 'buffer' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException & { code?: unknown }).code === 'number' ? (err as unknown as { code: number }).code : 1) : 0;
      resolve({ code, stdout: stdout.toString('latin1'), stderr: stderr.toString() });
    });
    if (input) child.stdin!.end(input);
  });
}

/** Run a shell tool against a path (async: a FUSE server in this process must stay responsive). */
export function sh(cmd: string, args: string[]): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { encoding: 'buffer', maxBuffer: 256 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as unknown as { code: number }).code ?? 1) : 0, stdout: stdout.toString('latin1'), stderr: stderr.toString() });
    });
  });
}

export function startServe(args: string[], env: Record<string, string>): Promise<{ child: ChildProcess; port: number; stderr: () => string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SPACECTL, 'serve', ...args], { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      err += d;
      const m = /gRPC [^ ]*:(\d+),/.exec(err);
      if (m) resolve({ child, port: Number(m[1]), stderr: () => err });
    });
    child.on('exit', (code) => reject(new Error(`serve exited (${code}): ${err}`)));
  });
}
