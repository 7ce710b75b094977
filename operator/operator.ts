/**
 * The Space operator: the three reconcilers on a Manager, over any ObjectApi (a real API server
 * through client-node, or standalone mode's embedded store), talking to gateways over gRPC.
 * `spacectl operator` (cluster) and `spacectl serve` (standalone, in-process) both build it here.
 */
import { Gauge } from 'prom-client';
import type { Logger } from '../capsule/log.js';
import { Manager } from './runtime/manager.js';
import type { LeaderElectionOptions } from './runtime/leader-election.js';
import { CAPSULES, CAPSULE_VIEWS, FEDERATION_ZONES, type ObjectApi } from './runtime/object-api.js';
import type { GatewayDirectory } from './gateways.js';
import { CapsuleReconciler } from './reconcilers/capsule.js';
import { CapsuleViewReconciler, CsiViewDriver, FuseViewDriver, type ViewDriver } from './reconcilers/capsule-view.js';
import { ExportViewDriver } from './reconcilers/export-view-driver.js';
import { FederationZoneReconciler } from './reconcilers/federation-zone.js';
import type { Capsule, CapsuleView } from './api/types.js';

export interface OperatorOptions {
  api: ObjectApi;
  gateways: GatewayDirectory;
  logger: Logger;
  /** Where FUSE views without an explicit mountPath go (on the gateway's host). */
  viewRoot: string;
  /** The gateway runs on this host (standalone): probes also look at the mount itself. */
  localGateway?: boolean;
  metricsAddress?: string;
  leaderElection?: LeaderElectionOptions;
  /** Watch one namespace only. */
  namespace?: string;
  /** Concurrent reconciles per controller. */
  workers?: number;
  zoneProbeIntervalMs?: number;
  resyncPeriodMs?: number;
  /** Extra view drivers (NFS, NVMe/TCP) registered by their front ends; they replace the placeholders. */
  drivers?: ViewDriver[];
}

export interface Operator {
  manager: Manager;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function createOperator(o: OperatorOptions): Operator {
  const manager = new Manager({
    api: o.api,
    logger: o.logger,
    metricsAddress: o.metricsAddress,
    leaderElection: o.leaderElection,
    namespace: o.namespace,
    resyncPeriodMs: o.resyncPeriodMs,
  });
  const capsules = manager.cache(CAPSULES);
  const views = manager.cache(CAPSULE_VIEWS);
  const zones = manager.cache(FEDERATION_ZONES);
  const events = manager.eventRecorder('space-operator');
  const workers = o.workers ?? 4;

  const capsuleReconciler = new CapsuleReconciler({ api: o.api, capsules, zones, gateways: o.gateways, events, log: o.logger.child({ controller: 'capsule' }) });
  const drivers = new Map<string, ViewDriver>([
    ['fuse', new FuseViewDriver(o.viewRoot, o.localGateway ?? false)],
    ['csi', new CsiViewDriver()],
    // The gateway answers FAILED_PRECONDITION when it runs no server for the protocol: the view
    // then waits with reason ProtocolUnavailable.
    ['nfs', new ExportViewDriver('nfs')],
    ['nvme', new ExportViewDriver('nvme')],
  ]);
  for (const d of o.drivers ?? []) drivers.set(d.protocol, d);
  const viewReconciler = new CapsuleViewReconciler({ api: o.api, views, capsules, gateways: o.gateways, events, log: o.logger.child({ controller: 'capsuleview' }), drivers: [...drivers.values()] });
  const zoneReconciler = new FederationZoneReconciler({ api: o.api, zones, events, log: o.logger.child({ controller: 'federationzone' }), probeIntervalMs: o.zoneProbeIntervalMs });

  manager.addController({
    name: 'capsule',
    for: CAPSULES,
    // A snapshot/clone source waits for its origin: an origin's change wakes its clones, and a
    // zone's change re-checks sovereignty of the capsules that target it.
    watches: [
      { type: CAPSULES, map: (origin) => (capsules.list() as Capsule[]).filter((c) => c.metadata.namespace === origin.metadata.namespace && (c.spec?.source?.clone?.capsule ?? c.spec?.source?.snapshot?.capsule) === origin.metadata.name).map((c) => ({ namespace: c.metadata.namespace, name: c.metadata.name })) },
      { type: FEDERATION_ZONES, map: () => (capsules.list() as Capsule[]).filter((c) => (c.spec?.policy?.federation?.targets?.length ?? 0) > 0).map((c) => ({ namespace: c.metadata.namespace, name: c.metadata.name })) },
    ],
    reconciler: capsuleReconciler,
    workers,
  });
  manager.addController({
    name: 'capsuleview',
    for: CAPSULE_VIEWS,
    watches: [{ type: CAPSULES, map: (c) => viewReconciler.viewsOf(c) }],
    reconciler: viewReconciler,
    workers,
  });
  manager.addController({ name: 'federationzone', for: FEDERATION_ZONES, reconciler: zoneReconciler, workers: 2 });

  // Space gauges, computed from the caches at scrape time (no bookkeeping to drift).
  new Gauge({
    name: 'space_capsules',
    help: 'Capsules by phase',
    labelNames: ['phase'],
    registers: [manager.metrics.registry],
    collect() {
      this.reset();
      for (const c of capsules.list() as Capsule[]) this.inc({ phase: c.status?.phase ?? 'Pending' });
    },
  });
  new Gauge({
    name: 'space_capsule_views',
    help: 'CapsuleViews by protocol and readiness',
    labelNames: ['protocol', 'ready'],
    registers: [manager.metrics.registry],
    collect() {
      this.reset();
      for (const v of views.list() as CapsuleView[]) {
        const ready = v.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
        this.inc({ protocol: v.spec?.protocol ?? 'unknown', ready: String(ready) });
      }
    },
  });

  return {
    manager,
    start: () => manager.start(),
    stop: async () => {
      await manager.stop();
      o.gateways.close();
    },
  };
}
