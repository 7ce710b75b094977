/** The controller runtime's public surface, for reconcilers and the operator's main. */
export { Manager, type ManagerOptions } from './manager.js';
export {
  Controller,
  ownedBy,
  type ControllerOptions,
  type ReconcileContext,
  type Reconciler,
  type Request,
  type Result,
  type WatchSpec,
} from './controller.js';
export { Informer, typeId, type CacheReader, type EventHandler, type InformerOptions } from './informer.js';
export { WorkQueue, ExponentialBackoff, type QueueMetrics, type RateLimiterOptions, type WorkQueueOptions } from './workqueue.js';
export { LeaderElector, microTime, type LeaderCallbacks, type LeaderElectionOptions } from './leader-election.js';
export { EventRecorder, type EventType } from './events.js';
export { setCondition, removeCondition, findCondition, isTrue, isFalse, rfc3339, type Condition, type ConditionInput, type ConditionStatus } from './conditions.js';
export { RuntimeMetrics, type ReconcileResult } from './metrics.js';
export { startProbeServer, type Check, type ProbeServer } from './http.js';
export { KubeObjectApi, loadKubeConfig, toApiError, type KubeConfigOptions, type KubeObjectApiOptions } from './kube-api.js';
export * from './object-api.js';
