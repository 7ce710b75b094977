/**
 * The capsule store: one data dir holding capsules (versioned file trees) whose file contents are
 * content-addressed, deduplicated, optionally compressed and encrypted segments.
 *
 *   <dir>/meta.db        SQLite (WAL): capsules, versions, inodes, extents, segments, keys
 *   <dir>/segments/aa/ID segment blobs (see segment-codec.ts)
 *   <dir>/tmp/           segments being written
 *   <dir>/keys/*.kek     key-encryption keys (standalone mode), 0600
 *   <dir>/owner.json     owner lock (one process owns a store)
 *
 * Crash safety comes from ordering: segment files are written (and renamed into place) before
 * the metadata transaction that references them commits, and deleted only after the transaction
 * that dropped their last reference commits. A kill -9 at any point therefore leaves committed
 * versions intact plus, at worst, temp files and unreferenced segments, which `open` removes.
 */
import Database from 'better-sqlite3';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { EventEmitter } from 'node:events';
import type { CapsuleApi, CloneOptions, CreateOptions, PutOptions } from './api.js';
import { IntegrityError, SpaceError, exists, fromFsError, invalid, notFound } from './errors.js';
import { FileKekProvider, type KekProvider, KEY_BYTES, unwrapKey, wrapKey } from './keys.js';
import { OwnerLock } from './lock.js';
import { silentLogger, type Logger } from './log.js';
import { defaultPolicy, validatePolicy, type Policy } from './policy.js';
import { normPath, parentAndName, splitPath } from './paths.js';
import { HEAD, ROOT_INO, SUBDIR_COUNT_SQL, T_DIR, T_FILE, migrate } from './schema.js';
import { SEGMENT_FRAMING_BYTES, decodeSegment, type SegmentKeys } from './segment-codec.js';
import { SegmentReclaimer, type ReclaimReport } from './reclaim.js';
import { isZero, sharedCodecPool, type CodecPool, type SegmentSink } from './codec-pool.js';
import { envInteger } from './env.js';
import { SegmentFiles } from './segment-files.js';
import { SegmentCache } from './cache.js';
import { HeldBytes, SegmentPool, sharedSegmentPool } from './segment-pool.js';
import { KeyedMutex } from './mutex.js';
import { DirtyFile, dirtyKey } from './dirty.js';
import { Coverage } from './coverage.js';
import type {
  CapsuleInfo, CapsuleStat, ChangeEvent, ChangeKind, DirEntry, FileAttr, FsckProblem, FsckReport, GcReport,
  RecoveryReport, SetAttr, StoreStat, VersionSel, BufferedWriteOptions,
} from './types.js';

export interface StoreOptions {
  logger?: Logger;
  kekProvider?: KekProvider;
  /** Verified plaintext segments kept in memory (default 64 MiB). */
  cacheBytes?: number;
  /** fdatasync each segment before the metadata that references it commits (default true). */
  fsync?: boolean;
  /** Buffered (filesystem view) writes held before a forced flush (default 64 MiB). */
  maxDirtyBytes?: number;
  /** Segment crypto: a worker pool (default, shared per process) or inline on the event loop. */
  codecPool?: CodecPool;
  /**
   * Delete segments as soon as nothing references them (default true; see reclaim.ts). Off:
   * they stay until `gc`.
   */
  reclaim?: boolean;
  /**
   * Write new segment files, and read those of encrypted capsules sequentially, with O_DIRECT,
   * past the page cache (default true unless the environment says SPACE_DIRECT_IO=0; falls back by itself
   * where the filesystem refuses it). See direct-write.ts and direct-read.ts.
   */
  directIo?: boolean;
  /**
   * Memory for cached plaintext (segment-pool.ts): the process's shared pool by default, none
   * with null or SPACE_SEGMENT_POOL=0 (each segment then gets a buffer of its own).
   */
  segmentPool?: SegmentPool | null;
  /**
   * Freed segment files kept for new segments to reuse (segment-files.ts explains why): default
   * 1024, or SPACE_SPARE_SEGMENT_FILES; 0 deletes every freed file. Their space counts as used
   * on the filesystem until reused, or deleted at close or when a write finds the disk full.
   */
  spareSegmentFiles?: number;
}

interface CapsuleRow {
  id: string;
  name: string;
  policy: string;
  domain: string;
  data_key: number | null;
  created: string;
  next_ino: number;
  origin: string | null;
}

interface InodeRow {
  ino: number;
  parent: number;
  name: string;
  type: number;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  atime: number;
  mtime: number;
  ctime: number;
}

interface ExtentRow {
  idx: number;
  seg: string;
  len: number;
}

interface Capsule {
  row: CapsuleRow;
  policy: Policy;
  keys: SegmentKeys;
}

const ID_RE = /^[a-z0-9]([-a-z0-9]{0,62}[a-z0-9])?$/;
const NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const MAX_FILE_SIZE = 2 ** 50;
const MAX_WATCH_BACKLOG = 10_000;
/**
 * Who owns inodes this process creates: its user and group, read once (each read is a system
 * call, and NFS metadata spent 7% of its time in them with one per create).
 */
const PROCESS_UID = process.getuid?.() ?? 0;
const PROCESS_GID = process.getgid?.() ?? 0;
/** Segments of one put being encoded or written at once. */
const PUT_WINDOW = 6;
/** Segments a stream reader keeps in flight ahead of its consumer. */
const READ_AHEAD = 8;
/**
 * Read-ahead of a sequential reader through the cache (prefetch): READ_AHEAD segments, or up to
 * this many when the cache holds sixteen times as much. Loads take a millisecond or more each
 * (file read and verification in a codec worker); a serial NFS client reading from a 3 GiB cache
 * waited for 10-20% of its 1 MiB READs with 8 ahead, and ran 5-10% faster with 24 (cold 1 GiB,
 * alternating runs).
 */
const MAX_PREFETCH = 24;
/** Full dirty segments of one file that start a background commit (write-behind). */
const WRITE_BEHIND_SEGMENTS = 4;
/** A stream's read memo: per capsule and path as the reader names it (tryReadSyncHeld). */
const readMemoKey = (c: Capsule, p: string) => `${c.row.id}:${p}`;
interface ReadMemo {
  mutations: number;
  node: InodeRow;
  /** Extent rows by segment index; null is a hole. */
  extents: Map<number, ExtentRow | null>;
}

/** One end segment of a hole punch: `from`..`to` within it is covered; `ext` is its committed extent. */
interface PunchEdge {
  idx: number;
  from: number;
  to: number;
  ext: ExtentRow | undefined;
  /** keep: nothing committed in range; delete: whole extent covered; trim: cut its length; rewrite: zero bytes inside it. */
  action: 'keep' | 'delete' | 'trim' | 'rewrite';
}

interface PunchPlan {
  first: number;
  last: number;
  /** End of the range, clipped at end-of-file. */
  end: number;
  committedSize: number;
  edges: PunchEdge[];
}

/** Stands for a hole in tryReadSync (never read from). */
const ZERO_SEGMENT = Buffer.alloc(0);

export class Store implements CapsuleApi {
  readonly events = new EventEmitter();
  readonly recovery: RecoveryReport;
  private readonly db: Database.Database;
  private readonly files: SegmentFiles;
  private readonly lock: OwnerLock;
  private readonly kek: KekProvider;
  private readonly log: Logger;
  private readonly cache: SegmentCache;
  private readonly pool: SegmentPool | null;
  private readonly capsules = new Map<string, Capsule>();
  private readonly dataKeys = new Map<number, Buffer>();
  private readonly dirty = new Map<string, DirtyFile>();
  private readonly fileLocks = new KeyedMutex();
  /** Segments referenced by writes not yet committed: GC must not take them. */
  private readonly pins = new Map<string, number>();
  private readonly maxDirty: number;
  private readonly codec: CodecPool;
  private readonly reclaimer: SegmentReclaimer | undefined;
  /** Segment loads in flight, so concurrent readers of one segment decode it once. */
  private readonly loading = new Map<string, Promise<Buffer>>();
  private readonly statements = new Map<string, Database.Statement>();
  /** Where the last read of each open file ended (sequential-read detection). */
  private readonly readEnds = new Map<string, number>();
  /** Number of metadata-changing statements run so far (see stmt()). */
  private mutations = 0;
  /** Per sequential stream: path lookup and extents, valid while `mutations` is unchanged. */
  private readonly readMemos = new Map<string, ReadMemo>();
  /** Per sequential stream: the highest segment index read-ahead has already been asked for. */
  private readonly prefetchedTo = new Map<string, number>();
  private closed = false;

  static open(dir: string, opts: StoreOptions = {}): Store {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const lock = OwnerLock.acquire(dir);
    try {
      return new Store(path.resolve(dir), lock, opts);
    } catch (e) {
      lock.release();
      throw e;
    }
  }

  private constructor(readonly dir: string, lock: OwnerLock, opts: StoreOptions) {
    this.lock = lock;
    this.log = opts.logger ?? silentLogger;
    this.kek = opts.kekProvider ?? new FileKekProvider(path.join(dir, 'keys'));
    this.pool = opts.segmentPool !== undefined ? opts.segmentPool : process.env.SPACE_SEGMENT_POOL === '0' ? null : sharedSegmentPool();
    const cacheBytes = opts.cacheBytes ?? 64 << 20;
    // The cache's budget, plus room for slots that readers still hold after the cache let go.
    this.pool?.raiseCap(cacheBytes + Math.floor(cacheBytes / 8) + (64 << 20));
    this.cache = new SegmentCache(cacheBytes, (data) => this.unpool(data));
    this.maxDirty = opts.maxDirtyBytes ?? 64 << 20;
    this.codec = opts.codecPool ?? sharedCodecPool();
    this.files = new SegmentFiles(dir, opts.fsync ?? true, opts.directIo ?? process.env.SPACE_DIRECT_IO !== '0', opts.spareSegmentFiles ?? envInteger(process.env, 'SPACE_SPARE_SEGMENT_FILES', 0, 1 << 20));
    try {
      this.db = new Database(path.join(dir, 'meta.db'));
      migrate(this.db);
    } catch (e) {
      throw fromFsError(e, 'opening the metadata store');
    }
    this.recovery = this.recover(lock.staleRemoved);
    if (opts.reclaim ?? true) {
      this.reclaimer = new SegmentReclaimer(this.db, {
        busy: (id) => this.pins.has(id) || this.loading.has(id),
        removeFile: (id) => {
          this.cache.delete(id);
          return this.files.removeSync(id);
        },
        removeFileLater: (id) => {
          this.cache.delete(id);
          let detached: string | null;
          try {
            detached = this.files.detachSync(id);
          } catch (e) {
            // The row is gone: the file is an orphan now, which the next open's recovery removes.
            this.log.warn('store.reclaim.detach_failed', { segment: id, err: e });
            return Promise.resolve(0);
          }
          return detached ? this.files.removeDetached(detached) : Promise.resolve(0);
        },
      }, (r) => this.log.info('store.reclaimed', { ...r }));
    }
    const r = this.recovery;
    if (r.tempFilesRemoved || r.orphanSegmentsRemoved || r.staleLockRemoved) this.log.info('store.recovered', { dir, ...r });
  }

  // ---------------------------------------------------------------- lifecycle

  /** Remove what an interrupted process left: temp files and segments no metadata references. */
  private recover(staleLockRemoved: boolean): RecoveryReport {
    const tempFilesRemoved = this.files.clearTmp();
    const known = this.stmt('SELECT 1 FROM segments WHERE id = ?').pluck();
    let orphanSegmentsRemoved = 0;
    for (const id of this.files.listIds()) {
      if (!known.get(id)) {
        this.files.removeSync(id);
        orphanSegmentsRemoved++;
      }
    }
    return { tempFilesRemoved, orphanSegmentsRemoved, staleLockRemoved };
  }

  setOwnerEndpoint(endpoint: string): void {
    this.lock.setEndpoint(endpoint);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flushAll();
    this.reclaimer?.runAll(); // what the last writes freed, before the notes go with the connection
    await this.reclaimer?.idle(); // and the files a background batch is still deleting
    this.files.dropSpares();
    this.closed = true;
    this.cache.clear(); // pooled memory goes back for the next store of this process
    this.db.close();
    this.lock.release();
    this.events.removeAllListeners();
  }

  private live(): void {
    if (this.closed) throw new SpaceError('UNAVAILABLE', 'store is closed');
  }

  /** Prepared statements, compiled once: preparing costs more than running most of them. */
  private stmt(sql: string): Database.Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      if (!st.reader) {
        // Every change to metadata goes through here: count them, so memos of lookups
        // (tryReadSync) know when they may be stale. Rolled-back changes count too (harmless).
        const statement = st;
        const run = statement.run.bind(statement);
        statement.run = (...args: unknown[]) => {
          this.mutations++;
          this.reclaimer?.schedule();
          return run(...args);
        };
      }
      this.statements.set(sql, st);
    }
    return st;
  }

  private emit(kind: ChangeKind, c: CapsuleRow, extra: { path?: string; version?: number } = {}): void {
    const ev: ChangeEvent = { kind, capsule: c.id, name: c.name, at: new Date().toISOString(), ...extra };
    this.events.emit('change', ev);
  }

  // ---------------------------------------------------------------- keys and capsules

  private domainHashKey(domain: string, kekRef: string | null): Buffer {
    const row = this.stmt('SELECT hash_key FROM domains WHERE name = ?').get(domain) as { hash_key: Buffer } | undefined;
    if (row) return kekRef ? unwrapKey(this.kek.kek(kekRef), row.hash_key, `domain ${domain}`) : row.hash_key;
    const key = crypto.randomBytes(KEY_BYTES);
    const stored = kekRef ? wrapKey(this.kek.kek(kekRef), key, `domain ${domain}`) : key;
    this.stmt('INSERT INTO domains (name, kek_ref, hash_key) VALUES (?, ?, ?)').run(domain, kekRef, stored);
    return key;
  }

  private dataKeyById = (id: number): Buffer => {
    const hit = this.dataKeys.get(id);
    if (hit) return hit;
    const row = this.stmt('SELECT kek_ref, wrapped FROM data_keys WHERE id = ?').get(id) as { kek_ref: string; wrapped: Buffer } | undefined;
    if (!row) throw new Error(`data key ${id} is unknown`);
    const key = unwrapKey(this.kek.kek(row.kek_ref), row.wrapped, `data key ${id}`);
    this.dataKeys.set(id, key);
    return key;
  };

  private loadCapsule(row: CapsuleRow): Capsule {
    const cached = this.capsules.get(row.id);
    if (cached) return cached;
    const policy = JSON.parse(row.policy) as Policy;
    const kekRef = policy.encryption.enabled ? policy.encryption.keyRef : null;
    const keys: SegmentKeys = { hashKey: this.domainHashKey(row.domain, kekRef) };
    if (row.data_key !== null) keys.dataKey = { id: row.data_key, key: this.dataKeyById(row.data_key) };
    const c = { row, policy, keys };
    this.capsules.set(row.id, c);
    return c;
  }

  private capsule(ref: string): Capsule {
    this.live();
    if (typeof ref !== 'string' || ref.length === 0) throw invalid('a capsule id or name is required');
    // By id from memory: this process is the only writer, and delete() drops the entry.
    const known = this.capsules.get(ref);
    if (known) return known;
    const row = this.stmt('SELECT * FROM capsules WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1').get(ref, ref, ref) as CapsuleRow | undefined;
    if (!row) throw notFound(`capsule ${ref} not found`);
    return this.loadCapsule(row);
  }

  resolveId(ref: string): string {
    return this.capsule(ref).row.id;
  }

  private info(c: Capsule): CapsuleInfo {
    const versions = this.stmt('SELECT version, created, logical_size FROM versions WHERE capsule = ? AND version > 0 ORDER BY version').all(c.row.id) as { version: number; created: string; logical_size: number }[];
    const info: CapsuleInfo = {
      id: c.row.id,
      name: c.row.name,
      policy: c.policy,
      createdAt: c.row.created,
      versions: versions.map((v) => ({ version: v.version, createdAt: v.created, logicalSize: v.logical_size })),
    };
    if (c.row.origin) info.origin = JSON.parse(c.row.origin) as { capsule: string; version: number | null };
    return info;
  }

  /** Insert the capsules row (and keys) for a new capsule; caller runs inside a transaction. */
  private insertCapsule(id: string, name: string, policy: Policy, origin: CapsuleInfo['origin'] | null, nextIno: number): CapsuleRow {
    const enc = policy.encryption.enabled;
    const domain = enc ? `kek:${policy.encryption.keyRef}` : 'plain';
    this.domainHashKey(domain, enc ? policy.encryption.keyRef : null);
    let dataKey: number | null = null;
    if (enc) {
      const key = crypto.randomBytes(KEY_BYTES);
      const res = this.stmt('INSERT INTO data_keys (kek_ref, wrapped) VALUES (?, ?)').run(policy.encryption.keyRef, Buffer.alloc(0));
      dataKey = Number(res.lastInsertRowid);
      this.stmt('UPDATE data_keys SET wrapped = ? WHERE id = ?').run(wrapKey(this.kek.kek(policy.encryption.keyRef), key, `data key ${dataKey}`), dataKey);
      this.dataKeys.set(dataKey, key);
    }
    const row: CapsuleRow = { id, name, policy: JSON.stringify(policy), domain, data_key: dataKey, created: new Date().toISOString(), next_ino: nextIno, origin: origin ? JSON.stringify(origin) : null };
    this.stmt('INSERT INTO capsules (id, name, policy, domain, data_key, created, next_ino, origin) VALUES (@id, @name, @policy, @domain, @data_key, @created, @next_ino, @origin)').run(row);
    return row;
  }

  private checkNewIdentity(opts: { id?: string; name?: string }): { id: string; name: string } {
    const id = opts.id ?? crypto.randomUUID();
    if (typeof id !== 'string' || !ID_RE.test(id)) throw invalid(`capsule id ${JSON.stringify(id)} must be a UUID or DNS label (lower-case letters, digits, '-'; at most 64 characters)`);
    const name = opts.name ?? id;
    if (typeof name !== 'string' || !NAME_RE.test(name)) throw invalid(`capsule name ${JSON.stringify(name)} must be a DNS subdomain name (lower-case letters, digits, '-' and '.')`);
    const clash = this.stmt('SELECT id, name FROM capsules WHERE id IN (?, ?) OR name IN (?, ?)').get(id, name, id, name) as { id: string; name: string } | undefined;
    if (clash) throw exists(`capsule ${clash.id === id || clash.name === id ? id : name} already exists`);
    return { id, name };
  }

  async create(opts: CreateOptions): Promise<CapsuleInfo> {
    this.live();
    const policy = opts.policy ? validatePolicy(opts.policy) : defaultPolicy();
    const { id, name } = this.checkNewIdentity(opts);
    if (opts.size !== undefined && (!Number.isSafeInteger(opts.size) || opts.size < 0 || opts.size > MAX_FILE_SIZE)) throw invalid(`size ${opts.size} must be a non-negative integer of at most 1 PiB`);
    const now = Date.now();
    const tx = this.db.transaction(() => {
      const row = this.insertCapsule(id, name, policy, null, opts.size !== undefined ? 3 : 2);
      this.insertInode(id, HEAD, { ino: ROOT_INO, parent: 0, name: '', type: T_DIR, mode: 0o755, uid: PROCESS_UID, gid: PROCESS_GID, size: 0, atime: now, mtime: now, ctime: now });
      if (opts.size !== undefined) {
        this.insertInode(id, HEAD, { ino: 2, parent: ROOT_INO, name: 'content', type: T_FILE, mode: 0o644, uid: PROCESS_UID, gid: PROCESS_GID, size: opts.size, atime: now, mtime: now, ctime: now });
      }
      return row;
    });
    let row: CapsuleRow;
    try {
      row = tx();
    } catch (e) {
      throw fromFsError(e, `creating capsule ${id}`);
    }
    const c = this.loadCapsule(row);
    this.log.info('capsule.created', { capsule: id, name, encrypted: policy.encryption.enabled, compression: policy.compression });
    this.emit('created', row);
    return this.info(c);
  }

  async get(ref: string): Promise<CapsuleInfo> {
    return this.info(this.capsule(ref));
  }

  async list(): Promise<CapsuleInfo[]> {
    this.live();
    const rows = this.stmt('SELECT * FROM capsules ORDER BY name').all() as CapsuleRow[];
    return rows.map((r) => this.info(this.loadCapsule(r)));
  }

  async delete(ref: string): Promise<void> {
    const c = this.capsule(ref);
    const id = c.row.id;
    for (const [k, d] of this.dirty) if (d.capsule === id) this.dirty.delete(k);
    this.db.transaction(() => {
      for (const t of ['extents', 'inodes', 'versions']) this.stmt(`DELETE FROM ${t} WHERE capsule = ?`).run(id);
      this.stmt('DELETE FROM capsules WHERE id = ?').run(id);
    })();
    this.capsules.delete(id);
    this.log.info('capsule.deleted', { capsule: id, name: c.row.name });
    this.emit('deleted', c.row);
  }

  // ---------------------------------------------------------------- inodes

  private insertInode(capsule: string, version: number, n: InodeRow): void {
    this.stmt('INSERT INTO inodes (capsule, version, ino, parent, name, type, mode, uid, gid, size, atime, mtime, ctime) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)')
      .run(capsule, version, n.ino, n.parent, n.name, n.type, n.mode, n.uid, n.gid, n.size, n.atime, n.mtime, n.ctime);
  }

  private inode(capsule: string, version: number, ino: number): InodeRow | undefined {
    return this.stmt('SELECT ino, parent, name, type, mode, uid, gid, size, atime, mtime, ctime FROM inodes WHERE capsule = ? AND version = ? AND ino = ?').get(capsule, version, ino) as InodeRow | undefined;
  }

  private child(capsule: string, version: number, parent: number, name: string): InodeRow | undefined {
    return this.stmt('SELECT ino, parent, name, type, mode, uid, gid, size, atime, mtime, ctime FROM inodes WHERE capsule = ? AND version = ? AND parent = ? AND name = ?').get(capsule, version, parent, name) as InodeRow | undefined;
  }

  private versionOf(c: Capsule, v: VersionSel): number {
    if (v === undefined || v === null) return HEAD;
    if (!Number.isInteger(v) || v < 1) throw invalid(`version ${v} must be a positive integer (versions start at 1; omit it for the live head)`);
    const ok = this.stmt('SELECT 1 FROM versions WHERE capsule = ? AND version = ?').get(c.row.id, v);
    if (!ok) throw notFound(`capsule ${c.row.name} has no version ${v}`);
    return v;
  }

  private lookup(c: Capsule, version: number, p: string): InodeRow;
  /** `ifExists`: undefined for a missing path instead of NOT_FOUND (no error to build and catch). */
  private lookup(c: Capsule, version: number, p: string, ifExists: true): InodeRow | undefined;
  private lookup(c: Capsule, version: number, p: string, ifExists = false): InodeRow | undefined {
    const parts = splitPath(p);
    if (parts.length === 0) {
      const root = this.inode(c.row.id, version, ROOT_INO);
      if (!root) throw new SpaceError('INTERNAL', `capsule ${c.row.name} has no root directory`);
      return root;
    }
    // Below the root, only the rows along the path are read: the root is a directory by
    // construction, and metadata-heavy clients (NFS asks for attributes with every reply) walk
    // paths tens of thousands of times a second.
    let node: InodeRow | undefined;
    for (let i = 0; i < parts.length; i++) {
      if (node && node.type !== T_DIR) throw new SpaceError('NOT_FOUND', `${parts.slice(0, i).join('/')} is not a directory in capsule ${c.row.name}`, { errno: 'ENOTDIR' });
      const next = this.child(c.row.id, version, node ? node.ino : ROOT_INO, parts[i]!);
      if (!next) {
        if (ifExists) return undefined;
        throw notFound(`${parts.slice(0, i + 1).join('/')} not found in capsule ${c.row.name}`);
      }
      node = next;
    }
    return node!;
  }

  private lookupFile(c: Capsule, version: number, p: string): InodeRow {
    const n = this.lookup(c, version, p);
    if (n.type !== T_FILE) throw new SpaceError('INVALID_ARGUMENT', `${p} is a directory in capsule ${c.row.name}`, { errno: 'EISDIR' });
    return n;
  }

  /** The path of an inode, walking up to the root (for messages and events). */
  private pathOfIno(capsule: string, version: number, ino: number): string {
    const q = this.stmt('SELECT parent, name FROM inodes WHERE capsule = ? AND version = ? AND ino = ?');
    const parts: string[] = [];
    for (let n = q.get(capsule, version, ino) as { parent: number; name: string } | undefined; n && n.parent !== 0; n = q.get(capsule, version, n.parent) as { parent: number; name: string } | undefined) {
      parts.unshift(n.name);
      if (parts.length > 4096) break; // a cycle would be corruption; never loop forever
    }
    return parts.join('/');
  }

  private allocIno(c: Capsule): number {
    const row = this.stmt('UPDATE capsules SET next_ino = next_ino + 1 WHERE id = ? RETURNING next_ino - 1 AS ino').get(c.row.id) as { ino: number };
    return row.ino;
  }

  /** Make every directory along `parts` (mkdir -p); returns the last one's inode number. */
  private ensureDirs(c: Capsule, parts: string[], now: number): number {
    let ino = ROOT_INO;
    for (const name of parts) {
      const n = this.child(c.row.id, HEAD, ino, name);
      if (n) {
        if (n.type !== T_DIR) throw new SpaceError('FAILED_PRECONDITION', `${name} is a file, not a directory`, { errno: 'ENOTDIR' });
        ino = n.ino;
        continue;
      }
      const newIno = this.allocIno(c);
      this.insertInode(c.row.id, HEAD, { ino: newIno, parent: ino, name, type: T_DIR, mode: 0o755, uid: PROCESS_UID, gid: PROCESS_GID, size: 0, atime: now, mtime: now, ctime: now });
      ino = newIno;
    }
    return ino;
  }

  /** `committed`: the file's committed extent bytes when the caller knows them (see getattr). */
  private attr(c: Capsule, version: number, n: InodeRow, committed?: number): FileAttr {
    let size = n.size;
    let mtime = n.mtime;
    let allocated = 0;
    let nlink = 1;
    if (n.type === T_FILE) {
      const d = version === HEAD ? this.dirty.get(dirtyKey(c.row.id, n.ino)) : undefined;
      if (d) {
        size = d.size;
        mtime = d.mtimeMs;
      }
      allocated = (committed ?? this.committedBytes(c, version, n.ino)) + (d ? d.bytes() : 0);
      allocated = Math.min(allocated, Math.max(size, 0) + (d ? d.segSize : 0));
    } else {
      nlink = 2 + (this.stmt(SUBDIR_COUNT_SQL).pluck().get(c.row.id, version, n.ino, T_DIR) as number);
    }
    return { ino: n.ino, type: n.type === T_DIR ? 'dir' : 'file', mode: n.mode, uid: n.uid, gid: n.gid, size, nlink, atimeMs: n.atime, mtimeMs: mtime, ctimeMs: n.ctime, allocated };
  }

  private committedBytes(c: Capsule, version: number, ino: number): number {
    return this.stmt('SELECT COALESCE(SUM(len), 0) FROM extents WHERE capsule = ? AND version = ? AND ino = ?').pluck().get(c.row.id, version, ino) as number;
  }

  /**
   * Per path: the inode row and committed extent bytes of the last getattr, valid while no
   * metadata has changed (`mutations`). Protocol views ask for attributes with every READ
   * (NFS post-op attributes); the lookup walks the path and the sum reads every extent row of
   * the file, a millisecond for a large file. Buffered (dirty) state is laid over them fresh.
   */
  private readonly attrMemos = new Map<string, { mutations: number; row: InodeRow; committed: number | undefined }>();

  async getattr(ref: string, p: string, version?: VersionSel): Promise<FileAttr> {
    return this.attrsOf(ref, p, version, false) as FileAttr;
  }

  /**
   * getattr, or undefined when the path does not exist. For callers that expect "not there" as
   * often as not (NFS CREATE checks for the name first): no error is built and thrown for it.
   */
  async getattrIfExists(ref: string, p: string, version?: VersionSel): Promise<FileAttr | undefined> {
    return this.attrsOf(ref, p, version, true);
  }

  private attrsOf(ref: string, p: string, version: VersionSel, ifExists: boolean): FileAttr | undefined {
    const c = this.capsule(ref);
    p = normPath(p);
    const v = this.versionOf(c, version);
    const key = `${c.row.id}:${v}:${p}`;
    let m = this.attrMemos.get(key);
    if (!m || m.mutations !== this.mutations) {
      const row = ifExists ? this.lookup(c, v, p, true) : this.lookup(c, v, p);
      if (!row) return undefined;
      if (this.attrMemos.size >= 1024) this.attrMemos.clear();
      m = { mutations: this.mutations, row: { ...row }, committed: row.type === T_FILE ? this.committedBytes(c, v, row.ino) : undefined };
      this.attrMemos.set(key, m);
    }
    return this.attr(c, v, m.row, m.committed);
  }

  async readdir(ref: string, p: string, version?: VersionSel): Promise<DirEntry[]> {
    const c = this.capsule(ref);
    p = normPath(p);
    const v = this.versionOf(c, version);
    const dir = this.lookup(c, v, p);
    if (dir.type !== T_DIR) throw new SpaceError('FAILED_PRECONDITION', `${p} is not a directory in capsule ${c.row.name}`, { errno: 'ENOTDIR' });
    const rows = this.stmt('SELECT ino, parent, name, type, mode, uid, gid, size, atime, mtime, ctime FROM inodes WHERE capsule = ? AND version = ? AND parent = ? ORDER BY name').all(c.row.id, v, dir.ino) as InodeRow[];
    return rows.map((r) => ({ name: r.name, attr: this.attr(c, v, r) }));
  }

  private createNode(ref: string, p: string, type: number, mode: number): FileAttr {
    const c = this.capsule(ref);
    p = normPath(p);
    const { parent, name } = parentAndName(p);
    const now = Date.now();
    const n = this.db.transaction(() => {
      const dir = this.lookup(c, HEAD, parent.join('/'));
      if (dir.type !== T_DIR) throw new SpaceError('FAILED_PRECONDITION', `${parent.join('/')} is not a directory`, { errno: 'ENOTDIR' });
      if (this.child(c.row.id, HEAD, dir.ino, name)) throw exists(`${p} already exists in capsule ${c.row.name}`);
      const row: InodeRow = { ino: this.allocIno(c), parent: dir.ino, name, type, mode: mode & 0o7777, uid: PROCESS_UID, gid: PROCESS_GID, size: 0, atime: now, mtime: now, ctime: now };
      this.insertInode(c.row.id, HEAD, row);
      this.stmt('UPDATE inodes SET mtime = ?, ctime = ? WHERE capsule = ? AND version = 0 AND ino = ?').run(now, now, c.row.id, dir.ino);
      return row;
    })();
    this.emit('meta', c.row, { path: p });
    return this.attr(c, HEAD, n);
  }

  async mkdir(ref: string, p: string, mode = 0o755): Promise<FileAttr> {
    return this.createNode(ref, p, T_DIR, mode);
  }

  async createFile(ref: string, p: string, mode = 0o644): Promise<FileAttr> {
    return this.createNode(ref, p, T_FILE, mode);
  }

  private removeNode(ref: string, p: string, wantDir: boolean): void {
    const c = this.capsule(ref);
    p = normPath(p);
    const now = Date.now();
    this.db.transaction(() => {
      const n = this.lookup(c, HEAD, p);
      if (n.ino === ROOT_INO) throw invalid('the capsule root cannot be removed');
      if (wantDir && n.type !== T_DIR) throw new SpaceError('FAILED_PRECONDITION', `${p} is not a directory`, { errno: 'ENOTDIR' });
      if (!wantDir && n.type === T_DIR) throw new SpaceError('FAILED_PRECONDITION', `${p} is a directory`, { errno: 'EISDIR' });
      if (wantDir && this.stmt('SELECT 1 FROM inodes WHERE capsule = ? AND version = 0 AND parent = ? LIMIT 1').get(c.row.id, n.ino)) {
        throw new SpaceError('FAILED_PRECONDITION', `directory ${p} is not empty`, { errno: 'ENOTEMPTY' });
      }
      this.dropInode(c, n.ino);
      this.stmt('UPDATE inodes SET mtime = ?, ctime = ? WHERE capsule = ? AND version = 0 AND ino = ?').run(now, now, c.row.id, n.parent);
    })();
    this.emit('meta', c.row, { path: p });
  }

  private dropInode(c: Capsule, ino: number): void {
    this.stmt('DELETE FROM extents WHERE capsule = ? AND version = 0 AND ino = ?').run(c.row.id, ino);
    this.stmt('DELETE FROM inodes WHERE capsule = ? AND version = 0 AND ino = ?').run(c.row.id, ino);
    this.dirty.delete(dirtyKey(c.row.id, ino));
  }

  async unlink(ref: string, p: string): Promise<void> {
    this.removeNode(ref, p, false);
  }

  async rmdir(ref: string, p: string): Promise<void> {
    this.removeNode(ref, p, true);
  }

  async rename(ref: string, from: string, to: string): Promise<void> {
    const c = this.capsule(ref);
    from = normPath(from);
    to = normPath(to);
    const src = parentAndName(from);
    const dst = parentAndName(to);
    const now = Date.now();
    this.db.transaction(() => {
      const node = this.lookup(c, HEAD, from);
      const dstDir = this.lookup(c, HEAD, dst.parent.join('/'));
      if (dstDir.type !== T_DIR) throw new SpaceError('FAILED_PRECONDITION', `${dst.parent.join('/')} is not a directory`, { errno: 'ENOTDIR' });
      // A directory may not move into its own subtree.
      for (let a: InodeRow | undefined = dstDir; a && a.ino !== ROOT_INO; a = this.inode(c.row.id, HEAD, a.parent)) {
        if (a.ino === node.ino) throw invalid(`cannot move ${from} into itself`);
      }
      if (node.type === T_DIR && dstDir.ino === node.ino) throw invalid(`cannot move ${from} into itself`);
      const existing = this.child(c.row.id, HEAD, dstDir.ino, dst.name);
      if (existing && existing.ino === node.ino) return;
      if (existing) {
        if (existing.type === T_DIR && node.type !== T_DIR) throw new SpaceError('FAILED_PRECONDITION', `${to} is a directory`, { errno: 'EISDIR' });
        if (existing.type !== T_DIR && node.type === T_DIR) throw new SpaceError('FAILED_PRECONDITION', `${to} is not a directory`, { errno: 'ENOTDIR' });
        if (existing.type === T_DIR && this.stmt('SELECT 1 FROM inodes WHERE capsule = ? AND version = 0 AND parent = ? LIMIT 1').get(c.row.id, existing.ino)) {
          throw new SpaceError('FAILED_PRECONDITION', `directory ${to} is not empty`, { errno: 'ENOTEMPTY' });
        }
        this.dropInode(c, existing.ino);
      }
      this.stmt('UPDATE inodes SET parent = ?, name = ?, ctime = ? WHERE capsule = ? AND version = 0 AND ino = ?').run(dstDir.ino, dst.name, now, c.row.id, node.ino);
      this.stmt('UPDATE inodes SET mtime = ?, ctime = ? WHERE capsule = ? AND version = 0 AND ino IN (?, ?)').run(now, now, c.row.id, node.parent, dstDir.ino);
    })();
    void src;
    this.emit('meta', c.row, { path: to });
  }

  async setattr(ref: string, p: string, a: SetAttr): Promise<FileAttr> {
    const c = this.capsule(ref);
    p = normPath(p);
    const n = this.lookup(c, HEAD, p);
    if (a.size !== undefined) {
      if (n.type !== T_FILE) throw new SpaceError('INVALID_ARGUMENT', `${p} is a directory`, { errno: 'EISDIR' });
      await this.truncate(ref, p, a.size);
    }
    const now = Date.now();
    const sets: string[] = [];
    const vals: number[] = [];
    const num = (k: string, v: number | undefined, max: number) => {
      if (v === undefined) return;
      if (!Number.isFinite(v) || v < 0 || v > max) throw invalid(`${k} ${v} is out of range`);
      sets.push(`${k} = ?`);
      vals.push(v);
    };
    num('mode', a.mode === undefined ? undefined : a.mode & 0o7777, 0o7777);
    num('uid', a.uid, 2 ** 32 - 1);
    num('gid', a.gid, 2 ** 32 - 1);
    num('atime', a.atimeMs, 2 ** 53);
    num('mtime', a.mtimeMs, 2 ** 53);
    if (a.mtimeMs !== undefined) {
      const d = this.dirty.get(dirtyKey(c.row.id, n.ino));
      if (d) d.mtimeMs = a.mtimeMs;
    }
    if (sets.length) {
      this.stmt(`UPDATE inodes SET ${sets.join(', ')}, ctime = ? WHERE capsule = ? AND version = 0 AND ino = ?`).run(...vals, now, c.row.id, n.ino);
      this.emit('meta', c.row, { path: p });
    }
    return this.attr(c, HEAD, this.inode(c.row.id, HEAD, n.ino)!);
  }

  // ---------------------------------------------------------------- segments

  private pin(id: string): void {
    this.pins.set(id, (this.pins.get(id) ?? 0) + 1);
  }

  private unpin(id: string): void {
    const n = (this.pins.get(id) ?? 1) - 1;
    if (n <= 0) this.pins.delete(id);
    else this.pins.set(id, n);
  }

  /**
   * Store one segment's plaintext (deduplicated) and return its address; the caller unpins it
   * once the transaction that references it has committed. All-zero segments return null:
   * they are holes and take no space. With `transfer`, `plain` is handed to a codec worker
   * without a copy and must not be used afterwards. With `syncs`, the codec worker does not sync
   * the file it writes: its sync (files.sync) is started here and added to `syncs`, which the
   * caller must await before it commits anything that references the segment.
   */
  private async storeSegment(c: Capsule, plain: Buffer, known: Set<string>, transfer = false, syncs?: Promise<void>[]): Promise<{ id: string; plen: number; clen: number } | null> {
    const plen = plain.length;
    let r: Awaited<ReturnType<CodecPool['encodeAndWrite']>>;
    const syncLater = syncs !== undefined && !this.codec.inline; // inline encoding writes (and syncs) files itself
    const write = (bytes: Buffer) => this.codec.encodeAndWrite(bytes, c.policy.compression, c.keys, this.sinkWithSpare(syncLater), transfer);
    const droppedBefore = this.files.sparesDropped;
    try {
      try {
        r = await write(plain);
      } catch (e) {
        // A full disk: the spare files are space we can give back; then once more. Concurrent
        // writes fail together: whichever comes first drops the spares, and all of them retry.
        // A transferred segment comes back with the error (CodecPool.encodeAndWrite).
        const again = transfer ? (e as { plain?: Buffer }).plain : plain;
        if ((e as NodeJS.ErrnoException).code !== 'ENOSPC' || !again) throw e;
        this.files.dropSpares();
        if (this.files.sparesDropped === droppedBefore) throw e;
        r = await write(again);
      }
    } catch (e) {
      throw fromFsError(e, 'writing a segment');
    }
    if (!r) return null;
    const { id, clen } = r;
    this.pin(id);
    if (known.has(id)) return { id, plen, clen };
    // Pinned now, so GC will not take it; but an unreferenced older copy could have been
    // collected between the worker's look and the pin: make sure the file is there.
    if (!this.files.exists(id)) {
      if (!r.blob) {
        this.unpin(id);
        throw new SpaceError('UNAVAILABLE', `segment ${id.slice(0, 16)} was collected while being stored; retry`);
      }
      try {
        await this.files.write(id, r.blob);
      } catch (e) {
        this.unpin(id);
        throw e;
      }
    } else if (syncLater) {
      // Also when the worker found the file there: it may be another flush's, not synced yet.
      const synced = this.files.sync(id);
      synced.catch(() => undefined); // the caller awaits it after its other writes (or fails first)
      syncs!.push(synced);
    }
    known.add(id);
    return { id, plen, clen };
  }

  /** Where a codec worker writes a new segment: with a spare file to reuse when there is one. */
  private sinkWithSpare(syncLater = false): SegmentSink {
    const sink = this.files.sink;
    if (syncLater) sink.syncLater = true;
    if (!this.codec.inline) sink.spare = this.files.takeSpare(); // inline encoding writes no file
    return sink;
  }

  private insertSegmentRow(c: Capsule, s: { id: string; plen: number; clen: number }): void {
    this.stmt('INSERT INTO segments (id, domain, plen, clen) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO NOTHING').run(s.id, c.row.domain, s.plen, s.clen);
  }

  /**
   * Verified plaintext of a segment; integrity failures name capsule, file and offset.
   * `streaming`: part of a sequential read (a stream, or read-ahead), whose segment files may be
   * read past the page cache (direct-read.ts); random reads keep the page cache, which holds a
   * working set larger than the segment cache.
   *
   * Held: release() the result once its bytes are copied or written out, and the pooled memory
   * under them can serve another segment (keep() instead when they go to code that may hold on
   * to them). The holds are taken in promise continuations of the load, before the load's own hold ends
   * (at the next macrotask, see decodeFromDisk), so no slot is reused in between.
   */
  private holdSegment(c: Capsule, p: string, idx: number, seg: string, cache = true, streaming = false): Promise<HeldBytes> {
    const hit = this.cache.get(seg);
    if (hit) return Promise.resolve(this.holdOf(hit));
    const inFlight = this.loading.get(seg);
    if (inFlight) {
      return inFlight.then(
        (b) => this.holdOf(b),
        () => this.decodeFromDisk(c, p, idx, seg, cache, streaming).then((b) => this.holdOf(b)),
      );
    }
    const job = this.decodeFromDisk(c, p, idx, seg, cache, streaming).finally(() => this.loading.delete(seg));
    this.loading.set(seg, job);
    return job.then((b) => this.holdOf(b));
  }

  /** A hold on `buf` (one more holder of its pooled slot, when it lives in one). */
  private holdOf(buf: Buffer): HeldBytes {
    return this.pool ? this.pool.hold(buf) : new HeldBytes(buf);
  }

  /** The cache let go of `data`: its slot, if pooled, loses that holder. */
  private unpool(data: Buffer): void {
    const slot = this.pool?.slotOf(data);
    if (slot) this.pool!.release(slot);
  }

  private async decodeFromDisk(c: Capsule, p: string, idx: number, seg: string, cache: boolean, streaming: boolean): Promise<Buffer> {
    const offset = idx * c.policy.segmentSize;
    const damaged = (reason: string) => {
      this.events.emit('integrity', { capsule: c.row.id, file: p, offset, segment: seg });
      this.log.error('segment.integrity', { capsule: c.row.id, file: p, offset, segment: seg, reason });
      return new IntegrityError(c.row.name, p, offset, reason, seg);
    };
    // What the cache will keep goes into pooled memory (segment-pool.ts). Unencrypted segments:
    // their plaintext is the file's bytes in place, so the worker reads the file into the slot
    // (O_DIRECT when streaming) and verifies it there. Encrypted ones: the worker decrypts into
    // the slot. Decompressed plaintext is a transform's output in a buffer of its own (the slot
    // then goes back at once).
    const slot = cache && !this.closed ? this.pool?.take(SegmentPool.slotBytesFor(c.policy.segmentSize, SEGMENT_FRAMING_BYTES)) ?? null : null;
    let plain: Buffer | null;
    try {
      // The worker reads the file too: the event loop only learns the verified plaintext.
      plain = await this.codec.readAndDecode(seg, this.files.pathOf(seg), c.keys.hashKey, c.keys.dataKey, this.dataKeyById, this.files.direct && streaming, slot?.ref());
    } catch (e) {
      if (slot) this.pool!.release(slot);
      throw damaged((e as Error).message);
    }
    const inSlot = slot !== null && plain !== null && plain.buffer === slot.memory;
    if (slot && !inSlot) this.pool!.release(slot); // compressed, or too large for the slot
    if (!plain) throw damaged('segment is missing');
    if (inSlot) {
      this.pool!.register(plain, slot!);
      // The load's own hold lasts until the next macrotask: the continuations of this promise
      // (holdSegment) take theirs first.
      setImmediate(() => this.pool!.release(slot!));
    }
    if (cache && !this.closed && this.cache.set(seg, plain)) {
      if (inSlot) this.pool!.addRef(slot!); // the cache's hold, given back by unpool()
    } else if (inSlot) {
      slot!.kept = true; // not cached after all: whoever receives it may keep it
    }
    return plain;
  }

  private extent(c: Capsule, version: number, ino: number, idx: number): ExtentRow | undefined {
    return this.stmt('SELECT idx, seg, len FROM extents WHERE capsule = ? AND version = ? AND ino = ? AND idx = ?').get(c.row.id, version, ino, idx) as ExtentRow | undefined;
  }

  // ---------------------------------------------------------------- data path

  async put(ref: string, p: string, source: AsyncIterable<Uint8Array>, opts: PutOptions = {}): Promise<FileAttr> {
    p = normPath(p);
    let c: Capsule;
    try {
      c = this.capsule(ref);
    } catch (e) {
      if (!(e instanceof SpaceError && e.code === 'NOT_FOUND' && opts.createWith)) throw e;
      const identity = opts.createWith.id || opts.createWith.name ? {} : ID_RE.test(ref) ? { id: ref } : { name: ref };
      await this.create({ ...opts.createWith, ...identity });
      c = this.capsule(ref);
    }
    const { parent, name } = parentAndName(p);
    const segSize = c.policy.segmentSize;
    const extents: { idx: number; id: string; plen: number; clen: number }[] = [];
    const pinned: string[] = [];
    const known = new Set<string>();
    let size = 0;
    let idx = 0;
    let buf = this.codec.segmentBuffer(segSize);
    let fill = 0;
    // Segments are encoded by the codec pool and written while the next ones are read in:
    // a bounded window keeps every core busy and memory at a few segments.
    const inFlight = new Set<Promise<void>>();
    let failure: unknown;
    const window = PUT_WINDOW;
    const flushSegment = async () => {
      const plain = fill === segSize ? buf : buf.subarray(0, fill); // copied by the pool (not whole)
      const myIdx = idx++;
      fill = 0;
      buf = this.codec.segmentBuffer(segSize); // the old buffer now belongs to the codec worker
      const job = this.storeSegment(c, plain, known, true).then(
        (s) => {
          if (s) {
            pinned.push(s.id);
            extents.push({ idx: myIdx, ...s });
          }
        },
        (e) => {
          failure ??= e;
        },
      );
      inFlight.add(job);
      void job.finally(() => inFlight.delete(job));
      if (inFlight.size >= window) await Promise.race(inFlight);
      if (failure) throw failure;
    };
    const drain = async () => {
      await Promise.all(inFlight);
      if (failure) throw failure;
    };
    try {
      try {
        for await (const chunk of source) {
          let off = 0;
          const bytes = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
          while (off < bytes.length) {
            const n = Math.min(segSize - fill, bytes.length - off);
            bytes.copy(buf, fill, off, off + n);
            fill += n;
            off += n;
            size += n;
            if (fill === segSize) await flushSegment();
          }
          if (size > MAX_FILE_SIZE) throw invalid('file is larger than 1 PiB');
        }
        if (fill > 0) await flushSegment();
      } finally {
        await Promise.allSettled(inFlight); // never leave writes running behind an error
      }
      await drain();
      // Commit under the file's lock so a flush of buffered writes to the same file cannot land
      // after (and on top of) this replacement.
      let existing: InodeRow | undefined;
      try {
        existing = this.lookup(c, HEAD, p);
      } catch {
        existing = undefined;
      }
      const lockKey = existing ? dirtyKey(c.row.id, existing.ino) : `new:${c.row.id}:${p}`;
      const ino = await this.fileLocks.run(lockKey, async () => this.db.transaction(() => {
        const now = Date.now();
        const dirIno = this.ensureDirs(c, parent, now);
        let node = this.child(c.row.id, HEAD, dirIno, name);
        if (node && node.type === T_DIR) throw new SpaceError('FAILED_PRECONDITION', `${p} is a directory`, { errno: 'EISDIR' });
        if (!node) {
          node = { ino: this.allocIno(c), parent: dirIno, name, type: T_FILE, mode: (opts.mode ?? 0o644) & 0o7777, uid: PROCESS_UID, gid: PROCESS_GID, size, atime: now, mtime: now, ctime: now };
          this.insertInode(c.row.id, HEAD, node);
        } else {
          this.stmt('DELETE FROM extents WHERE capsule = ? AND version = 0 AND ino = ?').run(c.row.id, node.ino);
          this.stmt('UPDATE inodes SET size = ?, mtime = ?, ctime = ? WHERE capsule = ? AND version = 0 AND ino = ?').run(size, now, now, c.row.id, node.ino);
        }
        const ins = this.stmt('INSERT INTO extents (capsule, version, ino, idx, seg, len) VALUES (?, 0, ?, ?, ?, ?)');
        for (const e of extents) {
          this.insertSegmentRow(c, e);
          ins.run(c.row.id, node.ino, e.idx, e.id, e.plen);
        }
        return node.ino;
      })());
      // A whole-file put replaces anything a filesystem view had buffered for this file.
      this.dirty.delete(dirtyKey(c.row.id, ino));
      this.log.info('capsule.put', { capsule: c.row.id, path: p, bytes: size, segments: extents.length });
      this.emit('written', c.row, { path: p });
      return this.attr(c, HEAD, this.inode(c.row.id, HEAD, ino)!);
    } catch (e) {
      throw fromFsError(e, `storing ${p} in capsule ${c.row.name}`);
    } finally {
      for (const id of pinned) this.unpin(id);
    }
  }

  async read(ref: string, p: string, offset: number, length: number, version?: VersionSel): Promise<Buffer> {
    return (await this.readRange(ref, p, offset, length, version, false)).keep();
  }

  /**
   * read() for a caller that says when it is done with the bytes (a view that sends them and
   * releases once the socket took them): release() the result, and the segment memory under it
   * can be reused once the cache lets go of it too (segment-pool.ts).
   */
  readHeld(ref: string, p: string, offset: number, length: number): Promise<HeldBytes> {
    return this.readRange(ref, p, offset, length, undefined, false);
  }

  /**
   * `streaming`: the caller reads whole segments in order and keeps its own read-ahead, so the
   * segments bypass the LRU (a 1 GiB stream would otherwise churn it and hold 64 MiB for nothing).
   */
  private async readRange(ref: string, p: string, offset: number, length: number, version: VersionSel, streaming: boolean): Promise<HeldBytes> {
    const c = this.capsule(ref);
    p = normPath(p);
    const v = this.versionOf(c, version);
    checkRange(offset, length);
    const n = this.lookupFile(c, v, p);
    const d = v === HEAD ? this.dirty.get(dirtyKey(c.row.id, n.ino)) : undefined;
    const size = d ? d.size : n.size;
    if (offset >= size || length === 0) return new HeldBytes(Buffer.alloc(0));
    const end = Math.min(size, offset + length);
    const segSize = c.policy.segmentSize;
    const first = Math.floor(offset / segSize);
    const last = Math.floor((end - 1) / segSize);
    // A read that starts where the previous one on this file ended is sequential: fetch the
    // next segments too, so the reader rarely waits for a decode (FUSE and NFS read 128 KiB at a time).
    const streamKey = `${c.row.id}:${v}:${n.ino}`;
    const lastEnd = this.readEnds.get(streamKey);
    // Near the previous end counts too: the kernel keeps several read-ahead requests in flight.
    const sequential = !streaming && lastEnd !== undefined && Math.abs(offset - lastEnd) <= 2 * c.policy.segmentSize;
    if (this.readEnds.size > 4096) {
      this.readEnds.clear();
      this.prefetchedTo.clear();
    }
    this.readEnds.set(streamKey, end);
    if (!sequential) this.prefetchedTo.set(streamKey, last); // a seek restarts the window
    const exts = this.stmt('SELECT idx, seg, len FROM extents WHERE capsule = ? AND version = ? AND ino = ? AND idx BETWEEN ? AND ?').all(c.row.id, v, n.ino, first, last) as ExtentRow[];
    const byIdx = new Map(exts.map((e) => [e.idx, e]));
    if (sequential && v === HEAD) this.prefetch(c, p, n.ino, streamKey, last, d);
    if (first === last && !d?.lookup(first)) {
      // Within one committed segment: hand out a view of the verified plaintext, no copy.
      const e = byIdx.get(first);
      const from = offset - first * segSize;
      const to = end - first * segSize;
      if (e && to <= e.len) return (await this.holdSegment(c, p, first, e.seg, !streaming, streaming || sequential)).subarray(from, to);
    }
    // Several segments: load them concurrently, then assemble (dirty data wins, holes are zeros).
    // The buffered segments are taken now, with the extent rows: a flush that commits while the
    // loads run removes them from the dirty file, and its new extents are not in `byIdx`.
    const buffers = new Map<number, Buffer>();
    const loads = new Map<number, Promise<HeldBytes>>();
    for (let idx = first; idx <= last; idx++) {
      const buffered = d?.lookup(idx);
      const e = byIdx.get(idx);
      if (buffered) {
        buffers.set(idx, d!.expose(buffered)); // used after the loads below: keep its memory
        // Partly written over bytes that were never loaded: the read needs those too.
        const segStart = idx * segSize;
        if (e && d!.lacks(buffered, Math.max(offset, segStart) - segStart, Math.min(end, segStart + segSize) - segStart)) {
          loads.set(idx, this.holdSegment(c, p, idx, e.seg, !streaming, streaming || sequential));
        }
        continue;
      }
      if (e) loads.set(idx, this.holdSegment(c, p, idx, e.seg, !streaming, streaming || sequential));
    }
    for (const l of loads.values()) l.catch(() => {}); // each is awaited below
    try {
      return new HeldBytes(await this.assemble(offset, end, segSize, first, last, byIdx, buffers, loads, d));
    } finally {
      // Copied (or failed): every hold taken above goes back.
      for (const l of loads.values()) l.then((h) => h.release(), () => {});
    }
  }

  /** The bytes of a read over several segments: committed ones, buffered writes over them, zeros in holes. */
  private async assemble(offset: number, end: number, segSize: number, first: number, last: number, byIdx: Map<number, ExtentRow>, buffers: Map<number, Buffer>, loads: Map<number, Promise<HeldBytes>>, d: DirtyFile | undefined): Promise<Buffer> {
    const out = Buffer.alloc(end - offset);
    for (let idx = first; idx <= last; idx++) {
      const segStart = idx * segSize;
      const from = Math.max(offset, segStart) - segStart;
      const to = Math.min(end, segStart + segSize) - segStart;
      const dst = segStart + from - offset;
      const buffered = buffers.get(idx);
      const base = loads.get(idx);
      if (buffered && !base) {
        buffered.copy(out, dst, from, to);
        continue;
      }
      if (buffered) {
        // The committed bytes first, then whatever the writes set (as covered at this moment).
        const e = byIdx.get(idx)!;
        const plain = (await base!).data;
        if (from < e.len) plain.copy(out, dst, from, Math.min(to, e.len, plain.length));
        const cov = d!.unmerged.get(buffered);
        if (!cov) buffered.copy(out, dst, from, to); // merged meanwhile: the buffer is whole
        else {
          for (const [x, y] of cov.set()) {
            const a = Math.max(x, from);
            const b = Math.min(y, to);
            if (b > a) buffered.copy(out, dst + a - from, a, b);
          }
          // Past the committed length the buffer is authoritative (zeros or written bytes).
          if (to > cov.baseLen) buffered.copy(out, dst + Math.max(from, cov.baseLen) - from, Math.max(from, cov.baseLen), to);
        }
        continue;
      }
      const e = byIdx.get(idx);
      if (!e || from >= e.len) continue; // hole: already zeros
      const plain = (await loads.get(idx)!).data;
      plain.copy(out, dst, from, Math.min(to, e.len));
    }
    return out;
  }

  /**
   * Keep the segments after `current` loading (READ_AHEAD up to MAX_PREFETCH, by cache size;
   * errors surface on the real read).
   * The window moves in half-window steps, so a stream costs one range query per few segments,
   * and requests the kernel sends concurrently or slightly out of order do not re-issue loads.
   */
  private readonly prefetchQueue = new Map<string, () => void>();

  /** Run `prefetch` for a stream once the current event-loop turn is over (latest call wins). */
  private prefetchSoon(streamKey: string, run: () => void): void {
    if (this.prefetchQueue.size === 0) {
      setImmediate(() => {
        const queued = [...this.prefetchQueue.values()];
        this.prefetchQueue.clear();
        if (this.closed) return;
        for (const f of queued) {
          try {
            f();
          } catch {
            // a read-ahead only: the reader's own read reports whatever went wrong
          }
        }
      });
    }
    this.prefetchQueue.set(streamKey, run);
  }

  private prefetch(c: Capsule, p: string, ino: number, streamKey: string, current: number, d: DirtyFile | undefined): void {
    const done = this.prefetchedTo.get(streamKey) ?? current;
    const ahead = Math.max(READ_AHEAD, Math.min(MAX_PREFETCH, Math.floor(this.cache.capacity / c.policy.segmentSize / 16)));
    if (done >= current + ahead / 2) return;
    const from = Math.max(done, current) + 1;
    const to = current + ahead;
    this.prefetchedTo.set(streamKey, to);
    const exts = this.stmt('SELECT idx, seg, len FROM extents WHERE capsule = ? AND version = 0 AND ino = ? AND idx BETWEEN ? AND ?').all(c.row.id, ino, from, to) as ExtentRow[];
    // The stream's read memo learns these rows too (a missing row is a hole): its reads of
    // these segments then need no query of their own (tryReadSyncHeld).
    const memo = this.readMemos.get(readMemoKey(c, p));
    if (memo && memo.mutations === this.mutations && memo.node.ino === ino && memo.extents.size + (to - from) <= 4096) {
      for (let idx = from; idx <= to; idx++) memo.extents.set(idx, null);
      for (const e of exts) memo.extents.set(e.idx, e);
    }
    for (const e of exts) {
      const buffered = d?.lookup(e.idx);
      if (!buffered || d!.unmerged.has(buffered)) this.holdSegment(c, p, e.idx, e.seg, true, true).then((h) => h.release(), () => {});
    }
  }

  /**
   * The bytes of a read when every segment it needs is already in memory (cached or buffered),
   * without a promise; undefined otherwise (the caller then uses read()). Filesystem views serve
   * most sequential requests this way: seven of every eight 128 KiB reads hit a segment the
   * first one decoded.
   */
  tryReadSync(ref: string, p: string, offset: number, length: number): Buffer | undefined {
    return this.tryReadSyncHeld(ref, p, offset, length)?.keep();
  }

  /** tryReadSync for a caller that releases the bytes when done (see readHeld). */
  tryReadSyncHeld(ref: string, p: string, offset: number, length: number): HeldBytes | undefined {
    const c = this.capsule(ref);
    checkRange(offset, length);
    // The path lookup and extent rows of a stream are memoized until metadata changes: a
    // sequential reader asks for the same file thousands of times in a row.
    const memoKey = readMemoKey(c, p);
    let memo = this.readMemos.get(memoKey);
    if (!memo || memo.mutations !== this.mutations) {
      if (this.readMemos.size > 256) this.readMemos.clear();
      memo = { mutations: this.mutations, node: this.lookupFile(c, HEAD, normPath(p)), extents: new Map() };
      this.readMemos.set(memoKey, memo);
    }
    const n = memo.node;
    const d = this.dirty.get(dirtyKey(c.row.id, n.ino));
    const size = d ? d.size : n.size;
    if (offset >= size || length === 0) return new HeldBytes(Buffer.alloc(0));
    const end = Math.min(size, offset + length);
    const segSize = c.policy.segmentSize;
    const first = Math.floor(offset / segSize);
    const last = Math.floor((end - 1) / segSize);
    if (last - first > 1) return undefined; // large reads take the general path
    const streamKey = `${c.row.id}:${HEAD}:${n.ino}`;
    const lastEnd = this.readEnds.get(streamKey);
    // A sequential reader moves the read-ahead window along; a random reader is served from
    // what is cached (block views read 4 KiB at random) without disturbing a stream's window.
    const sequential = lastEnd !== undefined && Math.abs(offset - lastEnd) <= 2 * segSize;
    const pieces: { idx: number; src: Buffer; len: number }[] = [];
    for (let idx = first; idx <= last; idx++) {
      const buffered = d?.lookup(idx);
      if (buffered) {
        const segStart = idx * segSize;
        if (d!.lacks(buffered, Math.max(offset, segStart) - segStart, Math.min(end, segStart + segSize) - segStart)) return undefined;
        pieces.push({ idx, src: d!.expose(buffered), len: segSize }); // may go out as a view
        continue;
      }
      let e = memo.extents.get(idx);
      if (e === undefined) {
        e = this.extent(c, HEAD, n.ino, idx) ?? null;
        // Enough rows for a random reader over a few GiB of 1 MiB segments (a row is small).
        if (memo.extents.size > 4096) memo.extents.clear();
        memo.extents.set(idx, e);
      }
      if (!e) {
        pieces.push({ idx, src: ZERO_SEGMENT, len: 0 });
        continue;
      }
      const hit = this.cache.get(e.seg);
      if (!hit) return undefined;
      pieces.push({ idx, src: hit, len: e.len });
    }
    if (sequential) {
      this.readEnds.set(streamKey, end);
      // After this turn: the caller answers with these bytes first (the reader is waiting for
      // them), and the loads are queued while the reader takes its answer in.
      this.prefetchSoon(streamKey, () => this.prefetch(c, p, n.ino, streamKey, last, this.dirty.get(dirtyKey(c.row.id, n.ino))));
    }
    if (pieces.length === 1 && pieces[0]!.src !== ZERO_SEGMENT) {
      const pc = pieces[0]!;
      const from = offset - pc.idx * segSize;
      const to = end - pc.idx * segSize;
      if (to <= pc.len) return this.holdOf(pc.src).subarray(from, to);
    }
    const out = Buffer.alloc(end - offset);
    for (const pc of pieces) {
      const segStart = pc.idx * segSize;
      const from = Math.max(offset, segStart) - segStart;
      const to = Math.min(end, segStart + segSize) - segStart;
      if (from < pc.len) pc.src.copy(out, segStart + from - offset, from, Math.min(to, pc.len));
    }
    return new HeldBytes(out);
  }

  async *readStream(ref: string, p: string, opts: { offset?: number; length?: number; version?: VersionSel } = {}): AsyncIterable<Buffer> {
    const c = this.capsule(ref);
    const attr = await this.getattr(ref, p, opts.version);
    if (attr.type !== 'file') throw new SpaceError('INVALID_ARGUMENT', `${p} is a directory`, { errno: 'EISDIR' });
    let pos = opts.offset ?? 0;
    const end = Math.min(attr.size, opts.length === undefined ? Infinity : pos + opts.length);
    checkRange(pos, Math.max(0, end - pos));
    const step = c.policy.segmentSize;
    // Read ahead: keep the next few segment reads in flight (file I/O and decryption run in
    // the thread pool and the codec workers) while the consumer takes the current one.
    const ahead: Promise<Buffer>[] = [];
    const next = () => {
      if (pos >= end) return false;
      const n = Math.min(end - pos, step - (pos % step)); // one segment per piece
      // The consumer keeps what it is given (a cached segment's slot is then never reused).
      const p2 = this.readRange(ref, p, pos, n, opts.version, true).then((h) => h.keep());
      p2.catch(() => {}); // surfaced when awaited below
      ahead.push(p2);
      pos += n;
      return true;
    };
    while (ahead.length < READ_AHEAD && next());
    while (ahead.length) {
      const chunk = await ahead.shift()!;
      next();
      if (chunk.length === 0) break;
      yield chunk;
    }
  }

  /**
   * Buffered write for filesystem views: patched into dirty segments, visible to reads at once,
   * durable after flush(). Memory is bounded by maxDirtyBytes (a write past it flushes first).
   *
   * Applied without yielding. A segment written only in part whose committed bytes are not in
   * the segment cache is not loaded now: its buffer records which bytes the writes set
   * (coverage.ts), and the committed bytes are merged in when a read or the commit needs them.
   * A sequential writer that covers the whole segment never loads it.
   *
   * `opts.adopt` (BufferedWriteOptions): instead of a copy into a new zeroed segment; NFS
   * receives 1 MiB WRITEs, and the allocation, zero-fill and copy were a tenth of its event-loop
   * time. Taken only when `data` is most of the memory under it, so an adopted segment does not
   * pin a much larger receive buffer.
   *
   * `opts.release` runs right away when the bytes were copied, or once the segment that adopted
   * `data` whole is committed; never when a reader took a view of that buffered segment, or
   * `data` was split over several segments (the memory is then left to the garbage collector).
   */
  async writeBuffered(ref: string, p: string, offset: number, data: Uint8Array, opts: BufferedWriteOptions = {}): Promise<number> {
    const c = this.capsule(ref);
    p = normPath(p);
    checkRange(offset, data.length);
    if (offset + data.length > MAX_FILE_SIZE) throw new SpaceError('INVALID_ARGUMENT', 'write beyond the maximum file size', { errno: 'EFBIG' });
    const segSize = c.policy.segmentSize;
    const src = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const adoptable = opts.adopt === true && data.buffer.byteLength <= data.byteLength + (data.byteLength >> 3);
    let adopted = false;
    const n = this.lookupFile(c, HEAD, p);
    const key = dirtyKey(c.row.id, n.ino);
    let d = this.dirty.get(key);
    if (!d) {
      d = new DirtyFile(c.row.id, n.ino, segSize, n.size, n.mtime);
      this.dirty.set(key, d);
    }
    for (let pos = 0; pos < src.length;) {
      const abs = offset + pos;
      const idx = Math.floor(abs / segSize);
      const within = abs - idx * segSize;
      const len = Math.min(segSize - within, src.length - pos);
      if (adoptable && len === segSize) {
        // Replaces any buffered copy whole (its unmerged coverage is keyed by that buffer).
        const seg = src.subarray(pos, pos + len);
        d.segs.set(idx, seg);
        if (opts.release && len === src.length) d.releases.set(seg, opts.release);
        adopted = true;
        pos += len;
        continue;
      }
      let seg = d.segs.get(idx);
      if (!seg) seg = this.startDirtySegment(c, d, idx, len === segSize);
      src.copy(seg, within, pos, pos + len);
      d.markSet(seg, within, within + len);
      pos += len;
    }
    d.size = Math.max(d.size, offset + src.length);
    d.mtimeMs = Date.now();
    if (!adopted) opts.release?.(); // copied: the caller's memory is free again
    if (this.dirtyBytes() > this.maxDirty) {
      // Over the limit while this file's write-behind runs: wait for that commit, which frees
      // its segments and starts the next one, instead of committing everything (the tail
      // segment too, which the writer is still filling) behind it.
      if (d.writingBehind) await d.writingBehind;
      else await this.flushFile(c, d);
    } else if (d.segs.size >= WRITE_BEHIND_SEGMENTS && !d.writingBehind) this.writeBehind(c, d);
    return src.length;
  }

  /**
   * A new dirty segment for `idx`: a copy of the one a flush is committing, or the committed
   * bytes when they are at hand (or not needed: `whole` is about to be overwritten, or there
   * are none), or else zeros marked unmerged (see writeBuffered).
   */
  private startDirtySegment(c: Capsule, d: DirtyFile, idx: number, whole: boolean): Buffer {
    const segSize = c.policy.segmentSize;
    let seg: Buffer;
    const inFlight = d.flushing.get(idx);
    if (inFlight) {
      seg = Buffer.from(inFlight);
      const cov = d.unmerged.get(inFlight);
      if (cov) d.unmerged.set(seg, cov.clone());
    } else {
      seg = Buffer.alloc(segSize);
      const ext = whole ? undefined : this.extent(c, HEAD, d.ino, idx);
      if (ext) {
        const hit = this.cache.get(ext.seg);
        if (hit) hit.copy(seg, 0, 0, Math.min(ext.len, hit.length));
        else d.unmerged.set(seg, new Coverage(ext.len));
      }
    }
    d.segs.set(idx, seg);
    return seg;
  }

  /**
   * Merge the committed bytes into an unmerged buffered segment (in place). The committed
   * extent of `idx` is read after the load, under no lock: whatever extent holds then has the
   * same bytes where the writes left gaps (a flush commits them merged; a punch or truncate
   * that changed them also zeroed the buffer there or cut the file).
   */
  private async mergeBase(c: Capsule, d: DirtyFile, idx: number, seg: Buffer): Promise<void> {
    const ext = this.extent(c, HEAD, d.ino, idx);
    const held = ext ? await this.holdSegment(c, this.pathOfIno(c.row.id, HEAD, d.ino), idx, ext.seg) : undefined;
    try {
      const cov = d.unmerged.get(seg);
      if (!cov) return; // merged meanwhile
      const plain = held?.data;
      if (plain && ext) {
        for (const [from, to] of cov.gaps()) {
          const end = Math.min(to, ext.len, plain.length);
          if (end > from) plain.copy(seg, from, from, end);
        }
      }
      d.unmerged.delete(seg);
    } finally {
      held?.release();
    }
  }

  /** Start committing a sequential writer's full segments while it goes on writing. */
  private writeBehind(c: Capsule, d: DirtyFile): void {
    d.writingBehind = this.flushFile(c, d, { keepTail: true }).then(
      () => {
        d.writingBehind = undefined;
        // The writer may have filled more segments meanwhile: keep going while it stays ahead.
        const tailIdx = Math.floor(d.size / c.policy.segmentSize);
        const full = [...d.segs].filter(([idx, buf]) => idx < tailIdx && !d.unmerged.has(buf)).length;
        if (!this.closed && this.dirty.get(dirtyKey(c.row.id, d.ino)) === d && full >= WRITE_BEHIND_SEGMENTS) this.writeBehind(c, d);
      },
      (e: unknown) => {
        d.writingBehind = undefined;
        this.log.warn('flush.write_behind_failed', { capsule: c.row.id, ino: d.ino, err: e });
      },
    );
  }

  private dirtyBytes(): number {
    let n = 0;
    for (const d of this.dirty.values()) n += d.bytes();
    return n;
  }

  async write(ref: string, p: string, offset: number, data: Uint8Array): Promise<number> {
    const n = await this.writeBuffered(ref, p, offset, data);
    await this.flush(ref, p);
    return n;
  }

  /** Commit buffered writes of one file (or of every file in the capsule). */
  async flush(ref: string, p?: string): Promise<void> {
    const c = this.capsule(ref);
    if (p !== undefined) {
      const n = this.lookup(c, HEAD, p);
      const d = this.dirty.get(dirtyKey(c.row.id, n.ino));
      if (d) await this.flushFile(c, d);
      return;
    }
    for (const d of [...this.dirty.values()]) if (d.capsule === c.row.id) await this.flushFile(c, d);
  }

  private async flushAll(): Promise<void> {
    for (const d of [...this.dirty.values()]) {
      const c = this.capsules.get(d.capsule);
      if (c) await this.flushFile(c, d);
    }
  }

  /**
   * Commit a file's buffered segments. `keepTail` (write-behind) commits only the whole segments
   * before the one holding end-of-file, which a sequential writer is still filling.
   */
  private flushFile(c: Capsule, d: DirtyFile, opts: { keepTail?: boolean } = {}): Promise<void> {
    const key = dirtyKey(c.row.id, d.ino);
    return this.fileLocks.run(key, async () => {
      const committed = this.inode(c.row.id, HEAD, d.ino);
      if (this.dirty.get(key) !== d || !committed) return;
      const segSize = c.policy.segmentSize;
      let taken: Map<number, Buffer>;
      let size: number;
      if (opts.keepTail) {
        const tailIdx = Math.floor(d.size / segSize);
        // Partly written segments wait too: a sequential overwrite is still filling them, and
        // committing one now would load its committed bytes for nothing (see writeBuffered).
        taken = new Map([...d.segs].filter(([idx, buf]) => idx < tailIdx && !d.unmerged.has(buf)));
        if (taken.size === 0) return;
        for (const idx of taken.keys()) d.segs.delete(idx);
        // The committed size covers only committed data (or what was committed before).
        size = Math.max(committed.size, Math.min(d.size, tailIdx * segSize));
      } else {
        if (d.segs.size === 0 && d.size === committed.size) return;
        taken = d.segs;
        d.segs = new Map();
        size = d.size;
      }
      d.flushing = taken;
      const known = new Set<string>();
      const syncs: Promise<void>[] = [];
      const stored: { idx: number; seg: { id: string; plen: number; clen: number } | null }[] = [];
      try {
        // Encode and write the dirty segments a few at a time (the buffers are copied to the
        // codec workers: readers still see them in `flushing` until the commit).
        const entries = [...taken];
        let next = 0;
        let failure: unknown;
        const lane = async () => {
          while (next < entries.length && !failure) {
            const [idx, buf] = entries[next++]!;
            const start = idx * segSize;
            if (start >= size) {
              stored.push({ idx, seg: null });
              continue;
            }
            try {
              if (d.unmerged.has(buf)) await this.mergeBase(c, d, idx, buf);
              stored.push({ idx, seg: await this.storeSegment(c, buf.subarray(0, Math.min(segSize, size - start)), known, false, syncs) });
            } catch (e) {
              failure ??= e;
            }
          }
        };
        await Promise.all(Array.from({ length: Math.min(PUT_WINDOW, entries.length) }, lane));
        if (failure) throw failure;
        await Promise.all(syncs); // durable before referenced (the workers did not sync the files)
        const now = Date.now();
        this.db.transaction(() => {
          if (!this.inode(c.row.id, HEAD, d.ino)) return; // unlinked while flushing
          const del = this.stmt('DELETE FROM extents WHERE capsule = ? AND version = 0 AND ino = ? AND idx = ?');
          const ins = this.stmt('INSERT INTO extents (capsule, version, ino, idx, seg, len) VALUES (?, 0, ?, ?, ?, ?)');
          for (const { idx, seg } of stored) {
            del.run(c.row.id, d.ino, idx);
            if (seg) {
              this.insertSegmentRow(c, seg);
              ins.run(c.row.id, d.ino, idx, seg.id, seg.plen);
            }
          }
          this.stmt('UPDATE inodes SET size = ?, mtime = ?, ctime = ? WHERE capsule = ? AND version = 0 AND ino = ?').run(size, d.mtimeMs, now, c.row.id, d.ino);
        })();
      } catch (e) {
        // keep the data buffered so a later flush can retry (e.g. after space is freed)
        for (const [idx, buf] of taken) if (!d.segs.has(idx)) d.segs.set(idx, buf);
        throw fromFsError(e, `flushing a file of capsule ${c.row.name}`);
      } finally {
        d.flushing = new Map();
        for (const s of stored) if (s.seg) this.unpin(s.seg.id);
      }
      // Committed: adopted memory no reader has a view of goes back to its giver.
      for (const buf of taken.values()) {
        const release = d.releases.get(buf);
        if (release) {
          d.releases.delete(buf);
          release();
        }
      }
      if (d.segs.size === 0 && d.size === size && this.dirty.get(key) === d) this.dirty.delete(key);
      this.emit('written', c.row, { path: this.pathOfIno(c.row.id, HEAD, d.ino) });
    });
  }

  async truncate(ref: string, p: string, size: number): Promise<void> {
    const c = this.capsule(ref);
    p = normPath(p);
    if (!Number.isSafeInteger(size) || size < 0 || size > MAX_FILE_SIZE) throw invalid(`size ${size} must be a non-negative integer`);
    const n = this.lookupFile(c, HEAD, p);
    const key = dirtyKey(c.row.id, n.ino);
    const segSize = c.policy.segmentSize;
    // Under the file lock (no flush in progress) and without awaiting: buffered segments and
    // committed extents are cut in one step, so no write can slip between the two.
    await this.fileLocks.run(key, async () => {
      if (!this.inode(c.row.id, HEAD, n.ino)) throw notFound(`${p} not found in capsule ${c.row.name}`);
      const now = Date.now();
      const d = this.dirty.get(key);
      if (d) {
        for (const [idx, buf] of d.segs) {
          const start = idx * segSize;
          if (start >= size) d.segs.delete(idx);
          else if (start + segSize > size) buf.fill(0, size - start);
        }
        d.size = size;
        d.mtimeMs = now;
      }
      // Shrinking only trims extent lengths: the segment stays verified as a whole and the bytes
      // past the new length read as zeros if the file grows again. No data is rewritten.
      this.db.transaction(() => {
        const firstGone = Math.ceil(size / segSize);
        this.stmt('DELETE FROM extents WHERE capsule = ? AND version = 0 AND ino = ? AND idx >= ?').run(c.row.id, n.ino, firstGone);
        if (size % segSize !== 0) {
          const lastIdx = Math.floor(size / segSize);
          this.stmt('UPDATE extents SET len = MIN(len, ?) WHERE capsule = ? AND version = 0 AND ino = ? AND idx = ?').run(size - lastIdx * segSize, c.row.id, n.ino, lastIdx);
        }
        this.stmt('UPDATE inodes SET size = ?, mtime = ?, ctime = ? WHERE capsule = ? AND version = 0 AND ino = ?').run(size, now, now, c.row.id, n.ino);
      })();
    });
    this.emit('written', c.row, { path: p });
  }

  /**
   * Deallocate `length` bytes at `offset` of a file in the live head (NVMe Dataset Management
   * deallocate and Write Zeroes, NFSv4.2 DEALLOCATE): the range reads as zeros from now on and
   * segments wholly inside it take no space. The size never changes (the range is clipped at
   * end-of-file; length 0 is a no-op). Segments only partly inside have the covered bytes zeroed:
   * their committed copy is rewritten in the same transaction that drops the whole ones, and
   * their buffered copy (if any) is zeroed in place. Snapshots and clones keep their extents.
   * Store-only: meant for in-process protocol servers.
   */
  async punchHole(ref: string, p: string, offset: number, length: number): Promise<void> {
    const c = this.capsule(ref);
    p = normPath(p);
    checkRange(offset, length);
    if (offset + length > MAX_FILE_SIZE) throw new SpaceError('INVALID_ARGUMENT', 'range beyond the maximum file size', { errno: 'EFBIG' });
    const n = this.lookupFile(c, HEAD, p);
    if (length === 0) return;
    const key = dirtyKey(c.row.id, n.ino);
    const segSize = c.policy.segmentSize;
    // Under the file lock no flush runs (so `flushing` is empty and committed extents hold
    // still); the dirty buffers and extents are then changed in one step without awaiting.
    const changed = await this.fileLocks.run(key, async () => {
      for (let attempt = 0; ; attempt++) {
        if (attempt > 8) throw new SpaceError('UNAVAILABLE', `${p} keeps changing under a hole punch; retry`, { errno: 'EBUSY' });
        // Phase 1 (awaits): new contents for committed segments the range covers only in part.
        const before = this.punchPlan(c, n.ino, p, offset, length);
        if (!before) return false;
        const known = new Set<string>();
        const prepared = new Map<number, { edge: PunchEdge; seg: { id: string; plen: number; clen: number } | null }>();
        try {
          for (const edge of before.edges) {
            if (edge.action !== 'rewrite') continue;
            const ext = edge.ext!;
            const held = await this.holdSegment(c, p, edge.idx, ext.seg);
            const buf = Buffer.alloc(ext.len);
            held.data.copy(buf, 0, 0, Math.min(ext.len, held.data.length));
            held.release();
            buf.fill(0, edge.from, edge.to);
            const seg = await this.storeSegment(c, buf, known); // null: nothing but zeros is left
            prepared.set(edge.idx, { edge, seg });
          }
          // Phase 2 (no awaits from here to the end): re-plan against the current state; the
          // rewrites prepared above must still be the ones needed.
          const plan = this.punchPlan(c, n.ino, p, offset, length);
          if (!plan) return false;
          const stale = plan.edges.some((e) => {
            if (e.action !== 'rewrite') return false;
            const pr = prepared.get(e.idx)?.edge;
            return !pr || pr.from !== e.from || pr.to !== e.to || pr.ext!.seg !== e.ext!.seg || pr.ext!.len !== e.ext!.len;
          });
          if (stale) continue;
          const { first, last, end, edges } = plan;
          const now = Date.now();
          this.db.transaction(() => {
            if (last - first > 1) {
              this.stmt('DELETE FROM extents WHERE capsule = ? AND version = 0 AND ino = ? AND idx > ? AND idx < ?').run(c.row.id, n.ino, first, last);
            }
            const del = this.stmt('DELETE FROM extents WHERE capsule = ? AND version = 0 AND ino = ? AND idx = ?');
            for (const e of edges) {
              if (e.action === 'delete') del.run(c.row.id, n.ino, e.idx);
              else if (e.action === 'trim') {
                this.stmt('UPDATE extents SET len = ? WHERE capsule = ? AND version = 0 AND ino = ? AND idx = ?').run(e.from, c.row.id, n.ino, e.idx);
              } else if (e.action === 'rewrite') {
                const seg = prepared.get(e.idx)!.seg;
                if (!seg) del.run(c.row.id, n.ino, e.idx);
                else {
                  this.insertSegmentRow(c, seg);
                  this.stmt('UPDATE extents SET seg = ?, len = ? WHERE capsule = ? AND version = 0 AND ino = ? AND idx = ?').run(seg.id, seg.plen, c.row.id, n.ino, e.idx);
                }
              }
            }
            this.stmt('UPDATE inodes SET mtime = ?, ctime = ? WHERE capsule = ? AND version = 0 AND ino = ?').run(now, now, c.row.id, n.ino);
          })();
          const d = this.dirty.get(key);
          if (d) {
            for (const [idx, buf] of d.segs) {
              if (idx < first || idx > last) continue;
              const segStart = idx * segSize;
              const from = Math.max(offset, segStart) - segStart;
              const to = Math.min(end, segStart + segSize) - segStart;
              // Covered up to the segment's end (or end-of-file): nothing of it is left to keep.
              if (from === 0 && (to === segSize || segStart + to >= d.size)) d.segs.delete(idx);
              else {
                buf.fill(0, from, to);
                d.markSet(buf, from, to); // the zeros are the buffer's own, whatever was committed
              }
            }
            d.mtimeMs = now;
            if (d.segs.size === 0 && d.flushing.size === 0 && d.size === plan.committedSize) this.dirty.delete(key);
          }
          return true;
        } catch (e) {
          throw fromFsError(e, `punching a hole in ${p} of capsule ${c.row.name}`);
        } finally {
          for (const { seg } of prepared.values()) if (seg) this.unpin(seg.id);
        }
      }
    });
    if (changed) this.emit('written', c.row, { path: p });
  }

  /**
   * What a hole punch does to the committed extents of the segments at either end of the range
   * (those in between are dropped whole), given the file's current size. Undefined when there is
   * nothing to do (range past end-of-file); not found when the file has gone.
   */
  private punchPlan(c: Capsule, ino: number, p: string, offset: number, length: number): PunchPlan | undefined {
    const node = this.inode(c.row.id, HEAD, ino);
    if (!node) throw notFound(`${p} not found in capsule ${c.row.name}`);
    const d = this.dirty.get(dirtyKey(c.row.id, ino));
    const size = d ? d.size : node.size;
    const end = Math.min(offset + length, size);
    if (end <= offset) return undefined;
    const segSize = c.policy.segmentSize;
    const first = Math.floor(offset / segSize);
    const last = Math.floor((end - 1) / segSize);
    const edges: PunchEdge[] = [];
    for (const idx of first === last ? [first] : [first, last]) {
      const segStart = idx * segSize;
      const from = Math.max(offset, segStart) - segStart;
      const to = Math.min(end, segStart + segSize) - segStart;
      const ext = this.extent(c, HEAD, ino, idx);
      // Bytes past an extent's length already read as zeros: cutting the length is enough when
      // the range reaches it; only a range ending inside the extent needs the data rewritten.
      let action: PunchEdge['action'];
      if (!ext || from >= ext.len) action = 'keep';
      else if (to >= ext.len) action = from === 0 ? 'delete' : 'trim';
      else action = 'rewrite';
      edges.push({ idx, from, to, ext, action });
    }
    return { first, last, end, committedSize: node.size, edges };
  }

  // ---------------------------------------------------------------- versions

  async snapshot(ref: string): Promise<number> {
    const c = this.capsule(ref);
    await this.flush(ref);
    const id = c.row.id;
    const version = this.db.transaction(() => {
      const v = (this.stmt('SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE capsule = ?').pluck().get(id) as number);
      this.stmt('INSERT INTO inodes SELECT capsule, ?, ino, parent, name, type, mode, uid, gid, size, atime, mtime, ctime FROM inodes WHERE capsule = ? AND version = 0').run(v, id);
      this.stmt('INSERT INTO extents SELECT capsule, ?, ino, idx, seg, len FROM extents WHERE capsule = ? AND version = 0').run(v, id);
      const logical = this.stmt('SELECT COALESCE(SUM(size), 0) FROM inodes WHERE capsule = ? AND version = 0 AND type = ?').pluck().get(id, T_FILE) as number;
      this.stmt('INSERT INTO versions (capsule, version, created, logical_size) VALUES (?, ?, ?, ?)').run(id, v, new Date().toISOString(), logical);
      return v;
    })();
    this.log.info('capsule.snapshot', { capsule: id, version });
    this.emit('snapshot', c.row, { version });
    return version;
  }

  async clone(ref: string, opts: CloneOptions = {}): Promise<CapsuleInfo> {
    const src = this.capsule(ref);
    const v = this.versionOf(src, opts.version);
    if (v === HEAD) await this.flush(ref);
    const { id, name } = this.checkNewIdentity(opts);
    const row = this.db.transaction(() => {
      const row = this.insertCapsule(id, name, src.policy, { capsule: src.row.id, version: v === HEAD ? null : v }, src.row.next_ino);
      const nextIno = this.stmt('SELECT next_ino FROM capsules WHERE id = ?').pluck().get(src.row.id) as number;
      this.stmt('UPDATE capsules SET next_ino = ? WHERE id = ?').run(nextIno, id);
      row.next_ino = nextIno;
      // Zero copy: the clone's head references the very same segments.
      this.stmt('INSERT INTO inodes SELECT ?, 0, ino, parent, name, type, mode, uid, gid, size, atime, mtime, ctime FROM inodes WHERE capsule = ? AND version = ?').run(id, src.row.id, v);
      this.stmt('INSERT INTO extents SELECT ?, 0, ino, idx, seg, len FROM extents WHERE capsule = ? AND version = ?').run(id, src.row.id, v);
      return row;
    })();
    const c = this.loadCapsule(row);
    this.log.info('capsule.cloned', { capsule: id, from: src.row.id, version: v });
    this.emit('cloned', row);
    return this.info(c);
  }

  // ---------------------------------------------------------------- accounting and maintenance

  async stat(ref: string): Promise<CapsuleStat> {
    const c = this.capsule(ref);
    const id = c.row.id;
    const q = (sql: string, ...args: unknown[]) => this.stmt(sql).pluck().get(...args) as number;
    const logical = q('SELECT COALESCE(SUM(size), 0) FROM inodes WHERE capsule = ? AND version = 0 AND type = ?', id, T_FILE);
    const files = q('SELECT COUNT(*) FROM inodes WHERE capsule = ? AND version = 0 AND type = ?', id, T_FILE);
    const dirs = q('SELECT COUNT(*) FROM inodes WHERE capsule = ? AND version = 0 AND type = ?', id, T_DIR);
    const stored = q('SELECT COALESCE(SUM(s.clen), 0) FROM segments s WHERE s.id IN (SELECT seg FROM extents WHERE capsule = ?)', id);
    const segments = q('SELECT COUNT(DISTINCT seg) FROM extents WHERE capsule = ?', id);
    const referenced = q('SELECT COALESCE(SUM(len), 0) FROM extents WHERE capsule = ? AND version = 0', id);
    const distinct = q('SELECT COALESCE(SUM(s.plen), 0) FROM segments s WHERE s.id IN (SELECT seg FROM extents WHERE capsule = ? AND version = 0)', id);
    const versions = (this.stmt('SELECT version FROM versions WHERE capsule = ? ORDER BY version').pluck().all(id) as number[]);
    return {
      id, name: c.row.name, logicalSize: logical, storedSize: stored, dedupRatio: distinct > 0 ? referenced / distinct : 1,
      files, dirs, segments, versions, digest: this.treeDigest(c, HEAD),
    };
  }

  /**
   * Digest of a version's tree: sha256 over every path, type, size and segment address in order.
   * It changes whenever content changes and costs no data reads (addresses are content hashes).
   */
  private treeDigest(c: Capsule, version: number): string {
    const h = crypto.createHash('sha256');
    const rows = this.stmt(`SELECT i.ino, i.parent, i.name, i.type, i.size, e.idx, e.seg, e.len FROM inodes i LEFT JOIN extents e ON e.capsule = i.capsule AND e.version = i.version AND e.ino = i.ino WHERE i.capsule = ? AND i.version = ? ORDER BY i.ino, e.idx`).all(c.row.id, version) as { ino: number; parent: number; name: string; type: number; size: number; idx: number | null; seg: string | null; len: number | null }[];
    for (const r of rows) h.update(`${r.ino}/${r.parent}/${r.name}/${r.type}/${r.size}/${r.idx ?? ''}/${r.seg ?? ''}/${r.len ?? ''}\n`);
    return 'sha256:' + h.digest('hex');
  }

  async storeStat(): Promise<StoreStat> {
    this.live();
    const q = (sql: string) => this.stmt(sql).pluck().get() as number;
    // Every version counts: a snapshot that shares segments with the head is deduplicated data.
    const referenced = q('SELECT COALESCE(SUM(len), 0) FROM extents');
    const distinctPlain = q('SELECT COALESCE(SUM(plen), 0) FROM segments');
    return {
      capsules: q('SELECT COUNT(*) FROM capsules'),
      segments: q('SELECT COUNT(*) FROM segments'),
      storedBytes: q('SELECT COALESCE(SUM(clen), 0) FROM segments'),
      referencedBytes: referenced,
      dedupRatio: distinctPlain > 0 ? referenced / distinctPlain : 1,
    };
  }

  /** Remove segments no version of any capsule references (and no write in flight has pinned). */
  async gc(): Promise<GcReport> {
    this.live();
    await this.flushAll();
    const candidates = this.stmt('SELECT id FROM segments s WHERE NOT EXISTS (SELECT 1 FROM extents e WHERE e.seg = s.id)').pluck().all() as string[];
    const victims = candidates.filter((id) => !this.pins.has(id));
    const del = this.stmt('DELETE FROM segments WHERE id = ?');
    this.db.transaction(() => {
      for (const id of victims) del.run(id);
    })();
    // Same tick as the commit above: no put can observe the row gone but the file still there.
    let bytesFreed = 0;
    for (const id of victims) {
      bytesFreed += this.files.removeSync(id);
      this.cache.delete(id);
    }
    if (victims.length) this.log.info('store.gc', { segmentsRemoved: victims.length, bytesFreed });
    return { segmentsRemoved: victims.length, bytesFreed };
  }

  /**
   * Delete now what prompt reclamation has noted (segments that lost their last reference since
   * the store opened) and nothing is using; it also happens by itself right after such changes.
   */
  reclaim(): ReclaimReport {
    this.live();
    return this.reclaimer?.runAll() ?? { segmentsRemoved: 0, bytesFreed: 0 };
  }

  /** reclaim(), then wait until the files a background batch took out are deleted too. */
  async reclaimSettled(): Promise<ReclaimReport> {
    const r = this.reclaim();
    await this.reclaimer?.idle();
    return r;
  }

  /** Check every stored segment and every reference; problems name capsule, file and offset. */
  async fsck(): Promise<FsckReport> {
    this.live();
    await this.flushAll();
    const problems: FsckProblem[] = [];
    const capsuleRows = this.stmt('SELECT * FROM capsules').all() as CapsuleRow[];
    const byDomain = new Map<string, Capsule>();
    for (const r of capsuleRows) {
      try {
        const c = this.loadCapsule(r);
        byDomain.set(r.domain, c);
      } catch (e) {
        problems.push({ capsule: r.name, problem: `cannot load keys: ${(e as Error).message}` });
      }
    }
    const pathOf = (capsule: string, version: number, ino: number) => this.pathOfIno(capsule, version, ino);
    const refsOf = this.stmt('SELECT e.capsule, e.version, e.ino, e.idx, c.name, json_extract(c.policy, \'$.segmentSize\') AS seg_size FROM extents e JOIN capsules c ON c.id = e.capsule WHERE e.seg = ?');
    const report = (seg: string, problem: string) => {
      const refs = refsOf.all(seg) as { capsule: string; version: number; ino: number; idx: number; name: string; seg_size: number }[];
      if (!refs.length) problems.push({ segment: seg, problem });
      for (const r of refs) problems.push({ capsule: r.name, version: r.version === HEAD ? null : r.version, file: pathOf(r.capsule, r.version, r.ino), offset: r.idx * r.seg_size, segment: seg, problem });
    };
    const segs = this.stmt('SELECT id, domain, plen FROM segments').all() as { id: string; domain: string; plen: number }[];
    for (const s of segs) {
      const blob = await this.files.read(s.id);
      if (!blob) {
        // Freed while fsck ran (writes go on meanwhile): the row went with the file.
        if (!this.stmt('SELECT 1 FROM segments WHERE id = ?').get(s.id)) continue;
        report(s.id, 'segment is missing');
        continue;
      }
      const c = byDomain.get(s.domain);
      if (!c) continue; // no capsule left in that domain: unreferenced, GC will take it
      try {
        decodeSegment(s.id, blob, c.keys.hashKey, this.dataKeyById, true);
      } catch (e) {
        report(s.id, (e as Error).message);
      }
    }
    const dangling = this.stmt('SELECT e.capsule, c.name, e.version, e.ino, e.idx, e.seg, json_extract(c.policy, \'$.segmentSize\') AS seg_size FROM extents e JOIN capsules c ON c.id = e.capsule LEFT JOIN segments s ON s.id = e.seg WHERE s.id IS NULL').all() as { capsule: string; name: string; version: number; ino: number; idx: number; seg: string; seg_size: number }[];
    for (const d of dangling) problems.push({ capsule: d.name, version: d.version || null, file: pathOf(d.capsule, d.version, d.ino), offset: d.idx * d.seg_size, segment: d.seg, problem: 'extent references an unknown segment' });
    const known = new Set(segs.map((s) => s.id));
    let orphanSegments = 0;
    for (const id of this.files.listIds()) if (!known.has(id)) orphanSegments++;
    const files = this.stmt('SELECT COUNT(*) FROM inodes WHERE type = ?').pluck().get(T_FILE) as number;
    return { capsules: capsuleRows.length, files, segmentsChecked: segs.length, problems, orphanSegments };
  }

  async *watch(signal: AbortSignal): AsyncIterable<ChangeEvent> {
    const queue: ChangeEvent[] = [];
    let wake: (() => void) | null = null;
    let overflowed = false;
    const onChange = (ev: ChangeEvent) => {
      // A watcher that stops reading must not grow this process without bound.
      if (queue.length >= MAX_WATCH_BACKLOG) overflowed = true;
      else queue.push(ev);
      wake?.();
    };
    const onAbort = () => wake?.();
    this.events.on('change', onChange);
    signal.addEventListener('abort', onAbort);
    try {
      while (!signal.aborted) {
        if (queue.length === 0) await new Promise<void>((r) => (wake = r));
        wake = null;
        while (queue.length && !signal.aborted) yield queue.shift()!;
        if (overflowed) throw new SpaceError('RESOURCE_EXHAUSTED', `watcher fell more than ${MAX_WATCH_BACKLOG} events behind; re-list and watch again`);
      }
    } finally {
      this.events.off('change', onChange);
      signal.removeEventListener('abort', onAbort);
    }
  }
}

function checkRange(offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0) throw invalid(`offset ${offset} must be a non-negative integer`);
  if (!Number.isSafeInteger(length) || length < 0) throw invalid(`length ${length} must be a non-negative integer`);
}
