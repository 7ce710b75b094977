/**
 * The operator alone in its own process, for bench/operator-scale.ts: the standalone object
 * store of a directory, the three controllers, and the /metrics server, talking to a gateway
 * that runs in yet another process. Keeping it apart from the parent (which applies objects and
 * polls) and from the gateway (which ingests and serves mounts) makes RSS and CPU the
 * operator's own.
 *
 *   node dist/bench/operator-child.js STANDALONE_DIR GATEWAY_ADDR VIEW_ROOT [LOG_FILE]
 *
 * Prints one JSON line {"metricsPort": N} once the manager serves, then runs until SIGTERM,
 * SIGINT or the end of stdin, when it stops the manager (in-flight reconciles finish) and closes the store.
 * Warnings and errors go to LOG_FILE (default: dropped), so a failing run can be diagnosed
 * without the logging itself costing anything in a healthy one.
 */
import fs from 'node:fs';
import { createLogger, silentLogger, type Logger } from '../capsule/log.js';
import { StaticGateways } from '../operator/gateways.js';
import { createOperator } from '../operator/operator.js';
import { openObjectStore } from '../operator/standalone/run.js';

async function main(): Promise<void> {
  const [dir, gateway, viewRoot, logFile] = process.argv.slice(2);
  if (!dir || !gateway || !viewRoot) {
    console.error('usage: operator-child.js STANDALONE_DIR GATEWAY_ADDR VIEW_ROOT [LOG_FILE]');
    process.exit(2);
  }
  let log: Logger = silentLogger;
  let logStream: fs.WriteStream | undefined;
  if (logFile) {
    logStream = fs.createWriteStream(logFile, { flags: 'a' });
    const stream = logStream;
    log = createLogger({ component: 'operator', level: 'warn', write: (line) => stream.write(line + '\n') });
  }
  const api = openObjectStore(dir);
  const op = createOperator({
    api,
    gateways: new StaticGateways([gateway]),
    viewRoot,
    localGateway: true,
    metricsAddress: '127.0.0.1:0',
    logger: log,
  });
  await op.start();

  let stopping = false;
  const stop = async (sig: NodeJS.Signals) => {
    if (stopping) process.exit(1); // a second signal: the parent wants us gone now
    stopping = true;
    let rc = 0;
    try {
      await op.stop();
      await api.close();
    } catch (e) {
      console.error(`operator-child: ${sig}: shutdown failed: ${(e as Error).message}`);
      rc = 1;
    }
    await new Promise<void>((r) => (logStream ? logStream.end(r) : r()));
    process.exit(rc);
  };
  process.on('SIGTERM', (s) => void stop(s));
  process.on('SIGINT', (s) => void stop(s));
  // The parent holds our stdin open; if it dies without signalling us (SIGKILL, a crash), the
  // pipe closes and we go too instead of lingering with the store open.
  process.stdin.on('end', () => void stop('SIGTERM'));
  process.stdin.resume();
  process.stdout.write(JSON.stringify({ metricsPort: op.manager.port }) + '\n');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
