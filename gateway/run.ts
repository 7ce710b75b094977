/**
 * `spacectl serve`: run a gateway until SIGTERM/SIGINT, then shut down gracefully. A second
 * signal during shutdown exits at once (an operator pressing Ctrl-C twice means it).
 */
import { createLogger } from '../capsule/log.js';
import { startGateway, type Gateway, type GatewayOptions } from './server.js';

/**
 * Resolves when the gateway has shut down after a signal. `onStarted` may return a stop
 * function for something that runs on top of the gateway (standalone mode's operator): it is
 * awaited before the gateway closes, so that work ends while its gateway still answers.
 */
export async function runGateway(opts: GatewayOptions, onStarted?: (gw: Gateway) => void | Promise<void | (() => Promise<void>)>): Promise<void> {
  const logger = opts.logger ?? createLogger({ component: 'gateway' });
  const gw = await startGateway({ ...opts, logger });
  let stopExtra: (() => Promise<void>) | void;
  try {
    stopExtra = await onStarted?.(gw);
  } catch (e) {
    await gw.close();
    throw e;
  }
  await new Promise<void>((resolve, reject) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        logger.warn('gateway.signal_exit', { signal });
        process.exit(130);
      }
      stopping = true;
      logger.info('gateway.signal', { signal });
      Promise.resolve(typeof stopExtra === 'function' ? stopExtra() : undefined)
        .catch((err: unknown) => logger.error('gateway.stop_extra_failed', { err }))
        .then(() => gw.close())
        .then(() => {
          process.off('SIGTERM', onSignal);
          process.off('SIGINT', onSignal);
          resolve();
        }, reject);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
