/**
 * Standalone mode: the operator in the gateway's own process, on the embedded object store
 * (<data dir>/objects), with the same admission the CRD schemas give a real API server. What
 * `spacectl apply` writes there, this reconciles; `spacectl get` shows the status it writes.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../../capsule/log.js';
import { SPACE_KINDS } from '../api/types.js';
import { resourceFor } from '../api/schemas.js';
import { validateObject } from '../api/validate.js';
import { StaticGateways } from '../gateways.js';
import { createOperator, type Operator } from '../operator.js';
import { ObjectStore, typeKey, type Admission } from './object-store.js';

export const objectsDirOf = (dataDir: string): string => path.join(dataDir, 'objects');

/** Admission for the space.io kinds: the CRD schemas' validation and defaults. */
export function spaceAdmission(): Map<string, Admission> {
  const m = new Map<string, Admission>();
  for (const kind of SPACE_KINDS) m.set(typeKey(resourceFor(kind)), (obj, old) => validateObject(kind, obj, old));
  return m;
}

export function openObjectStore(dataDir: string): ObjectStore {
  return ObjectStore.open(objectsDirOf(dataDir), { admission: spaceAdmission() });
}

export interface StandaloneOperatorOptions {
  dataDir: string;
  /** The gateway to use (this process's own, e.g. "unix:///…/gateway.sock"). */
  gatewayAddress: string;
  logger: Logger;
  /** /metrics /healthz /readyz of the operator (omit for none). */
  metricsAddress?: string;
  viewRoot?: string;
  zoneProbeIntervalMs?: number;
}

export interface StandaloneOperator {
  operator: Operator;
  objects: ObjectStore;
  stop(): Promise<void>;
}

/** Marks a data dir whose objects an operator reconciles (read by `spacectl apply`). */
export const operatorPidFile = (dataDir: string): string => path.join(objectsDirOf(dataDir), 'operator.pid');

/** The pid of the live standalone operator of `dataDir`, if any. */
export function runningOperator(dataDir: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(operatorPidFile(dataDir), 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}

export async function startStandaloneOperator(o: StandaloneOperatorOptions): Promise<StandaloneOperator> {
  const objects = openObjectStore(o.dataDir);
  const operator = createOperator({
    api: objects,
    gateways: new StaticGateways([o.gatewayAddress]),
    logger: o.logger,
    viewRoot: o.viewRoot ?? path.join(o.dataDir, 'views'),
    localGateway: true,
    metricsAddress: o.metricsAddress,
    zoneProbeIntervalMs: o.zoneProbeIntervalMs,
    // One process owns a data dir (the store lock), so there is nobody to elect against.
    leaderElection: undefined,
  });
  await operator.start();
  fs.writeFileSync(operatorPidFile(o.dataDir), `${process.pid}\n`);
  return {
    operator,
    objects,
    stop: async () => {
      await operator.stop();
      await objects.close();
      fs.rmSync(operatorPidFile(o.dataDir), { force: true });
    },
  };
}
