/**
 * A controller binds one primary resource type to a Reconciler, controller-runtime style:
 * informer events for the primary type enqueue the object's key; events for watched secondary
 * types are mapped to primary keys (a Capsule change enqueues the CapsuleViews that reference
 * it); N workers take keys from a deduplicating work queue and call reconcile(), one key at a
 * time per key. Level-triggered: the reconciler gets only a name and reads the current state
 * from the informer cache, so missed or coalesced events do no harm, and a periodic resync
 * re-enqueues every cached key to catch drift in the world outside the API server.
 *
 * Results: a thrown error retries with per-key exponential backoff; success forgets the
 * backoff; { requeueAfterMs } schedules the next look; { requeue: true } retries with backoff
 * without counting as an error, as does a 409 Conflict thrown by the reconciler.
 */
import type { Logger } from '../../capsule/log.js';
import { silentLogger } from '../../capsule/log.js';
import type { Informer } from './informer.js';
import { isConflict, objectKey, type KubeObject, type ResourceType } from './object-api.js';
import type { ReconcileResult, RuntimeMetrics } from './metrics.js';
import { WorkQueue, type RateLimiterOptions } from './workqueue.js';
import { keyOf, parseKey } from './util.js';

export interface Request {
  namespace?: string;
  name: string;
}

export interface Result {
  /** Reconcile this key again after this many ms (e.g. to poll a gateway). */
  requeueAfterMs?: number;
  /** Reconcile again soon, with backoff, without counting an error. */
  requeue?: boolean;
}

/** Passed as a second argument; reconcilers written as reconcile(req) may ignore it. */
export interface ReconcileContext {
  controller: string;
  /** "namespace/name" */
  key: string;
  /** Logger with controller and key fields: every reconcile log line names its object. */
  logger: Logger;
  /** Consecutive failed attempts before this one. */
  retries: number;
}

export interface Reconciler {
  reconcile(req: Request, ctx: ReconcileContext): Promise<Result | void>;
}

/** A secondary type whose changes enqueue primary objects. */
export interface WatchSpec {
  type: ResourceType;
  /** Primary objects affected by this secondary object (requests or "namespace/name" keys). */
  map: (obj: KubeObject) => Array<Request | string>;
}

export interface ControllerOptions {
  /** Controller name: the `controller` metrics label and the work queue name. */
  name: string;
  /** The primary type. */
  for: ResourceType;
  watches?: WatchSpec[];
  reconciler: Reconciler;
  /** Concurrent reconciles (different keys). Default 1. */
  workers?: number;
  /** Re-enqueue every cached primary key this often; 0 disables. Default 10 min. */
  resyncPeriodMs?: number;
  rateLimiter?: RateLimiterOptions;
  /** How long stop() waits for in-flight reconciles. Default 30 s. */
  shutdownTimeoutMs?: number;
}

export interface ControllerDeps {
  informer: (type: ResourceType) => Informer;
  metrics?: RuntimeMetrics;
  logger?: Logger;
}

/**
 * Map a secondary object to the primary objects that own it (ownerReferences with
 * controller=true of the primary kind), as controller-runtime's Owns() does.
 */
export function ownedBy(primary: ResourceType): (obj: KubeObject) => Request[] {
  const apiVersion = primary.group ? `${primary.group}/${primary.version}` : primary.version;
  return (obj) => (obj.metadata.ownerReferences ?? [])
    .filter((r) => r.controller && r.kind === primary.kind && r.apiVersion.split('/')[0] === apiVersion.split('/')[0])
    .map((r) => ({ namespace: primary.namespaced ? obj.metadata.namespace : undefined, name: r.name }));
}

export class Controller {
  readonly name: string;
  private readonly log: Logger;
  private readonly workers: number;
  private queue?: WorkQueue;
  private unregister: Array<() => void> = [];
  private resyncTimer?: NodeJS.Timeout;
  private workerLoops: Promise<void>[] = [];
  private running = false;
  private stopSignal?: () => void;

  constructor(
    readonly opts: ControllerOptions,
    private readonly deps: ControllerDeps,
  ) {
    this.name = opts.name;
    this.workers = Math.max(1, opts.workers ?? 1);
    this.log = (deps.logger ?? silentLogger).child({ controller: opts.name });
  }

  isRunning(): boolean {
    return this.running;
  }

  /** The current work queue (undefined when stopped). */
  workQueue(): WorkQueue | undefined {
    return this.queue;
  }

  /** Enqueue a primary object by request or key (e.g. from an external trigger). */
  enqueue(req: Request | string): void {
    this.queue?.add(typeof req === 'string' ? req : keyOf(req));
  }

  /**
   * Start: watch (handlers registered at once, so nothing is missed), wait for the caches to
   * sync, then start the workers and the resync timer. Resolves once workers run (or on stop).
   * A stopped controller can be started again (a replica that regains leadership).
   */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const { metrics } = this.deps;
    const queue = new WorkQueue({ name: this.name, ...this.opts.rateLimiter, metrics: metrics?.queueMetrics(this.name) });
    this.queue = queue;
    metrics?.trackQueue(queue);
    metrics?.initController(this.name, this.workers);

    const primary = this.deps.informer(this.opts.for);
    const enqueueObj = (obj: KubeObject) => queue.add(objectKey(obj));
    this.unregister.push(primary.addHandler({
      onAdd: enqueueObj,
      onUpdate: (_old, obj) => enqueueObj(obj),
      onDelete: enqueueObj,
    }));
    const informers = [primary];
    for (const w of this.opts.watches ?? []) {
      const inf = this.deps.informer(w.type);
      informers.push(inf);
      const enqueueMapped = (obj: KubeObject) => {
        for (const r of w.map(obj)) queue.add(typeof r === 'string' ? r : keyOf(r));
      };
      this.unregister.push(inf.addHandler({
        onAdd: enqueueMapped,
        // Both: a view that stopped referencing a capsule must hear about it too.
        onUpdate: (old, obj) => {
          enqueueMapped(old);
          enqueueMapped(obj);
        },
        onDelete: enqueueMapped,
      }));
    }

    const stopped = new Promise<boolean>((resolve) => {
      this.stopSignal = () => resolve(false);
    });
    const synced = await Promise.race([Promise.all(informers.map((i) => i.waitForSync())).then((r) => r.every(Boolean)), stopped]);
    if (!synced || !this.running || this.queue !== queue) return;

    this.log.info('controller.started', { workers: this.workers });
    for (let i = 0; i < this.workers; i++) this.workerLoops.push(this.worker(queue));
    const resync = this.opts.resyncPeriodMs ?? 10 * 60_000;
    if (resync > 0) {
      this.resyncTimer = setInterval(() => {
        for (const key of primary.keys()) queue.add(key);
      }, resync);
      this.resyncTimer.unref();
    }
  }

  /**
   * Stop taking work, let in-flight reconciles finish (up to shutdownTimeoutMs). Resolves true
   * if they all finished in time.
   */
  async stop(timeoutMs = this.opts.shutdownTimeoutMs ?? 30_000): Promise<boolean> {
    if (!this.running) return true;
    this.running = false;
    this.stopSignal?.();
    for (const u of this.unregister.splice(0)) u();
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    this.resyncTimer = undefined;
    const queue = this.queue;
    this.queue = undefined;
    const drained = queue ? await queue.shutDown(timeoutMs) : true;
    if (drained) await Promise.all(this.workerLoops);
    else this.log.warn('controller.shutdown_timeout', { inFlight: queue?.inFlight(), timeoutMs });
    this.workerLoops = [];
    this.log.info('controller.stopped', { drained });
    return drained;
  }

  private async worker(queue: WorkQueue): Promise<void> {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      await this.process(queue, key);
    }
  }

  /** One reconcile; never throws. */
  private async process(queue: WorkQueue, key: string): Promise<void> {
    const { metrics } = this.deps;
    const req = parseKey(key);
    const logger = this.log.child({ key, ...req });
    const retries = queue.numRequeues(key);
    metrics?.activeWorkers.inc({ controller: this.name });
    const started = performance.now();
    let result: ReconcileResult;
    try {
      logger.debug('reconcile.start', { retries });
      const res = await this.opts.reconciler.reconcile(req, { controller: this.name, key, logger, retries });
      if (res?.requeueAfterMs !== undefined && res.requeueAfterMs > 0) {
        queue.forget(key);
        queue.addAfter(key, res.requeueAfterMs);
        result = 'requeue_after';
      } else if (res?.requeue) {
        queue.addRateLimited(key);
        result = 'requeue';
      } else {
        queue.forget(key);
        result = 'success';
      }
      logger.debug('reconcile.done', { result, ms: Math.round(performance.now() - started) });
    } catch (err) {
      queue.addRateLimited(key);
      if (isConflict(err)) {
        // A write based on a cached copy older than the stored object: routine with informer
        // caches, so look again (with backoff) once the cache has caught up, without an error.
        result = 'requeue';
        logger.debug('reconcile.conflict', { retries });
      } else {
        result = 'error';
        logger.error('reconcile.failed', { err, retries });
      }
    } finally {
      queue.done(key);
      metrics?.activeWorkers.dec({ controller: this.name });
    }
    metrics?.observeReconcile(this.name, result, (performance.now() - started) / 1000);
  }
}
