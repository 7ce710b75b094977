/**
 * Local views of capsules on this gateway: kernel FUSE mounts, or, where FUSE cannot be used on
 * this host (decided once, at start), read-only content copies. One view per target directory.
 */
import path from 'node:path';
import { SpaceError, invalid, notFound } from '../../capsule/errors.js';
import type { Logger } from '../../capsule/log.js';
import type { MountInfo, MountSpec, ViewManager } from '../views-api.js';
import { placeContentCopy, removeContentCopy, type CopyStore } from './content-file.js';
import { FuseMount, type FuseMountOptions, type MountableStore } from './mount.js';
import { fuseAvailability, type Availability } from './native.js';
import { prepareTarget } from './target.js';

export type ViewStore = MountableStore & CopyStore;

export interface LocalViewOptions {
  /** Never use FUSE: always place a read-only copy (tests; hosts where FUSE misbehaves). */
  forceContentFile?: boolean;
  /** Passed to every FUSE mount. */
  fuse?: Pick<FuseMountOptions, 'allowOther' | 'opTimeoutMs' | 'mountTimeoutMs' | 'unmount' | 'debug'>;
}

interface View {
  info: MountInfo;
  fuse?: FuseMount;
}

export class LocalViewManager implements ViewManager {
  /** Whether kernel FUSE is used; when not, why (logged at start). */
  readonly fuse: Availability;
  private readonly views = new Map<string, View>();
  /** Targets with a mount or unmount in progress: a second request for one fails fast. */
  private readonly busy = new Set<string>();
  private readonly log: Logger;

  constructor(private readonly store: ViewStore, logger: Logger, private readonly opts: LocalViewOptions = {}) {
    this.log = logger;
    this.fuse = opts.forceContentFile ? { ok: false, reason: 'content-file views forced by configuration' } : fuseAvailability();
    if (this.fuse.ok) this.log.info('views.fuse', { available: true });
    else this.log.warn('views.fuse', { available: false, reason: this.fuse.reason, msg: 'FUSE is unavailable: views will be read-only copies of capsule files, not live mounts' });
  }

  async mount(spec: MountSpec): Promise<MountInfo> {
    const target = checkSpec(spec);
    if (this.views.has(target) || this.busy.has(target)) {
      throw new SpaceError('ALREADY_EXISTS', `a view is already mounted at ${target}`, { errno: 'EBUSY', details: { target } });
    }
    // Mounting goes through a synchronous mount(2) in the binding; inside one of our own FUSE
    // mounts the kernel would need this (blocked) thread to answer the lookup: a deadlock.
    for (const v of this.views.values()) {
      if (v.fuse && isInside(target, v.info.target)) {
        throw invalid(`target ${target} is inside the FUSE view at ${v.info.target} served by this process; mount it elsewhere`);
      }
    }
    this.busy.add(target);
    try {
      const view = this.fuse.ok ? await this.mountFuse(spec, target) : await this.placeCopy(spec, target, this.fuse.reason);
      this.views.set(target, view);
      return { ...view.info };
    } finally {
      this.busy.delete(target);
    }
  }

  private async mountFuse(spec: MountSpec, target: string): Promise<View> {
    const fuse = await FuseMount.mount({ ...this.opts.fuse, store: this.store, ref: spec.ref, target, readOnly: !spec.rw, logger: this.log });
    return { fuse, info: { ref: spec.ref, target, rw: spec.rw, capsuleId: fuse.capsuleId, kind: 'fuse', since: fuse.since } };
  }

  private async placeCopy(spec: MountSpec, target: string, reason: string): Promise<View> {
    const capsuleId = this.store.resolveId(spec.ref);
    const log = this.log.child({ capsule: capsuleId, target });
    await prepareTarget(target, log);
    const report = await placeContentCopy(this.store, capsuleId, target);
    log.warn('view.content-file', {
      ...report,
      requestedRw: spec.rw,
      reason,
      msg: `FUSE is unavailable, so ${target} holds a read-only COPY of capsule ${capsuleId} taken now: later changes to the capsule do not appear there and nothing written there reaches the capsule`,
    });
    return { info: { ref: spec.ref, target, rw: false, capsuleId, kind: 'content-file', since: new Date().toISOString() } };
  }

  async unmount(target: string): Promise<void> {
    await this.unmountOne(resolveTarget(target), false);
  }

  private async unmountOne(target: string, force: boolean): Promise<void> {
    const view = this.views.get(target);
    if (!view) throw notFound(`no view is mounted at ${target}`);
    if (this.busy.has(target)) throw new SpaceError('UNAVAILABLE', `the view at ${target} is being unmounted`, { errno: 'EBUSY' });
    this.busy.add(target);
    try {
      if (view.fuse) await view.fuse.unmount({ force });
      else await removeContentCopy(target);
      this.views.delete(target);
      this.log.info('view.unmounted', { target, capsule: view.info.capsuleId, kind: view.info.kind });
    } finally {
      this.busy.delete(target);
    }
  }

  list(): MountInfo[] {
    return [...this.views.values()].map((v) => ({ ...v.info }));
  }

  /** The FUSE mount serving `target` (its counters), if that view is a kernel mount. */
  fuseMount(target: string): FuseMount | undefined {
    return this.views.get(resolveTarget(target))?.fuse;
  }

  /** Unmount everything, best effort: a view that fails is logged and the others still go. */
  async closeAll(): Promise<void> {
    const results = await Promise.allSettled([...this.views.keys()].map((t) => this.unmountOne(t, true)));
    for (const r of results) if (r.status === 'rejected') this.log.error('views.close.failed', { err: r.reason });
  }
}

function isInside(p: string, dir: string): boolean {
  const rel = path.relative(dir, p);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

function resolveTarget(target: string): string {
  if (typeof target !== 'string' || !path.isAbsolute(target)) throw invalid(`target ${JSON.stringify(target)} must be an absolute path`);
  return path.resolve(target);
}

function checkSpec(spec: MountSpec): string {
  if (!spec || typeof spec.ref !== 'string' || spec.ref.length === 0) throw invalid('a capsule id or name (ref) is required');
  if (typeof spec.rw !== 'boolean') throw invalid('rw must be true or false');
  const target = resolveTarget(spec.target);
  if (target === '/') throw invalid('cannot mount a view on /');
  return target;
}
