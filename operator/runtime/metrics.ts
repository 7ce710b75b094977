/**
 * The operator's Prometheus metrics, named and labelled as controller-runtime names them so
 * existing dashboards and alerts for Go operators work unchanged. Each RuntimeMetrics owns its
 * own Registry (not prom-client's global one): tests start several managers in one process, and
 * the reconcilers register Space's own gauges (capsules by phase, views by protocol) on the same
 * registry through `metrics.registry`.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { QueueMetrics, WorkQueue } from './workqueue.js';

export type ReconcileResult = 'success' | 'error' | 'requeue' | 'requeue_after';
const RESULTS: ReconcileResult[] = ['success', 'error', 'requeue', 'requeue_after'];

/** 10 ns ... 1000 s in decades: queue waits and work spans range from instant to very slow. */
const QUEUE_BUCKETS = Array.from({ length: 12 }, (_, i) => 1e-8 * 10 ** i);
/** Reconciles mostly take milliseconds to seconds; finer steps below 1 s. */
const RECONCILE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 45, 60];

export class RuntimeMetrics {
  readonly registry: Registry;
  readonly reconcileTotal: Counter<'controller' | 'result'>;
  readonly reconcileErrors: Counter<'controller'>;
  readonly reconcileTime: Histogram<'controller'>;
  readonly maxConcurrentReconciles: Gauge<'controller'>;
  readonly activeWorkers: Gauge<'controller'>;
  readonly leaderStatus: Gauge<'name'>;
  private readonly queueDepth: Gauge<'name'>;
  private readonly queueAdds: Counter<'name'>;
  private readonly queueDuration: Histogram<'name'>;
  private readonly workDuration: Histogram<'name'>;
  private readonly queueRetries: Counter<'name'>;
  private readonly queues = new Map<string, WorkQueue>();

  constructor(opts: { registry?: Registry; defaultMetrics?: boolean } = {}) {
    this.registry = opts.registry ?? new Registry();
    const registers = [this.registry];
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });

    this.reconcileTotal = new Counter({
      name: 'controller_runtime_reconcile_total', help: 'Total number of reconciliations per controller.',
      labelNames: ['controller', 'result'], registers,
    });
    this.reconcileErrors = new Counter({
      name: 'controller_runtime_reconcile_errors_total', help: 'Total number of reconciliation errors per controller.',
      labelNames: ['controller'], registers,
    });
    this.reconcileTime = new Histogram({
      name: 'controller_runtime_reconcile_time_seconds', help: 'Length of time per reconciliation per controller.',
      labelNames: ['controller'], buckets: RECONCILE_BUCKETS, registers,
    });
    this.maxConcurrentReconciles = new Gauge({
      name: 'controller_runtime_max_concurrent_reconciles', help: 'Maximum number of concurrent reconciles per controller.',
      labelNames: ['controller'], registers,
    });
    this.activeWorkers = new Gauge({
      name: 'controller_runtime_active_workers', help: 'Number of currently used workers per controller.',
      labelNames: ['controller'], registers,
    });
    this.leaderStatus = new Gauge({
      name: 'leader_election_master_status', help: 'Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master.',
      labelNames: ['name'], registers,
    });
    this.queueDepth = new Gauge({ name: 'workqueue_depth', help: 'Current depth of workqueue.', labelNames: ['name'], registers });
    this.queueAdds = new Counter({ name: 'workqueue_adds_total', help: 'Total number of adds handled by workqueue.', labelNames: ['name'], registers });
    this.queueDuration = new Histogram({
      name: 'workqueue_queue_duration_seconds', help: 'How long in seconds an item stays in workqueue before being requested.',
      labelNames: ['name'], buckets: QUEUE_BUCKETS, registers,
    });
    this.workDuration = new Histogram({
      name: 'workqueue_work_duration_seconds', help: 'How long in seconds processing an item from workqueue takes.',
      labelNames: ['name'], buckets: QUEUE_BUCKETS, registers,
    });
    this.queueRetries = new Counter({ name: 'workqueue_retries_total', help: 'Total number of retries handled by workqueue.', labelNames: ['name'], registers });

    // Work in progress is only meaningful at scrape time, so these gauges are computed then.
    const queues = this.queues;
    new Gauge({
      name: 'workqueue_unfinished_work_seconds',
      help: 'How many seconds of work has been done that is in progress and hasn\'t been observed by work_duration. Large values indicate stuck threads.',
      labelNames: ['name'], registers,
      collect() {
        for (const [name, q] of queues) this.set({ name }, q.unfinishedWork().totalSeconds);
      },
    });
    new Gauge({
      name: 'workqueue_longest_running_processor_seconds',
      help: 'How many seconds has the longest running processor for workqueue been running.',
      labelNames: ['name'], registers,
      collect() {
        for (const [name, q] of queues) this.set({ name }, q.unfinishedWork().longestSeconds);
      },
    });
  }

  /** Hooks for a work queue named `name` (label value of the workqueue_* series). */
  queueMetrics(name: string): QueueMetrics {
    const labels = { name };
    // Publish zeros right away so dashboards see the queue before its first add.
    this.queueDepth.set(labels, 0);
    this.queueAdds.inc(labels, 0);
    this.queueRetries.inc(labels, 0);
    return {
      added: () => this.queueAdds.inc(labels),
      depth: (n) => this.queueDepth.set(labels, n),
      queued: (s) => this.queueDuration.observe(labels, s),
      worked: (s) => this.workDuration.observe(labels, s),
      retried: () => this.queueRetries.inc(labels),
    };
  }

  /** Track a queue's unfinished work (a restarted controller replaces its old queue). */
  trackQueue(queue: WorkQueue): void {
    this.queues.set(queue.name, queue);
  }

  /** Create a controller's series at zero, as controller-runtime does when it starts. */
  initController(controller: string, workers: number): void {
    for (const result of RESULTS) this.reconcileTotal.inc({ controller, result }, 0);
    this.reconcileErrors.inc({ controller }, 0);
    this.maxConcurrentReconciles.set({ controller }, workers);
    this.activeWorkers.set({ controller }, 0);
  }

  observeReconcile(controller: string, result: ReconcileResult, seconds: number): void {
    this.reconcileTotal.inc({ controller, result });
    if (result === 'error') this.reconcileErrors.inc({ controller });
    this.reconcileTime.observe({ controller }, seconds);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
