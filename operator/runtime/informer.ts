/**
 * An informer keeps a local cache of every object of one resource type, the way client-go's
 * reflector + indexer do: list once, then watch from the list's resourceVersion, applying each
 * event to the cache and telling the registered handlers (which enqueue keys for controllers).
 *
 * The loop never gives up and never throws: a watch that ends cleanly is resumed from the last
 * resourceVersion seen (objects and bookmarks); a 410 Gone means that version was compacted
 * away, so it relists and diffs the fresh list against the cache (emitting deletes for objects
 * that vanished while it was not watching); any other error reconnects after an exponential,
 * jittered backoff capped at ~30 s. Reconcilers read the cache instead of the API server.
 */
import type { Logger } from '../../capsule/log.js';
import { silentLogger } from '../../capsule/log.js';
import { isGone, objectKey, type KubeObject, type ObjectApi, type ResourceType, type WatchEventType, type WatchHandle } from './object-api.js';
import { backoffDelay, Sleeper, type BackoffOptions } from './util.js';

export interface EventHandler {
  onAdd?(obj: KubeObject): void;
  onUpdate?(oldObj: KubeObject, newObj: KubeObject): void;
  onDelete?(obj: KubeObject): void;
}

export interface InformerOptions {
  /** Watch one namespace only (default: all namespaces). */
  namespace?: string;
  backoff?: BackoffOptions;
  /**
   * A watch that ends cleanly sooner than this without delivering anything counts as a failure
   * (backoff applies), so a server that closes watches at once cannot spin the loop.
   */
  minWatchMs?: number;
  logger?: Logger;
}

export const typeId = (t: ResourceType): string => `${t.group || 'core'}/${t.version}/${t.plural}`;

/** Read access to an informer's cache: what reconcilers get. */
export interface CacheReader {
  get(key: string): KubeObject | undefined;
  list(namespace?: string): KubeObject[];
  hasSynced(): boolean;
}

export class Informer implements CacheReader {
  private readonly cache = new Map<string, KubeObject>();
  private readonly handlers = new Set<EventHandler>();
  private readonly sleeper = new Sleeper();
  private readonly log: Logger;
  private synced = false;
  private syncWaiters: Array<() => void> = [];
  private running = false;
  private stopped = false;
  private watch?: WatchHandle;
  private resourceVersion = '';
  private loopDone: Promise<void> = Promise.resolve();
  /** Counters for tests and debugging. */
  readonly stats = { lists: 0, watches: 0, failures: 0, relistsOnGone: 0, bookmarks: 0 };

  constructor(
    private readonly api: ObjectApi,
    readonly type: ResourceType,
    private readonly opts: InformerOptions = {},
  ) {
    this.log = (opts.logger ?? silentLogger).child({ informer: typeId(type), ...(opts.namespace ? { namespace: opts.namespace } : {}) });
  }

  get(key: string): KubeObject | undefined {
    return this.cache.get(key);
  }

  list(namespace?: string): KubeObject[] {
    const all = [...this.cache.values()];
    return namespace === undefined ? all : all.filter((o) => o.metadata.namespace === namespace);
  }

  keys(): string[] {
    return [...this.cache.keys()];
  }

  hasSynced(): boolean {
    return this.synced;
  }

  /** The last resourceVersion seen (list, event or bookmark): where a re-watch starts. */
  lastResourceVersion(): string {
    return this.resourceVersion;
  }

  /**
   * Register a handler. Once the cache has synced, the handler first receives an add for every
   * cached object, so a controller started late (e.g. on becoming leader) sees everything.
   * Returns the function that unregisters it.
   */
  addHandler(h: EventHandler): () => void {
    this.handlers.add(h);
    if (this.synced) for (const obj of this.cache.values()) this.call('onAdd', () => h.onAdd?.(obj));
    return () => this.handlers.delete(h);
  }

  /** Resolves true once synced, false if the informer stops or `timeoutMs` passes first. */
  waitForSync(timeoutMs?: number): Promise<boolean> {
    if (this.synced) return Promise.resolve(true);
    if (this.stopped) return Promise.resolve(false);
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const w = () => {
        if (timer) clearTimeout(timer);
        resolve(this.synced);
      };
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.syncWaiters = this.syncWaiters.filter((x) => x !== w);
          resolve(false);
        }, timeoutMs);
      }
      this.syncWaiters.push(w);
    });
  }

  start(): void {
    if (this.running || this.stopped) return;
    this.running = true;
    this.loopDone = this.run();
  }

  /**
   * Stop watching. Resolves when the loop has exited, except that a list call already in flight
   * is not waited for (the ObjectApi has no cancellation): its result is discarded.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.watch?.stop();
    this.sleeper.close();
    for (const w of this.syncWaiters.splice(0)) w();
    await Promise.race([this.loopDone, new Promise<void>((r) => setTimeout(r, 1000).unref())]);
  }

  private async run(): Promise<void> {
    let needList = true;
    let failures = 0;
    while (!this.stopped) {
      try {
        if (needList) {
          this.stats.lists++;
          const res = await this.api.list(this.type, this.opts.namespace);
          if (this.stopped) break;
          this.replace(res.items, res.resourceVersion);
          needList = false;
        }
        const started = Date.now();
        let delivered = 0;
        this.stats.watches++;
        const handle = await this.api.watch(
          this.type,
          { namespace: this.opts.namespace, resourceVersion: this.resourceVersion, allowBookmarks: true },
          (type, obj) => {
            delivered++;
            failures = 0; // the server is answering again: the next error starts a fresh backoff
            if (!this.stopped) this.apply(type, obj);
          },
        );
        this.watch = handle;
        if (this.stopped) handle.stop();
        await handle.done;
        this.watch = undefined;
        if (this.stopped) break;
        if (delivered > 0 || Date.now() - started >= (this.opts.minWatchMs ?? 1000)) {
          failures = 0;
          this.log.debug('informer.watch_closed', { resourceVersion: this.resourceVersion });
          continue; // resume from the last resourceVersion at once
        }
        failures++;
        this.stats.failures++;
        this.log.debug('informer.watch_closed_early', { failures });
      } catch (err) {
        this.watch = undefined;
        if (this.stopped) break;
        if (isGone(err)) {
          // The version we hold was compacted: the events in between are lost, so the only way
          // to converge is a fresh list diffed against the cache. Relist at once the first time.
          this.stats.relistsOnGone++;
          this.log.info('informer.relist_gone', { resourceVersion: this.resourceVersion });
          needList = true;
          if (failures++ === 0) continue;
        } else {
          failures++;
          this.stats.failures++;
          this.log.warn('informer.error', { err, failures });
        }
      }
      await this.sleeper.sleep(backoffDelay(failures, this.opts.backoff));
    }
    this.running = false;
  }

  /** Replace the cache by a fresh list, telling handlers only what changed. */
  private replace(items: KubeObject[], resourceVersion: string): void {
    const fresh = new Map<string, KubeObject>();
    for (const obj of items) fresh.set(objectKey(obj), this.withKind(obj));
    for (const [key, old] of this.cache) {
      if (!fresh.has(key)) {
        this.cache.delete(key);
        this.emitDelete(old);
      }
    }
    for (const [key, obj] of fresh) {
      const old = this.cache.get(key);
      this.cache.set(key, obj);
      if (!old) this.emitAdd(obj);
      else if (old.metadata.resourceVersion !== obj.metadata.resourceVersion) this.emitUpdate(old, obj);
    }
    this.resourceVersion = resourceVersion;
    if (!this.synced) {
      this.synced = true;
      this.log.debug('informer.synced', { objects: this.cache.size, resourceVersion });
      for (const w of this.syncWaiters.splice(0)) w();
    }
  }

  private apply(type: WatchEventType, raw: KubeObject): void {
    const rv = raw.metadata?.resourceVersion;
    if (type === 'BOOKMARK') {
      this.stats.bookmarks++;
      if (rv) this.resourceVersion = rv;
      return;
    }
    const obj = this.withKind(raw);
    const key = objectKey(obj);
    const old = this.cache.get(key);
    if (type === 'DELETED') {
      this.cache.delete(key);
      this.emitDelete(obj);
    } else {
      this.cache.set(key, obj);
      if (old) this.emitUpdate(old, obj);
      else this.emitAdd(obj);
    }
    if (rv) this.resourceVersion = rv;
  }

  /** List items from a real API server carry no apiVersion/kind; fill them in for reconcilers. */
  private withKind(obj: KubeObject): KubeObject {
    if (obj.apiVersion && obj.kind) return obj;
    return { ...obj, apiVersion: obj.apiVersion || (this.type.group ? `${this.type.group}/${this.type.version}` : this.type.version), kind: obj.kind || this.type.kind };
  }

  private emitAdd(obj: KubeObject): void {
    for (const h of this.handlers) this.call('onAdd', () => h.onAdd?.(obj));
  }

  private emitUpdate(old: KubeObject, obj: KubeObject): void {
    for (const h of this.handlers) this.call('onUpdate', () => h.onUpdate?.(old, obj));
  }

  private emitDelete(obj: KubeObject): void {
    for (const h of this.handlers) this.call('onDelete', () => h.onDelete?.(obj));
  }

  /** A throwing handler must not take the informer (or the other handlers) down. */
  private call(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error('informer.handler_failed', { handler: what, err });
    }
  }
}
