/**
 * A keyed, deduplicating work queue with the semantics of client-go's workqueue, which
 * controller-runtime builds on:
 *  - a key added while it is waiting in the queue is not queued twice;
 *  - a key added while a worker processes it is parked ("dirty") and queued again only when
 *    that worker calls done(), so one key is never reconciled by two workers at once;
 *  - addRateLimited() delays a key by a per-key exponential backoff until forget() resets it;
 *  - addAfter() delays a key; of several pending delays for one key the earliest wins.
 *
 * Keys are strings ("namespace/name"): reconcilers read the current object from the cache, so
 * the queue never needs to carry objects, and a burst of events for one object costs one
 * reconcile.
 */

/** Observers of one queue, wired to Prometheus by metrics.ts (kept abstract so tests need none). */
export interface QueueMetrics {
  /** A key was accepted by add() (deduplicated adds are not counted, as in client-go). */
  added(): void;
  depth(n: number): void;
  /** Seconds a key waited in the queue before a worker took it. */
  queued(seconds: number): void;
  /** Seconds a worker spent on a key (get() to done()). */
  worked(seconds: number): void;
  retried(): void;
}

export interface RateLimiterOptions {
  /** First retry delay; doubles per consecutive failure. controller-runtime: 5 ms. */
  baseDelayMs?: number;
  /** Upper bound of the delay. controller-runtime: 1000 s. */
  maxDelayMs?: number;
}

export interface WorkQueueOptions extends RateLimiterOptions {
  name: string;
  metrics?: QueueMetrics;
  /** Injectable clock (ms) so durations are testable without sleeping. */
  now?: () => number;
}

/** Per-key exponential backoff: base * 2^failures, capped. */
export class ExponentialBackoff {
  private readonly failures = new Map<string, number>();
  readonly baseMs: number;
  readonly maxMs: number;

  constructor(opts: RateLimiterOptions = {}) {
    this.baseMs = opts.baseDelayMs ?? 5;
    this.maxMs = opts.maxDelayMs ?? 1_000_000;
  }

  /** The delay for this failure of `key`, counting it. */
  when(key: string): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    // 2^n overflows to Infinity long after the cap is reached; clamp the exponent anyway.
    return Math.min(this.maxMs, this.baseMs * 2 ** Math.min(n, 60));
  }

  retries(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  forget(key: string): void {
    this.failures.delete(key);
  }
}

export class WorkQueue {
  readonly name: string;
  private readonly queue: string[] = [];
  /** Keys that need processing: queued ones, and processing ones that were added again. */
  private readonly dirty = new Set<string>();
  /** Keys a worker holds, with the time it took them. */
  private readonly processing = new Map<string, number>();
  /** When each dirty key was first added (queue-duration metric). */
  private readonly addedAt = new Map<string, number>();
  private readonly waiters: Array<(key: string | undefined) => void> = [];
  private readonly delayed = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly backoff: ExponentialBackoff;
  private readonly metrics?: QueueMetrics;
  private readonly now: () => number;
  private shuttingDown = false;
  private drainWaiters: Array<() => void> = [];

  constructor(opts: WorkQueueOptions) {
    this.name = opts.name;
    this.backoff = new ExponentialBackoff(opts);
    this.metrics = opts.metrics;
    this.now = opts.now ?? (() => performance.now());
  }

  add(key: string): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.metrics?.added();
    this.dirty.add(key);
    this.addedAt.set(key, this.now());
    // A worker holds it: done() queues it again, so two workers never share a key.
    if (this.processing.has(key)) return;
    this.queue.push(key);
    this.metrics?.depth(this.queue.length);
    this.dispatch();
  }

  /** Add `key` after `ms`. A key with an earlier pending deadline keeps that deadline. */
  addAfter(key: string, ms: number): void {
    if (this.shuttingDown) return;
    if (ms <= 0) return this.add(key);
    const at = this.now() + ms;
    const pending = this.delayed.get(key);
    if (pending && pending.at <= at) return;
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, ms);
    // Delays alone must not keep a process alive (the servers and informers do that).
    timer.unref();
    this.delayed.set(key, { at, timer });
  }

  /** Retry `key` after its next backoff delay (5 ms, 10 ms, 20 ms, ... by default). */
  addRateLimited(key: string): void {
    if (this.shuttingDown) return;
    this.metrics?.retried();
    this.addAfter(key, this.backoff.when(key));
  }

  /** Reset the backoff of `key` (after a successful reconcile). */
  forget(key: string): void {
    this.backoff.forget(key);
  }

  numRequeues(key: string): number {
    return this.backoff.retries(key);
  }

  /**
   * The next key, waiting for one if the queue is empty; undefined once shutDown() was called.
   * The caller owns the key until it calls done(key).
   */
  get(): Promise<string | undefined> {
    if (this.shuttingDown) return Promise.resolve(undefined);
    if (this.queue.length > 0) return Promise.resolve(this.take());
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  done(key: string): void {
    const started = this.processing.get(key);
    if (started === undefined) return;
    this.processing.delete(key);
    this.metrics?.worked((this.now() - started) / 1000);
    if (!this.shuttingDown && this.dirty.has(key)) {
      this.queue.push(key);
      this.metrics?.depth(this.queue.length);
      this.dispatch();
    }
    if (this.shuttingDown && this.processing.size === 0) {
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Keys waiting (not counting those being processed or delayed). */
  len(): number {
    return this.queue.length;
  }

  /** Keys currently held by workers. */
  inFlight(): string[] {
    return [...this.processing.keys()];
  }

  isShuttingDown(): boolean {
    return this.shuttingDown;
  }

  /** Total seconds of work in progress, and the oldest one (unfinished-work metrics). */
  unfinishedWork(): { totalSeconds: number; longestSeconds: number } {
    const now = this.now();
    let total = 0;
    let longest = 0;
    for (const started of this.processing.values()) {
      const s = (now - started) / 1000;
      total += s;
      longest = Math.max(longest, s);
    }
    return { totalSeconds: total, longestSeconds: longest };
  }

  /**
   * Stop taking work: adds are ignored, waiting and future get() calls return undefined, and
   * queued or delayed keys are dropped (the next start relists and re-enqueues everything).
   * Resolves true when every in-flight key is done(), false if `timeoutMs` passes first.
   */
  shutDown(timeoutMs = 30_000): Promise<boolean> {
    if (!this.shuttingDown) {
      this.shuttingDown = true;
      for (const { timer } of this.delayed.values()) clearTimeout(timer);
      this.delayed.clear();
      this.queue.length = 0;
      this.dirty.clear();
      this.addedAt.clear();
      this.metrics?.depth(0);
      for (const w of this.waiters.splice(0)) w(undefined);
    }
    if (this.processing.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      timer.unref();
      this.drainWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  private take(): string {
    const key = this.queue.shift()!;
    this.metrics?.depth(this.queue.length);
    const now = this.now();
    const added = this.addedAt.get(key);
    if (added !== undefined) this.metrics?.queued((now - added) / 1000);
    this.addedAt.delete(key);
    this.dirty.delete(key);
    this.processing.set(key, now);
    return key;
  }

  /** Hand queued keys straight to waiting workers. */
  private dispatch(): void {
    while (this.waiters.length > 0 && this.queue.length > 0) {
      this.waiters.shift()!(this.take());
    }
  }
}
