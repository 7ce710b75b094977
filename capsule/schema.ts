/**
 * Metadata schema (SQLite, WAL). Version 0 of a capsule is its live head; snapshots are
 * versions 1..n, copies of the head's rows that are never modified again.
 * `extents` maps (file, segment index) to a segment; a missing row is a hole.
 */
import type Database from 'better-sqlite3';

export const SCHEMA_VERSION = 1;
export const HEAD = 0;
export const ROOT_INO = 1;
export const T_FILE = 1;
export const T_DIR = 2;

/**
 * A directory's subdirectories (its link count is 2 + this). Answered from inodes_by_kind
 * alone, in time with the number of subdirectories: without that index SQLite walked every
 * inode of the capsule, and a directory's attributes (which NFS returns with every CREATE and
 * REMOVE in it) took 0.6 ms with 10,000 files in the capsule and 1.7 ms with 30,000.
 */
export const SUBDIR_COUNT_SQL = 'SELECT COUNT(*) FROM inodes WHERE capsule = ? AND version = ? AND parent = ? AND type = ?';

const DDL = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS domains (
  name TEXT PRIMARY KEY,            -- 'plain' or 'kek:<keyRef>'
  kek_ref TEXT,                     -- NULL for the plain domain
  hash_key BLOB NOT NULL            -- wrapped by the KEK unless plain
);
CREATE TABLE IF NOT EXISTS data_keys (
  id INTEGER PRIMARY KEY,
  kek_ref TEXT NOT NULL,
  wrapped BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS capsules (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  policy TEXT NOT NULL,
  domain TEXT NOT NULL REFERENCES domains(name),
  data_key INTEGER REFERENCES data_keys(id),
  created TEXT NOT NULL,
  next_ino INTEGER NOT NULL,
  origin TEXT
);
CREATE TABLE IF NOT EXISTS versions (
  capsule TEXT NOT NULL,
  version INTEGER NOT NULL,
  created TEXT NOT NULL,
  logical_size INTEGER NOT NULL,
  PRIMARY KEY (capsule, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inodes (
  capsule TEXT NOT NULL,
  version INTEGER NOT NULL,
  ino INTEGER NOT NULL,
  parent INTEGER NOT NULL,
  name TEXT NOT NULL,
  type INTEGER NOT NULL,
  mode INTEGER NOT NULL,
  uid INTEGER NOT NULL,
  gid INTEGER NOT NULL,
  size INTEGER NOT NULL,
  atime REAL NOT NULL,
  mtime REAL NOT NULL,
  ctime REAL NOT NULL,
  PRIMARY KEY (capsule, version, ino)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS inodes_by_name ON inodes (capsule, version, parent, name);
CREATE INDEX IF NOT EXISTS inodes_by_kind ON inodes (capsule, version, parent, type);
CREATE TABLE IF NOT EXISTS extents (
  capsule TEXT NOT NULL,
  version INTEGER NOT NULL,
  ino INTEGER NOT NULL,
  idx INTEGER NOT NULL,
  seg TEXT NOT NULL,
  len INTEGER NOT NULL,
  PRIMARY KEY (capsule, version, ino, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS extents_by_seg ON extents (seg);
CREATE TABLE IF NOT EXISTS segments (
  id TEXT PRIMARY KEY,
  domain TEXT NOT NULL,
  plen INTEGER NOT NULL,
  clen INTEGER NOT NULL
) WITHOUT ROWID;
`;

export function migrate(db: Database.Database): void {
  // One process owns a store (lock.ts), so its connection holds the database's lock for as long
  // as it is open, and keeps the WAL index in its own memory. Otherwise SQLite takes and drops
  // file locks around every statement outside a transaction (fcntl and fstat calls), which cost
  // more than the statement: a row by key took 8.5 us, now 5.4; a small write transaction 34 us,
  // now 26; NFS metadata (CREATE + GETATTR + REMOVE, 16 files in flight, bench/nfs.ts's client)
  // went from 2.8-3.2k to 3.6-4.7k files/s. The cost: no other connection, in this process or
  // another (a sqlite3 shell), can read meta.db while the store is open. Set before the journal
  // mode: the WAL index lives in memory only when the WAL is opened in this mode.
  db.pragma('locking_mode = EXCLUSIVE');
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  db.exec(DDL);
  const row = db.prepare(`SELECT value FROM meta WHERE key = 'schema'`).get() as { value: string } | undefined;
  if (!row) db.prepare(`INSERT INTO meta (key, value) VALUES ('schema', ?)`).run(String(SCHEMA_VERSION));
  else if (Number(row.value) > SCHEMA_VERSION) {
    throw new Error(`metadata schema ${row.value} is newer than this build understands (${SCHEMA_VERSION})`);
  }
}
