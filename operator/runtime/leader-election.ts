/**
 * Leader election on a coordination.k8s.io/v1 Lease, following client-go's leaderelection:
 *  - A candidate takes the lease when it is absent, released (empty holderIdentity), or has not
 *    changed for leaseDuration as measured on the candidate's own clock from when it first saw
 *    the current version (never by comparing renewTime with the local clock, so clock skew
 *    between nodes does not matter).
 *  - The leader renews every retryPeriod. If it cannot renew within renewDeadline of the start
 *    of its last successful renewal it stops leading. Because renewDeadline < leaseDuration, the
 *    old leader has stopped before any other candidate can consider the lease expired.
 *  - Writes use optimistic concurrency (resourceVersion): a 409 just means another candidate
 *    wrote first, and this one tries again next period.
 *  - On graceful shutdown the leader writes an empty holderIdentity, so a standby takes over at
 *    its next retry instead of waiting for the lease to expire.
 */
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { Logger } from '../../capsule/log.js';
import { silentLogger } from '../../capsule/log.js';
import { apiVersionOf, isConflict, isNotFound, LEASES, type KubeObject, type ObjectApi } from './object-api.js';
import type { RuntimeMetrics } from './metrics.js';
import { Sleeper, withTimeout } from './util.js';

export interface LeaderElectionOptions {
  namespace: string;
  /** Lease name, e.g. "space-operator". */
  name: string;
  /** Unique per replica; default "<hostname>_<uuid>" as controller-runtime does. */
  identity?: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
}

export interface LeaderCallbacks {
  /** Called (not awaited) when this replica becomes leader. */
  onStartedLeading?: () => void | Promise<void>;
  /**
   * Called when this replica stops leading (lost the lease or shutting down). Awaited before the
   * replica campaigns again, so the work of one term has stopped before the next term starts.
   */
  onStoppedLeading?: () => void | Promise<void>;
  /** Called when a different holder is observed. */
  onNewLeader?: (identity: string) => void;
}

interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
  [k: string]: unknown;
}

/** metav1.MicroTime: RFC 3339 with exactly six fractional digits. */
export const microTime = (d: Date): string => d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

export class LeaderElector {
  readonly identity: string;
  readonly leaseDurationMs: number;
  readonly renewDeadlineMs: number;
  readonly retryPeriodMs: number;
  private readonly log: Logger;
  private readonly metrics?: RuntimeMetrics;
  private readonly sleeper = new Sleeper();
  private leading = false;
  /** Our last write made us holder (may be true while not `leading`, e.g. during shutdown). */
  private holdsLease = false;
  private stopped = false;
  private loop?: Promise<void>;
  private observedRv?: string;
  private observedAt = 0;
  private observedHolder = '';
  /** Start time of the last successful acquire/renew: the renew deadline counts from here. */
  private lastRenewStart = 0;
  private lease?: KubeObject;

  constructor(
    private readonly api: ObjectApi,
    private readonly opts: LeaderElectionOptions,
    private readonly callbacks: LeaderCallbacks = {},
    deps: { logger?: Logger; metrics?: RuntimeMetrics } = {},
  ) {
    this.identity = opts.identity ?? `${hostname()}_${randomUUID()}`;
    this.leaseDurationMs = opts.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = opts.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = opts.retryPeriodMs ?? 2_000;
    if (!(this.leaseDurationMs > this.renewDeadlineMs && this.renewDeadlineMs > this.retryPeriodMs)) {
      // The safety argument above needs leaseDuration > renewDeadline > retryPeriod.
      throw new Error('leader election: need leaseDuration > renewDeadline > retryPeriod');
    }
    this.log = (deps.logger ?? silentLogger).child({ lease: `${opts.namespace}/${opts.name}`, identity: this.identity });
    this.metrics = deps.metrics;
    this.metrics?.leaderStatus.set({ name: opts.name }, 0);
  }

  isLeader(): boolean {
    return this.leading;
  }

  /** The holder this replica last observed ('' when none). */
  observedLeader(): string {
    return this.observedHolder;
  }

  start(): void {
    if (this.loop || this.stopped) return;
    this.loop = this.run();
  }

  /**
   * Stop campaigning/renewing. If leading: onStoppedLeading is awaited, then (with release) the
   * lease is handed back so a standby takes over at once.
   */
  async stop(opts: { release?: boolean } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.sleeper.close();
    await this.loop;
    if (this.leading) await this.loseLeadership('shutdown');
    if ((opts.release ?? true) && this.holdsLease) await this.release();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      if (!(await this.acquire())) break;
      if (this.stopped) break; // acquired while stopping: stop() releases it
      this.leading = true;
      this.metrics?.leaderStatus.set({ name: this.opts.name }, 1);
      this.log.info('leader.started_leading');
      this.invoke('onStartedLeading', this.callbacks.onStartedLeading);
      await this.renewLoop();
      if (this.stopped) break;
      await this.loseLeadership('lost');
    }
  }

  private async acquire(): Promise<boolean> {
    while (!this.stopped) {
      if (await this.attempt(this.renewDeadlineMs)) return true;
      // Jitter so standbys do not hit the API server in lockstep.
      await this.sleeper.sleep(this.retryPeriodMs * (1 + Math.random() * 0.2));
    }
    return false;
  }

  private async renewLoop(): Promise<void> {
    while (!this.stopped) {
      const deadline = this.lastRenewStart + this.renewDeadlineMs;
      // Never sleep past the deadline: leadership must end on time, not a period late.
      await this.sleeper.sleep(Math.min(this.retryPeriodMs, Math.max(0, deadline - Date.now())));
      if (this.stopped) return;
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        this.log.warn('leader.renew_deadline_exceeded', { renewDeadlineMs: this.renewDeadlineMs });
        return;
      }
      await this.attempt(remaining);
      if (this.stopped) return;
      if (this.observedHolder !== this.identity && this.observedHolder !== '') {
        this.log.warn('leader.lease_taken', { holder: this.observedHolder });
        return;
      }
    }
  }

  /** One acquire-or-renew, bounded by `timeoutMs`; errors are logged and count as "not held". */
  private async attempt(timeoutMs: number): Promise<boolean> {
    try {
      return await withTimeout(this.tryAcquireOrRenew(), timeoutMs, 'lease update');
    } catch (err) {
      this.log.debug('leader.attempt_failed', { err });
      return false;
    }
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name } = this.opts;
    const start = Date.now();
    const now = microTime(new Date());
    const durationSec = Math.max(1, Math.ceil(this.leaseDurationMs / 1000));
    let lease: KubeObject;
    try {
      lease = await this.api.get(LEASES, name, namespace);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      const fresh: KubeObject = {
        apiVersion: apiVersionOf(LEASES), kind: LEASES.kind,
        metadata: { name, namespace },
        spec: { holderIdentity: this.identity, leaseDurationSeconds: durationSec, acquireTime: now, renewTime: now, leaseTransitions: 0 },
      };
      try {
        this.succeeded(await this.api.create(LEASES, fresh), start);
        return true;
      } catch (e) {
        if (isConflict(e)) return false; // another candidate created it first
        throw e;
      }
    }
    const spec = (lease.spec ?? {}) as LeaseSpec;
    const holder = spec.holderIdentity ?? '';
    this.observe(lease, holder);
    if (holder !== '' && holder !== this.identity && this.observedAt + this.leaseDurationMs > Date.now()) {
      return false; // held by someone else and not expired
    }
    const mine = holder === this.identity;
    const next: LeaseSpec = {
      ...spec,
      holderIdentity: this.identity,
      leaseDurationSeconds: durationSec,
      renewTime: now,
      acquireTime: mine && spec.acquireTime ? spec.acquireTime : now,
      leaseTransitions: (spec.leaseTransitions ?? 0) + (mine ? 0 : 1),
    };
    try {
      this.succeeded(await this.api.replace(LEASES, { ...lease, spec: next }), start);
      return true;
    } catch (err) {
      if (isConflict(err)) return false; // someone else wrote in between; normal
      throw err;
    }
  }

  private succeeded(lease: KubeObject, start: number): void {
    this.lease = lease;
    this.holdsLease = true;
    this.lastRenewStart = start;
    this.observe(lease, this.identity);
  }

  /** Note when a new version of the lease was first seen (the expiry clock is local). */
  private observe(lease: KubeObject, holder: string): void {
    if (lease.metadata.resourceVersion === this.observedRv) return;
    this.observedRv = lease.metadata.resourceVersion;
    this.observedAt = Date.now();
    if (holder !== this.observedHolder) {
      this.observedHolder = holder;
      if (holder !== this.identity) this.holdsLease = false;
      if (holder) this.callbacks.onNewLeader?.(holder);
    }
  }

  private async loseLeadership(why: string): Promise<void> {
    if (!this.leading) return;
    this.leading = false;
    this.metrics?.leaderStatus.set({ name: this.opts.name }, 0);
    this.log.info('leader.stopped_leading', { why });
    try {
      await this.callbacks.onStoppedLeading?.();
    } catch (err) {
      this.log.error('leader.callback_failed', { callback: 'onStoppedLeading', err });
    }
  }

  /** Hand the lease back: empty holder, so standbys need not wait for it to expire. */
  private async release(): Promise<void> {
    const { namespace, name } = this.opts;
    const once = async (lease: KubeObject): Promise<void> => {
      const spec = (lease.spec ?? {}) as LeaseSpec;
      if ((spec.holderIdentity ?? '') !== this.identity) return;
      const now = microTime(new Date());
      await this.api.replace(LEASES, {
        ...lease,
        spec: { ...spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: now, acquireTime: now },
      });
    };
    try {
      await withTimeout((async () => {
        try {
          await once(this.lease ?? (await this.api.get(LEASES, name, namespace)));
        } catch (err) {
          if (!isConflict(err)) throw err;
          await once(await this.api.get(LEASES, name, namespace)); // our cached copy was stale
        }
      })(), this.renewDeadlineMs, 'lease release');
      this.holdsLease = false;
      this.log.info('leader.released');
    } catch (err) {
      // Not fatal: the lease simply expires after leaseDuration.
      this.log.warn('leader.release_failed', { err });
    }
  }

  private invoke(what: string, fn?: () => void | Promise<void>): void {
    if (!fn) return;
    try {
      Promise.resolve(fn()).catch((err: unknown) => this.log.error('leader.callback_failed', { callback: what, err }));
    } catch (err) {
      this.log.error('leader.callback_failed', { callback: what, err });
    }
  }
}
