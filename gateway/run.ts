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
  // Listen from the start: whoever waits for the gateway to come up may signal at once, and a
  // signal during start-up must still end in a clean shutdown, not in the default exit.
  let signalled: NodeJS.Signals | undefined;
  let wake: (() => void) | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      logger.warn('gateway.signal_exit', { signal });
      process.exit(130);
    }
    signalled = signal;
    wake?.();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    const gw = await startGateway({ ...opts, logger });
    let stopExtra: (() => Promise<void>) | void;
    try {
      stopExtra = await onStarted?.(gw);
    } catch (e) {
      await gw.close();
      throw e;
    }
    if (!signalled) await new Promise<void>((resolve) => (wake = resolve));
    logger.info('gateway.signal', { signal: signalled });
    if (typeof stopExtra === 'function') {
      await stopExtra().catch((err: unknown) => logger.error('gateway.stop_extra_failed', { err }));
    }
    await gw.close();
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}
