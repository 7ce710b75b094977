/**
 * Prometheus metrics of one gateway, in its own Registry (several gateways in one process —
 * tests, or a gateway next to the operator — must not collide in prom-client's global one).
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { StoreStat } from '../capsule/types.js';
import { sharedSegmentPool, type PoolStats } from '../capsule/segment-pool.js';
import type { Logger } from '../capsule/log.js';

export class GatewayMetrics {
  readonly registry = new Registry();
  readonly bytesIn: Counter;
  readonly bytesOut: Counter;
  readonly ops: Counter<'op' | 'code'>;
  readonly opDuration: Histogram<'op'>;
  readonly integrityFailures: Counter;
  private inflight: Promise<StoreStat | undefined> | undefined;

  /** `storeStat` is read on every scrape, so the gauges are never stale. */
  constructor(private readonly opts: {
    storeStat?: () => Promise<StoreStat>;
    logger?: Logger;
    /** Count DATA_LOSS replies as integrity failures (when the store cannot report them itself). */
    countDataLossReplies?: boolean;
    /** The segment pool's counters (default: this process's shared pool, which stores use). */
    segmentPool?: () => PoolStats;
  } = {}) {
    const registers = [this.registry];
    this.bytesIn = new Counter({ name: 'space_gateway_bytes_in_total', help: 'File bytes received from clients (Put, Write).', registers });
    this.bytesOut = new Counter({ name: 'space_gateway_bytes_out_total', help: 'File bytes sent to clients (Read).', registers });
    this.ops = new Counter({ name: 'space_gateway_ops_total', help: 'Capsule API calls by RPC and status code.', labelNames: ['op', 'code'], registers });
    this.opDuration = new Histogram({
      name: 'space_gateway_op_duration_seconds',
      help: 'Capsule API call duration by RPC (streams: until the stream ends).',
      labelNames: ['op'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.integrityFailures = new Counter({
      name: 'space_integrity_failures_total', help: 'Reads refused because a segment failed its integrity check.', registers,
    });
    const self = this;
    const gauge = (name: string, help: string, pick: (s: StoreStat) => number) => new Gauge({
      name, help, registers,
      async collect() {
        const s = await self.storeStat();
        if (s) this.set(pick(s));
      },
    });
    gauge('space_store_segments', 'Distinct segments stored.', (s) => s.segments);
    gauge('space_store_stored_bytes', 'Bytes of stored (compressed, encrypted) segments.', (s) => s.storedBytes);
    gauge('space_store_dedup_ratio', 'Referenced plaintext bytes / distinct plaintext bytes.', (s) => s.dedupRatio);
    // The memory cached segments live in (capsule/segment-pool.ts), read on every scrape.
    const pool = opts.segmentPool ?? (() => sharedSegmentPool().snapshot());
    const poolGauge = (name: string, help: string, pick: (s: PoolStats) => number) => new Gauge({
      name, help, registers,
      collect() {
        this.set(pick(pool()));
      },
    });
    const poolCounter = (name: string, help: string, pick: (s: PoolStats) => number) => new Counter({
      name, help, registers,
      collect() {
        this.reset();
        this.inc(pick(pool()));
      },
    });
    poolGauge('space_segment_pool_bytes', 'Memory the segment pool holds for cached plaintext (slabs).', (s) => s.bytes);
    poolGauge('space_segment_pool_slots_in_use', 'Pool slots held by a load, the segment cache or a reader.', (s) => s.inUse);
    poolCounter('space_segment_pool_reused_total', 'Slots handed out again after an earlier segment was done with them.', (s) => s.reused);
    poolCounter('space_segment_pool_kept_total', 'Slots retired because their bytes went to code that keeps them.', (s) => s.kept);
    poolCounter('space_segment_pool_refused_total', 'Loads that found the pool at its cap and used memory of their own.', (s) => s.refused);
  }

  /** One storeStat per scrape: the three gauges collect concurrently and share this call. */
  private storeStat(): Promise<StoreStat | undefined> {
    if (!this.opts.storeStat) return Promise.resolve(undefined);
    this.inflight ??= this.opts.storeStat()
      .catch((err: unknown) => {
        this.opts.logger?.warn('gateway.metrics.store_stat_failed', { err });
        return undefined; // keep the last values rather than failing the whole scrape
      })
      .finally(() => { this.inflight = undefined; });
    return this.inflight;
  }

  /** Record one finished call. `code` is the gRPC status name (OK, NOT_FOUND, ...). */
  observe(op: string, code: string, seconds: number): void {
    this.ops.inc({ op, code });
    this.opDuration.observe({ op }, seconds);
    if (code === 'DATA_LOSS' && this.opts.countDataLossReplies) this.integrityFailures.inc();
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
