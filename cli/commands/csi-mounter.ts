/**
 * spacectl csi-mounter: the mounter sidecar of the CSI node DaemonSet (csi-node/mounter-service.ts).
 * It owns the FUSE mount processes so that a restart of the csi-plugin container does not take
 * every FUSE volume on the node down with it; the plugin reaches it with --mounter-socket.
 */
import path from 'node:path';
import { createLogger } from '../../capsule/log.js';
import { invalid } from '../../capsule/errors.js';
import { startMounterService } from '../../csi-node/mounter-service.js';
import type { Command } from '../command.js';

export const csiMounter: Command = {
  name: 'csi-mounter',
  summary: 'run the CSI node mounter sidecar: owns the FUSE mount processes, on a unix socket',
  usage: [
    'spacectl csi-mounter --socket /csi/mounter.sock [--state-dir DIR]',
    '--state-dir: its record of mount processes (adopted again after a restart) and their logs;',
    '             default <SPACE_HOME or /var/lib/space>/csi-mounter.',
    'The node plugin uses it with `spacectl csi --mode node --mounter-socket /csi/mounter.sock`.',
    'SIGTERM stops listening and leaves the mount processes running.',
  ].join('\n'),
  async run(f) {
    const socket = f.str('socket');
    const stateDirFlag = f.str('state-dir');
    f.rejectUnknown();
    if (!socket) throw invalid('--socket /path/mounter.sock is required');
    const socketPath = path.resolve(socket.replace(/^unix:\/\//, ''));
    const stateDir = path.resolve(stateDirFlag ?? path.join(process.env.SPACE_HOME ?? '/var/lib/space', 'csi-mounter'));
    const logger = createLogger({ component: 'csi-mounter' });
    const svc = await startMounterService({ socketPath, stateDir, logger });
    // Listen before announcing: whoever waits for that line may signal at once.
    const stopped = new Promise<void>((resolve) => {
      const stop = (signal: NodeJS.Signals) => {
        process.off('SIGTERM', stop);
        process.off('SIGINT', stop);
        logger.info('csi-mounter.signal', { signal });
        resolve();
      };
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    });
    process.stderr.write(`space csi-mounter: listening on ${svc.socketPath} (adopted ${svc.adopted.alive} live, ${svc.adopted.dead} dead)\n`);
    // The mount processes' parent may die; they run detached with their stdio in files, but the
    // mounter itself must not die of a closed terminal either.
    process.on('SIGHUP', () => logger.warn('csi-mounter.sighup-ignored', {}));
    await stopped;
    await svc.close(); // mount processes keep running: pods keep their volumes
  },
};
