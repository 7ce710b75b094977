/**
 * Who starts and stops the per-volume FUSE mount processes for the node service.
 *
 * local: the plugin itself, as detached children (the default; right for a node plugin run
 *   outside Kubernetes, or wherever the plugin process is the only thing that restarts).
 * remote: a mounter sidecar reached over a unix socket (csi-node/mounter-client.ts). In
 *   Kubernetes a restart of the plugin *container* kills every process in it, detached or not,
 *   so the mount processes have to live in a container that does not restart with the plugin.
 */
import type { Logger } from '../../capsule/log.js';
import type { MountProcessRecord } from '../node-state.js';
import { mountProcessAlive, startMountProcess, stopMountProcess, type FuseStageSpec } from './fuse.js';

export interface FuseProcessLauncher {
  /** Start a mount process for the spec and resolve once its FUSE mount is live. */
  start(spec: FuseStageSpec, log: Logger): Promise<MountProcessRecord>;
  /** Stop the process serving `stagingPath` (if any) and make sure nothing stays mounted there. */
  stop(rec: MountProcessRecord | undefined, stagingPath: string, log: Logger): Promise<void>;
  /** Is `rec` still the live process serving `stagingPath`? */
  alive(rec: MountProcessRecord, stagingPath: string): Promise<boolean>;
}

export const localLauncher: FuseProcessLauncher = {
  start: (spec, log) => startMountProcess(spec, log),
  stop: (rec, stagingPath, log) => stopMountProcess(rec, stagingPath, log),
  alive: async (rec) => mountProcessAlive(rec),
};
