/**
 * Standalone mode's server in the background: `spacectl apply` starts one (gateway + operator
 * on the data dir) when nothing runs there yet, as `project mount` does for its mounts, so
 * applied objects get reconciled without a second terminal. It keeps running, like a daemon;
 * stop it with SIGTERM (its pid is in <data dir>/objects/operator.pid).
 */
import { startDetached } from './detached.js';
import { SpaceError } from '../capsule/errors.js';
import { readOwner } from '../capsule/lock.js';
import { runningOperator } from '../operator/standalone/run.js';

export type OperatorState =
  | { running: true; pid: number; started: boolean; log?: string }
  | { running: false; why: string };

export async function ensureStandaloneServer(dataDir: string, timeoutMs = 30_000): Promise<OperatorState> {
  const pid = runningOperator(dataDir);
  if (pid) return { running: true, pid, started: false };
  const owner = readOwner(dataDir);
  if (owner) {
    return { running: false, why: `pid ${owner.pid} holds ${dataDir} without an operator (a mount?); objects are stored and will be reconciled once \`spacectl serve --data-dir ${dataDir}\` runs` };
  }
  // Ephemeral TCP ports: the CLI reaches it through the data dir's unix socket anyway.
  const bg = startDetached(dataDir, 'serve.log', ['serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0']);
  const { child, logFile } = bg;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (bg.exitCode() !== null) throw new SpaceError('FAILED_PRECONDITION', `the standalone server did not start: ${bg.reason()}`);
    if (runningOperator(dataDir) === child.pid) {
      child.unref();
      return { running: true, pid: child.pid!, started: true, log: logFile };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGTERM');
  throw new SpaceError('UNAVAILABLE', `the standalone server did not start within ${timeoutMs / 1000} s; see ${logFile}`);
}
