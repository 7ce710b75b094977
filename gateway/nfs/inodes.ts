/**
 * Inode number -> path, per capsule. NFS addresses files by handle (an inode number) while the
 * store addresses them by path, so the view remembers where each inode it handed out lives:
 * (parent inode, name) pairs learnt from LOOKUP, READDIR, CREATE and RENAME.
 *
 * The table is a cache that can go stale (another front end renames or deletes; a restart
 * empties it), so a path is trusted only after the store confirmed it still leads to the inode.
 * That check is skipped while nothing moved: every metadata change in the capsule bumps `epoch`
 * (from the store's change events), and an entry confirmed in the current epoch is used as is —
 * a sequential READ stream costs no lookup at all.
 *
 * An inode the table does not know (first use of a handle after a restart) is found by walking
 * the tree once; the walk records every inode it passes, and at most one walk runs per epoch, so
 * handles of deleted files cost one walk, not one each.
 */
import { ROOT_INO } from '../../capsule/schema.js';
import type { DirEntry } from '../../capsule/types.js';
import type { NfsStore } from './backend.js';
import { Nfs3Status, NfsError, statusOf } from './status.js';

interface Entry {
  parent: number;
  name: string;
  /** Epoch in which the store last confirmed this entry's path; -1 = never. */
  confirmed: number;
}

export interface Listing {
  /** Children sorted by inode number (the order cookies follow). */
  entries: DirEntry[];
  at: number;
  epoch: number;
}

/**
 * READDIR cookies of both NFS versions: a child's cookie is its inode number plus this (the
 * values below are the start of a listing, "." and ".."), so cookies survive renames of siblings.
 */
export const CHILD_COOKIE_BASE = 2;

/** Index of the first child (listings are sorted by inode) whose cookie is past `cookie`. */
export function resumeIndex(children: readonly { attr: { ino: number } }[], cookie: number): number {
  let lo = 0;
  let hi = children.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (children[mid]!.attr.ino + CHILD_COOKIE_BASE <= cookie) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Directory listings are reused between the READDIR calls of one walk for this long. */
const LISTING_TTL_MS = 2000;
const MAX_LISTINGS = 64;

export const childPath = (dir: string, name: string): string => (dir ? `${dir}/${name}` : name);

export class CapsuleView {
  private readonly entries = new Map<number, Entry>();
  /** Inodes this view removed (numbers are never reused, so they stay dead). */
  private readonly dead = new Set<number>();
  /** Bumped on every metadata change in the capsule. */
  epoch = 0;
  /** Bumped on every change at all (data too): invalidates directory listings. */
  private contentEpoch = 0;
  private walkedEpoch = -1;
  private walking: Promise<void> | undefined;
  private readonly listings = new Map<number, Listing>();

  constructor(private readonly store: NfsStore, readonly capsuleId: string) {}

  /** A store change event for this capsule. */
  changed(kind: string): void {
    this.contentEpoch++;
    if (kind !== 'written') this.epoch++;
  }

  remember(ino: number, parent: number, name: string): void {
    if (ino === ROOT_INO) return;
    const e = this.entries.get(ino);
    if (e && e.parent === parent && e.name === name) return;
    this.entries.set(ino, { parent, name, confirmed: -1 });
  }

  /** This view removed the inode (or replaced it by a rename): its handles are STALE. */
  forget(ino: number): void {
    this.entries.delete(ino);
    if (this.dead.size > 100_000) this.dead.clear(); // a hint only; the walk still finds out
    this.dead.add(ino);
  }

  private compose(ino: number): string | undefined {
    const names: string[] = [];
    let cur = ino;
    while (cur !== ROOT_INO) {
      const e = this.entries.get(cur);
      if (!e || names.length > 4096) return undefined;
      names.push(e.name);
      cur = e.parent;
    }
    return names.reverse().join('/');
  }

  /** The path of `ino` when it was confirmed in this epoch (no store call), else undefined. */
  pathOfSync(ino: number): string | undefined {
    if (ino === ROOT_INO) return '';
    const e = this.entries.get(ino);
    if (!e || e.confirmed !== this.epoch) return undefined;
    return this.compose(ino);
  }

  /** The current path of `ino`; NfsError(STALE) when it no longer exists. */
  async pathOf(ino: number): Promise<string> {
    const fast = this.pathOfSync(ino);
    if (fast !== undefined) return fast;
    if (this.dead.has(ino)) throw new NfsError(Nfs3Status.STALE, `inode ${ino} was removed`);
    const p = await this.confirm(ino);
    if (p !== undefined) return p;
    if (this.store.inodePath) {
      const found = this.store.inodePath(this.capsuleId, ino);
      if (found === undefined) throw new NfsError(Nfs3Status.STALE, `inode ${ino} no longer exists`);
      await this.learnPath(found);
      const again = await this.confirm(ino);
      if (again !== undefined) return again;
    }
    if (this.walkedEpoch !== this.epoch) {
      await this.walk();
      const again = await this.confirm(ino);
      if (again !== undefined) return again;
    }
    throw new NfsError(Nfs3Status.STALE, `inode ${ino} no longer exists`);
  }

  /** Ask the store whether the remembered path of `ino` still leads to it. */
  private async confirm(ino: number): Promise<string | undefined> {
    const epoch = this.epoch;
    const p = this.compose(ino);
    if (p === undefined) return undefined;
    try {
      const a = await this.store.getattr(this.capsuleId, p);
      if (a.ino !== ino) return undefined;
    } catch (e) {
      const s = statusOf(e).status;
      if (s === Nfs3Status.NOENT || s === Nfs3Status.NOTDIR) return undefined;
      throw e;
    }
    const e = this.entries.get(ino);
    if (e) e.confirmed = epoch;
    return p;
  }

  /** Record every inode along a path (from the root down). */
  private async learnPath(p: string): Promise<void> {
    let parent = ROOT_INO;
    let cur = '';
    for (const name of p ? p.split('/') : []) {
      cur = childPath(cur, name);
      const a = await this.store.getattr(this.capsuleId, cur);
      this.remember(a.ino, parent, name);
      parent = a.ino;
    }
  }

  /** Walk the whole tree once, recording every inode (shared by concurrent callers). */
  private walk(): Promise<void> {
    if (!this.walking) {
      this.walking = this.doWalk().finally(() => (this.walking = undefined));
    }
    return this.walking;
  }

  private async doWalk(): Promise<void> {
    const epoch = this.epoch;
    const found = new Map<number, Entry>();
    const queue: { ino: number; path: string }[] = [{ ino: ROOT_INO, path: '' }];
    while (queue.length) {
      const dir = queue.shift()!;
      let list: DirEntry[];
      try {
        list = await this.store.readdir(this.capsuleId, dir.path);
      } catch (e) {
        const s = statusOf(e).status;
        if (s === Nfs3Status.NOENT || s === Nfs3Status.NOTDIR) continue; // moved while walking
        throw e;
      }
      for (const d of list) {
        found.set(d.attr.ino, { parent: dir.ino, name: d.name, confirmed: -1 });
        if (d.attr.type === 'dir') queue.push({ ino: d.attr.ino, path: childPath(dir.path, d.name) });
      }
    }
    // The walk saw the whole tree: it replaces what the table knew (which may be stale).
    this.entries.clear();
    for (const [ino, e] of found) this.entries.set(ino, e);
    this.walkedEpoch = epoch;
  }

  /** Children of a directory sorted by inode number, reused briefly while nothing changes. */
  async listing(dirIno: number, dirPath: string): Promise<Listing> {
    const hit = this.listings.get(dirIno);
    const now = Date.now();
    if (hit && hit.epoch === this.contentEpoch && now - hit.at < LISTING_TTL_MS) return hit;
    const epoch = this.contentEpoch;
    const entries = await this.store.readdir(this.capsuleId, dirPath);
    entries.sort((a, b) => a.attr.ino - b.attr.ino);
    for (const d of entries) this.remember(d.attr.ino, dirIno, d.name);
    const l: Listing = { entries, at: now, epoch };
    if (this.listings.size >= MAX_LISTINGS) this.listings.clear();
    this.listings.set(dirIno, l);
    return l;
  }
}
