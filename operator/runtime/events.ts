/**
 * Records core/v1 Events about objects ("Normal CapsuleReady", "Warning ReplicationFailed").
 * Events are advisory: an API server that refuses or times out an event must never fail or slow
 * a reconcile, so recording is fire-and-forget and a failure is logged and dropped (the way
 * client-go's broadcaster drops events it cannot write).
 */
import type { Logger } from '../../capsule/log.js';
import { silentLogger } from '../../capsule/log.js';
import type { KubeObject, ObjectApi } from './object-api.js';

export type EventType = 'Normal' | 'Warning';

export interface EventRecorderOptions {
  logger?: Logger;
  /** Events in flight beyond this are dropped (an API server in trouble must not pile them up). */
  maxPending?: number;
}

export class EventRecorder {
  private readonly pending = new Set<Promise<void>>();
  private readonly log: Logger;
  private readonly maxPending: number;
  /** Counters for tests and debugging. */
  readonly stats = { recorded: 0, failed: 0, dropped: 0 };

  constructor(
    private readonly api: ObjectApi,
    readonly component: string,
    opts: EventRecorderOptions = {},
  ) {
    this.log = opts.logger ?? silentLogger;
    this.maxPending = opts.maxPending ?? 100;
  }

  /** Record an event about `obj`. Never throws and never waits for the API server. */
  event(obj: KubeObject, type: EventType, reason: string, message: string): void {
    if (this.pending.size >= this.maxPending) {
      this.stats.dropped++;
      this.log.warn('event.dropped', { reason, object: describe(obj), why: 'too many pending events' });
      return;
    }
    let p: Promise<void>;
    try {
      p = this.api.recordEvent({ involved: obj, type, reason, message, source: this.component });
    } catch (err) {
      p = Promise.reject(err);
    }
    const tracked: Promise<void> = p.then(
      () => {
        this.stats.recorded++;
      },
      (err: unknown) => {
        this.stats.failed++;
        this.log.warn('event.record_failed', { reason, type, object: describe(obj), err });
      },
    ).finally(() => this.pending.delete(tracked));
    this.pending.add(tracked);
  }

  normal(obj: KubeObject, reason: string, message: string): void {
    this.event(obj, 'Normal', reason, message);
  }

  warning(obj: KubeObject, reason: string, message: string): void {
    this.event(obj, 'Warning', reason, message);
  }

  /** Wait for the events in flight (tests, and shutdown so the last events are not lost). */
  async flush(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }
}

function describe(obj: KubeObject): string {
  const m = obj.metadata ?? { name: '?' };
  return `${obj.kind}/${m.namespace ? `${m.namespace}/` : ''}${m.name}`;
}
