/** Small timing helpers shared by the informer, leader election and the manager. */

export interface BackoffOptions {
  /** Delay after the first failure. */
  initialMs?: number;
  /** Upper bound of any delay. */
  maxMs?: number;
}

/**
 * Exponential backoff with "equal jitter": the delay for the n-th consecutive failure is drawn
 * from [d/2, d] with d = min(max, initial * 2^(n-1)). The random half keeps many operator
 * replicas (or many informers of one) from reconnecting to a recovering API server in lockstep;
 * the fixed half keeps the delay growing.
 */
export function backoffDelay(failures: number, opts: BackoffOptions = {}): number {
  const initial = opts.initialMs ?? 800;
  const max = opts.maxMs ?? 30_000;
  const d = Math.min(max, initial * 2 ** Math.min(Math.max(failures - 1, 0), 30));
  return d / 2 + Math.random() * (d / 2);
}

/** A sleep that wake() ends early, and that close() ends for good, so loops stop at once. */
export class Sleeper {
  private wakeUp?: () => void;
  private timer?: NodeJS.Timeout;
  private closed = false;

  sleep(ms: number): Promise<void> {
    this.wake();
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.wakeUp = resolve;
      this.timer = setTimeout(() => this.wake(), ms);
    });
  }

  wake(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const w = this.wakeUp;
    this.wakeUp = undefined;
    w?.();
  }

  /** Wake the current sleep and make every later sleep return at once. */
  close(): void {
    this.closed = true;
    this.wake();
  }
}

/** Settles like `p`, or rejects with a TimeoutError after `ms` (the call itself runs on). */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export class TimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TimeoutError';
  }
}

/** Parse a work-queue key ("namespace/name" or "name") into a reconcile request. */
export function parseKey(key: string): { namespace?: string; name: string } {
  const i = key.indexOf('/');
  return i < 0 ? { name: key } : { namespace: key.slice(0, i), name: key.slice(i + 1) };
}

export function keyOf(req: { namespace?: string; name: string }): string {
  return req.namespace ? `${req.namespace}/${req.name}` : req.name;
}
