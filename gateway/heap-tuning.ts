/**
 * V8 heap tuning for processes that serve views (`spacectl serve`, `spacectl project`, the CSI
 * plugin): how far the JavaScript heap may grow past what the last full collection kept.
 *
 * Why: a serving process keeps a small JavaScript heap (a few MB of metadata) and moves gigabytes
 * through ArrayBuffers (socket reads, write buffers, segments). V8 counts ArrayBuffer memory
 * allocated since the last full collection against the old generation's limit, and derives that
 * limit from the live heap times a growing factor it picks from its own speed estimates. With a
 * heap of ~8 MB the limit can end up a few MB above the live size, and then every few MB of
 * buffers written starts another full collection.
 * Measured: a standalone NFS server writing 1 GiB after NFS reads had filled a 3 GiB segment cache
 * ran ~100-120 full collections and 4.7-5.3 CPU s/GiB; the same write with the factor fixed at
 * 11 ran 21-23 and 2.9-3.3 CPU s/GiB. Before those reads (or with the cache cleared), 20-25
 * collections and ~2.9 CPU s/GiB either way.
 * The cost: the heap may grow to 11 times its live size before a full collection (tens of MB
 * here), still bounded by V8's heap limit.
 *
 * SPACE_HEAP_GROWING_PERCENT overrides the percentage (0: leave V8's own heuristics).
 */
import v8 from 'node:v8';
import { envInteger } from '../capsule/env.js';
import type { Logger } from '../capsule/log.js';

export const DEFAULT_HEAP_GROWING_PERCENT = 1000;

/** The growing percentage the environment asks for; null: V8's own heuristics. */
export function heapGrowingPercent(env: NodeJS.ProcessEnv = process.env): number | null {
  const pct = envInteger(env, 'SPACE_HEAP_GROWING_PERCENT', 0, 10_000) ?? DEFAULT_HEAP_GROWING_PERCENT;
  return pct === 0 ? null : pct;
}

/** Apply heapGrowingPercent() to this process's V8 heap (and log it); returns what was applied. */
export function tuneHeapForServing(logger?: Logger, env: NodeJS.ProcessEnv = process.env): number | null {
  const pct = heapGrowingPercent(env);
  if (pct !== null) v8.setFlagsFromString(`--heap-growing-percent=${pct}`);
  logger?.info('process.heap_tuning', { heapGrowingPercent: pct });
  return pct;
}
