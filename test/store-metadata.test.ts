import assert from 'node:assert/strict';
import path from 'node:path';
import Database from 'better-sqlite3';
import { Store } from '../capsule/store.js';
import { validatePolicy } from '../capsule/policy.js';
import { SUBDIR_COUNT_SQL } from '../capsule/schema.js';
import { tmpDir, rmrf } from './helpers/tmp.js';

/**
 * The query plan SQLite picks for the subdirectory count, through a connection of its own: the
 * store must be closed (it holds meta.db exclusively while open).
 */
function subdirCountPlan(dir: string): string {
  const db = new Database(path.join(dir, 'meta.db'), { readonly: true, fileMustExist: true });
  try {
    return (db.prepare(`EXPLAIN QUERY PLAN ${SUBDIR_COUNT_SQL}`).all('c', 0, 1, 2) as { detail: string }[]).map((r) => r.detail).join('; ');
  } finally {
    db.close();
  }
}

describe('capsule store: directory link counts', function () {
  let dir: string;
  let store: Store | undefined;
  beforeEach(async () => {
    dir = tmpDir();
    store = Store.open(dir, { fsync: false });
    await store.create({ name: 'c', policy: validatePolicy({ encryption: false }) });
  });
  afterEach(async () => {
    await store?.close();
    store = undefined;
    rmrf(dir);
  });

  const nlink = async (p: string) => (await store!.getattr('c', p)).nlink;

  it('is 2 plus the subdirectories, whatever the files beside them', async () => {
    const s = store!;
    assert.equal(await nlink('/'), 2);
    for (let i = 0; i < 50; i++) await s.createFile('c', `/f${i}`);
    assert.equal(await nlink('/'), 2, 'files do not count');
    await s.mkdir('c', '/a');
    await s.mkdir('c', '/b');
    await s.mkdir('c', '/a/x');
    assert.equal(await nlink('/'), 4);
    assert.equal(await nlink('/a'), 3);
    assert.equal(await nlink('/b'), 2);
    await s.rename('c', '/a/x', '/b/x');
    assert.equal(await nlink('/a'), 2);
    assert.equal(await nlink('/b'), 3);
    await s.rmdir('c', '/b/x');
    await s.rmdir('c', '/a');
    assert.equal(await nlink('/'), 3);
    assert.equal(await nlink('/b'), 2);
    assert.equal((await s.getattr('c', '/f0')).nlink, 1);
  });

  it('counts them from an index of their own, not by walking every inode of the capsule', async () => {
    await store!.close();
    store = undefined;
    assert.match(subdirCountPlan(dir), /USING COVERING INDEX inodes_by_kind \(capsule=\? AND version=\? AND parent=\? AND type=\?\)/);
  });

  it('gives a store made before the index the index when it opens', async () => {
    await store!.close();
    store = undefined;
    const db = new Database(path.join(dir, 'meta.db'));
    db.exec('DROP INDEX inodes_by_kind');
    db.close();
    assert.doesNotMatch(subdirCountPlan(dir), /inodes_by_kind/);
    store = Store.open(dir, { fsync: false });
    await store.mkdir('c', '/d');
    assert.equal(await nlink('/'), 3);
    await store.close();
    store = undefined;
    assert.match(subdirCountPlan(dir), /inodes_by_kind/);
  });
});

describe('capsule store: the metadata database while the store is open', function () {
  it('is the store\'s alone: another connection cannot read it until the store closes', async () => {
    const dir = tmpDir();
    const store = Store.open(dir, { fsync: false });
    try {
      await store.create({ name: 'c', policy: validatePolicy({ encryption: false }) });
      const other = new Database(path.join(dir, 'meta.db'), { readonly: true, fileMustExist: true, timeout: 50 });
      try {
        assert.throws(() => other.prepare('SELECT COUNT(*) FROM capsules').get(), /database is locked/);
      } finally {
        other.close();
      }
    } finally {
      await store.close();
    }
    const after = new Database(path.join(dir, 'meta.db'), { readonly: true, fileMustExist: true });
    try {
      assert.equal(after.prepare('SELECT COUNT(*) FROM capsules').pluck().get(), 1, 'everything committed is there once it closed');
    } finally {
      after.close();
      rmrf(dir);
    }
  });
});

describe('capsule store: getattrIfExists', function () {
  let dir: string;
  let store: Store;
  before(async () => {
    dir = tmpDir();
    store = Store.open(dir, { fsync: false });
    await store.create({ name: 'c', policy: validatePolicy({ encryption: false }) });
    await store.mkdir('c', '/d');
    await store.createFile('c', '/d/f');
  });
  after(async () => {
    await store.close();
    rmrf(dir);
  });

  it('answers what getattr answers for a path that exists', async () => {
    for (const p of ['/', '/d', '/d/f']) assert.deepEqual(await store.getattrIfExists('c', p), await store.getattr('c', p));
  });

  it('answers undefined where getattr says NOT_FOUND, at any depth', async () => {
    for (const p of ['/nope', '/d/nope', '/nope/deeper']) {
      assert.equal(await store.getattrIfExists('c', p), undefined);
      await assert.rejects(store.getattr('c', p), /not found/);
    }
  });

  it('still refuses a path through a file, and an unknown capsule', async () => {
    await assert.rejects(store.getattrIfExists('c', '/d/f/x'), /is not a directory/);
    await assert.rejects(store.getattrIfExists('nope', '/'), /capsule nope not found/);
  });
});
