/**
 * A spacectl subcommand started in the background (detached, logging to <data dir>/logs/NAME),
 * as `project mount` and `apply` do for the process that keeps serving after they return.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface Detached {
  child: ChildProcess;
  logFile: string;
  /** The exit code once the child has exited, else null. */
  exitCode(): number | null;
  /** Why it failed: its own "spacectl: ..." lines, else the tail of its log. */
  reason(): string;
}

export function startDetached(dataDir: string, logName: string, args: string[]): Detached {
  const logDir = path.join(dataDir, 'logs');
  fs.mkdirSync(logDir, { recursive: true });
  const logFile = path.join(logDir, logName);
  const fd = fs.openSync(logFile, 'a');
  const logStart = fs.fstatSync(fd).size;
  const self = fileURLToPath(new URL('./spacectl.js', import.meta.url));
  const child = spawn(process.execPath, [self, ...args], { detached: true, stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  let exited: number | null = null;
  child.on('exit', (code) => (exited = code ?? 1));
  return {
    child,
    logFile,
    exitCode: () => exited,
    reason: () => {
      const lines = fs.readFileSync(logFile, 'utf8').slice(logStart).trim().split('\n');
      const own = lines.filter((l) => l.startsWith('spacectl: ')).map((l) => l.slice('spacectl: '.length));
      return own.length ? own.join('\n') : `${lines.slice(-5).join('\n')}\n(see ${logFile})`;
    },
  };
}
