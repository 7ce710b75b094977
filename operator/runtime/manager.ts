/**
 * The Manager runs an operator process, as controller-runtime's manager does:
 *  - one shared informer per resource type (controllers watching the same type share a cache);
 *  - the controllers, started only while this replica holds the leader lease (informers run on
 *    standbys too, so a new leader starts with warm caches);
 *  - leader election, the /metrics /healthz /readyz server, and graceful shutdown on SIGTERM /
 *    SIGINT: stop taking work, let in-flight reconciles finish, then release the lease so a
 *    standby takes over at once. A second signal exits immediately.
 */
import type { Logger } from '../../capsule/log.js';
import { createLogger } from '../../capsule/log.js';
import { Controller, type ControllerOptions } from './controller.js';
import { EventRecorder } from './events.js';
import { startProbeServer, type Check, type ProbeServer } from './http.js';
import { Informer, typeId, type CacheReader } from './informer.js';
import { LeaderElector, type LeaderElectionOptions } from './leader-election.js';
import { RuntimeMetrics } from './metrics.js';
import type { ObjectApi, ResourceType } from './object-api.js';
import type { BackoffOptions } from './util.js';

export interface ManagerOptions {
  api: ObjectApi;
  logger?: Logger;
  /** Default: a fresh RuntimeMetrics (own registry, with Node process metrics). */
  metrics?: RuntimeMetrics;
  /** "host:port" for /metrics, /healthz, /readyz (":8080", "127.0.0.1:0"); omit or "0" for none. */
  metricsAddress?: string;
  /** Omit to run without leader election (a single replica, standalone mode, tests). */
  leaderElection?: LeaderElectionOptions;
  /** Restrict every informer to one namespace (default: all namespaces). */
  namespace?: string;
  informerBackoff?: BackoffOptions;
  /** Default resync period for controllers that do not set one. */
  resyncPeriodMs?: number;
  /** How long shutdown waits for in-flight reconciles (per controller, in parallel). Default 30 s. */
  gracefulShutdownTimeoutMs?: number;
  /** Event source component name. Default "space-operator". */
  component?: string;
}

export class Manager {
  readonly api: ObjectApi;
  readonly metrics: RuntimeMetrics;
  readonly logger: Logger;
  readonly elector?: LeaderElector;
  private readonly informers = new Map<string, Informer>();
  private readonly controllers: Controller[] = [];
  private readonly healthChecks = new Map<string, Check>();
  private readonly readyChecks = new Map<string, Check>();
  private readonly recorders = new Map<string, EventRecorder>();
  private server?: ProbeServer;
  private started = false;
  private stopping?: Promise<void>;
  private leading = false;
  private signalHandlers: Array<[NodeJS.Signals, () => void]> = [];
  private resolveDone!: () => void;
  /** Resolves when the manager has stopped. */
  readonly done: Promise<void>;

  constructor(private readonly opts: ManagerOptions) {
    this.api = opts.api;
    this.logger = opts.logger ?? createLogger({ component: opts.component ?? 'space-operator' });
    this.metrics = opts.metrics ?? new RuntimeMetrics();
    this.done = new Promise((r) => (this.resolveDone = r));
    if (opts.leaderElection) {
      this.elector = new LeaderElector(opts.api, opts.leaderElection, {
        onStartedLeading: () => this.onStartedLeading(),
        onStoppedLeading: () => this.onStoppedLeading(),
        onNewLeader: (id) => this.logger.info('leader.observed', { leader: id }),
      }, { logger: this.logger, metrics: this.metrics });
    }
    this.healthChecks.set('ping', () => null);
    this.readyChecks.set('informers', () => {
      const waiting = [...this.informers.values()].filter((i) => !i.hasSynced()).map((i) => typeId(i.type));
      return waiting.length ? `not synced: ${waiting.join(', ')}` : null;
    });
    this.readyChecks.set('shutdown', () => (this.stopping ? 'shutting down' : null));
  }

  /** The shared informer (cache) of a type; created on first use, started with the manager. */
  getInformer(type: ResourceType): Informer {
    const id = typeId(type);
    let inf = this.informers.get(id);
    if (!inf) {
      inf = new Informer(this.api, type, { namespace: this.opts.namespace, backoff: this.opts.informerBackoff, logger: this.logger });
      this.informers.set(id, inf);
      if (this.started && !this.stopping) inf.start();
    }
    return inf;
  }

  /** Read-only cache of a type, for reconcilers. */
  cache(type: ResourceType): CacheReader {
    return this.getInformer(type);
  }

  addController(opts: ControllerOptions): Controller {
    const c = new Controller(
      { resyncPeriodMs: this.opts.resyncPeriodMs, shutdownTimeoutMs: this.opts.gracefulShutdownTimeoutMs, ...opts },
      { informer: (t) => this.getInformer(t), metrics: this.metrics, logger: this.logger },
    );
    // Create the informers now, so readiness covers them from the start.
    this.getInformer(opts.for);
    for (const w of opts.watches ?? []) this.getInformer(w.type);
    this.controllers.push(c);
    if (this.started && !this.stopping && this.shouldRun()) this.startController(c);
    return c;
  }

  /** An EventRecorder for a component (default: the manager's component). */
  eventRecorder(component = this.opts.component ?? 'space-operator'): EventRecorder {
    let r = this.recorders.get(component);
    if (!r) {
      r = new EventRecorder(this.api, component, { logger: this.logger });
      this.recorders.set(component, r);
    }
    return r;
  }

  addHealthCheck(name: string, check: Check): void {
    this.healthChecks.set(name, check);
  }

  addReadyCheck(name: string, check: Check): void {
    this.readyChecks.set(name, check);
  }

  isLeader(): boolean {
    return this.elector ? this.leading : this.started && !this.stopping;
  }

  /** Why this manager is not ready, or null. */
  notReady(): string | null {
    for (const [name, check] of this.readyChecks) {
      const why = check();
      if (why !== null) return `${name}: ${why}`;
    }
    return null;
  }

  /** Port of the metrics/probe server (when metricsAddress was set). */
  get port(): number | undefined {
    return this.server?.port;
  }

  /**
   * Start serving, caches and leader election (or the controllers directly). Returns once the
   * HTTP server listens; controllers start in the background when this replica leads.
   */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    if (this.opts.metricsAddress && this.opts.metricsAddress !== '0') {
      this.server = await startProbeServer({
        listen: this.opts.metricsAddress,
        metrics: this.metrics,
        healthChecks: () => this.healthChecks,
        readyChecks: () => this.readyChecks,
        logger: this.logger,
      });
      this.logger.info('manager.serving', { address: `${this.server.host}:${this.server.port}` });
    }
    for (const inf of this.informers.values()) inf.start();
    if (this.elector) this.elector.start();
    else this.startControllers();
  }

  /** Install SIGTERM/SIGINT handlers: first signal stops gracefully, a second exits at once. */
  handleSignals(signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT']): void {
    let received = 0;
    for (const sig of signals) {
      const h = () => {
        if (++received > 1) {
          this.logger.warn('manager.forced_exit', { signal: sig });
          process.exit(1);
        }
        this.logger.info('manager.signal', { signal: sig });
        this.stop().then(
          () => { process.exitCode = process.exitCode ?? 0; },
          (err: unknown) => {
            this.logger.error('manager.stop_failed', { err });
            process.exitCode = 1;
          },
        ).finally(() => {
          // Normally nothing is left and the process exits by itself; a call hanging on an
          // unreachable API server must not keep a terminating pod around until SIGKILL.
          setTimeout(() => process.exit(), 5000).unref();
        });
      };
      process.on(sig, h);
      this.signalHandlers.push([sig, h]);
    }
  }

  /** Graceful shutdown; idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    this.logger.info('manager.stopping');
    if (this.elector) {
      // Stops renewing; if leading, onStoppedLeading drains the controllers, then the lease is released.
      await this.elector.stop({ release: true });
    } else {
      await this.stopControllers();
    }
    await Promise.all([...this.recorders.values()].map((r) => r.flush()));
    await Promise.all([...this.informers.values()].map((i) => i.stop()));
    await this.server?.close();
    for (const [sig, h] of this.signalHandlers.splice(0)) process.off(sig, h);
    this.logger.info('manager.stopped');
    this.resolveDone();
  }

  private shouldRun(): boolean {
    return this.elector ? this.leading : true;
  }

  private onStartedLeading(): void {
    this.leading = true;
    if (this.stopping) return;
    this.startControllers();
  }

  private async onStoppedLeading(): Promise<void> {
    this.leading = false;
    await this.stopControllers();
  }

  private startControllers(): void {
    for (const c of this.controllers) this.startController(c);
  }

  private startController(c: Controller): void {
    // Not awaited: start() resolves only once caches sync, and stop() interrupts it.
    c.start().catch((err: unknown) => this.logger.error('controller.start_failed', { controller: c.name, err }));
  }

  private async stopControllers(): Promise<void> {
    await Promise.all(this.controllers.map((c) => c.stop()));
  }
}
