/**
 * The FUSE operations table without a kernel: errno mapping, read-only enforcement, attribute
 * mapping, and that no exception ever escapes towards the native binding.
 */
import assert from 'node:assert/strict';
import { SpaceError, IntegrityError } from '../capsule/errors.js';
import { createLogger } from '../capsule/log.js';
import type { FileAttr } from '../capsule/types.js';
import { createFuseOps, type FuseStore } from '../gateway/fuse/ops.js';
import { HeldBytes } from '../capsule/segment-pool.js';
import type { FuseOperations, FuseStat, FuseStatfs } from '../gateway/fuse/native.js';
import { errno } from '../gateway/fuse/errno.js';
import { statfsOf } from '../gateway/fuse/attrs.js';

const attr = (over: Partial<FileAttr> = {}): FileAttr => ({
  ino: 7, type: 'file', mode: 0o640, uid: 1000, gid: 100, size: 3 << 20, nlink: 1,
  atimeMs: 1_000_000, mtimeMs: 2_000_000, ctimeMs: 3_000_000, allocated: 1 << 20, ...over,
});

/** A store whose every method records the call and then does what `impl` says (or resolves). */
function fakeStore(impl: Partial<Record<keyof FuseStore, (...a: unknown[]) => unknown>> = {}) {
  const calls: string[] = [];
  const methods = ['getattr', 'readdir', 'readHeld', 'truncate', 'mkdir', 'createFile', 'unlink', 'rmdir', 'rename', 'setattr', 'writeBuffered', 'flush'] as const;
  const store = {} as Record<string, (...a: unknown[]) => unknown>;
  for (const m of methods) {
    store[m] = (...a: unknown[]) => {
      calls.push(`${m} ${JSON.stringify(a.filter((x) => !Buffer.isBuffer(x) && !(x instanceof Uint8Array)))}`);
      const f = impl[m];
      return f ? f(...a) : Promise.resolve(m === 'getattr' || m === 'setattr' ? attr() : undefined);
    };
  }
  return { store: store as unknown as FuseStore, calls };
}

function logCapture() {
  const lines: Record<string, unknown>[] = [];
  return { lines, logger: createLogger({ component: 'test', level: 'debug', write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) }) };
}

/** Invoke an op and resolve with the arguments its callback got. */
function call(fn: (cb: (...a: unknown[]) => void) => void): Promise<unknown[]> {
  return new Promise((resolve) => fn((...a) => resolve(a)));
}

describe('fuse ops table (no kernel)', function () {
  it('maps FileAttr to stat: type bits, perms, 512-byte blocks from allocated, Date times', async () => {
    const { store } = fakeStore({ getattr: async () => attr() });
    const { ops } = createFuseOps({ store, capsuleId: 'c1', readOnly: false, logger: logCapture().logger });
    const [code, st] = (await call((cb) => ops.getattr!('/f', cb as never))) as [number, FuseStat];
    assert.equal(code, 0);
    assert.equal(st.mode, 0o100640);
    assert.equal(st.blocks, (1 << 20) / 512);
    assert.equal(st.size, 3 << 20);
    assert.equal(st.ino, 7);
    assert.ok(st.mtime instanceof Date);
    assert.equal(st.mtime.getTime(), 2_000_000);
    const dir = (await call((cb) => createFuseOps({ store: fakeStore({ getattr: async () => attr({ type: 'dir', mode: 0o755, nlink: 3 }) }).store, capsuleId: 'c1', readOnly: false, logger: logCapture().logger }).ops.getattr!('/', cb as never))) as [number, FuseStat];
    assert.equal(dir[1].mode, 0o040755);
  });

  it('maps SpaceError errno names to negative errnos', async () => {
    const cases: [SpaceError, string][] = [
      [new SpaceError('NOT_FOUND', 'x'), 'ENOENT'],
      [new SpaceError('FAILED_PRECONDITION', 'x', { errno: 'ENOTEMPTY' }), 'ENOTEMPTY'],
      [new SpaceError('RESOURCE_EXHAUSTED', 'x'), 'ENOSPC'],
      [new SpaceError('ALREADY_EXISTS', 'x'), 'EEXIST'],
      [new SpaceError('FAILED_PRECONDITION', 'x', { errno: 'ENOTDIR' }), 'ENOTDIR'],
      [new IntegrityError('c1', 'f', 0, 'bad tag'), 'EIO'],
    ];
    for (const [err, name] of cases) {
      const { store } = fakeStore({ rmdir: async () => { throw err; } });
      const { ops } = createFuseOps({ store, capsuleId: 'c1', readOnly: false, logger: logCapture().logger });
      const [code] = await call((cb) => ops.rmdir!('/d', cb as never));
      assert.equal(code, errno(name), name);
    }
    assert.equal(errno('ENOTEMPTY'), -39);
    assert.equal(errno('EROFS'), -30);
  });

  it('answers EIO and logs capsule, path and op for an unexpected error, sync or async', async () => {
    const { lines, logger } = logCapture();
    const { store } = fakeStore({
      unlink: async () => { throw new TypeError('boom'); },
      mkdir: () => { throw new Error('sync boom'); }, // not even a promise
    });
    const { ops, stats } = createFuseOps({ store, capsuleId: 'cap-x', readOnly: false, logger });
    assert.deepEqual(await call((cb) => ops.unlink!('/a/b', cb as never)), [errno('EIO')]);
    assert.deepEqual(await call((cb) => ops.mkdir!('/m', 0o40755, cb as never)), [errno('EIO')]);
    const rec = lines.filter((l) => l.event === 'fuse.op.failed');
    assert.equal(rec.length, 2);
    assert.equal(rec[0]!.capsule, 'cap-x');
    assert.equal(rec[0]!.path, '/a/b');
    assert.equal(rec[0]!.op, 'unlink');
    assert.deepEqual(rec[0]!.err, { message: 'boom' });
    assert.equal(stats.errors, 2);
  });

  it('does not let a throwing reply callback escape', async () => {
    const { lines, logger } = logCapture();
    const { ops } = createFuseOps({ store: fakeStore().store, capsuleId: 'c1', readOnly: false, logger });
    let unhandled: unknown;
    const onUnhandled = (e: unknown) => (unhandled = e);
    process.on('unhandledRejection', onUnhandled);
    try {
      ops.getattr!('/f', () => { throw new Error('native side exploded'); });
      await new Promise((r) => setTimeout(r, 20));
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    assert.equal(unhandled, undefined);
    assert.ok(lines.some((l) => l.event === 'fuse.reply.failed'));
    // synchronous replies (open, read-only denials) are guarded too
    assert.doesNotThrow(() => ops.open!('/f', 0, () => { throw new Error('native side exploded'); }));
    assert.ok(lines.some((l) => l.event === 'fuse.op.threw' && l.op === 'open' && l.path === '/f'));
  });

  it('read-only: every mutating op answers EROFS without touching the store', async () => {
    const { store, calls } = fakeStore();
    const { ops } = createFuseOps({ store, capsuleId: 'c1', readOnly: true, logger: logCapture().logger });
    const buf = Buffer.alloc(4);
    const EROFS = errno('EROFS');
    const attempts: [string, (cb: (...a: unknown[]) => void) => void][] = [
      ['write', (cb) => ops.write!('/f', 1, buf, 4, 0, cb as never)],
      ['create', (cb) => ops.create!('/f', 0o100644, cb as never)],
      ['mkdir', (cb) => ops.mkdir!('/d', 0o40755, cb as never)],
      ['unlink', (cb) => ops.unlink!('/f', cb as never)],
      ['rmdir', (cb) => ops.rmdir!('/d', cb as never)],
      ['rename', (cb) => ops.rename!('/a', '/b', cb as never)],
      ['truncate', (cb) => ops.truncate!('/f', 0, cb as never)],
      ['ftruncate', (cb) => ops.ftruncate!('/f', 1, 0, cb as never)],
      ['chmod', (cb) => ops.chmod!('/f', 0o600, cb as never)],
      ['chown', (cb) => ops.chown!('/f', 1, 1, cb as never)],
      ['utimens', (cb) => ops.utimens!('/f', 1, 1, cb as never)],
      ['open O_WRONLY', (cb) => ops.open!('/f', 1, cb as never)],
      ['open O_RDWR', (cb) => ops.open!('/f', 2, cb as never)],
    ];
    for (const [name, f] of attempts) assert.equal((await call(f))[0], EROFS, name);
    assert.deepEqual(calls, []);
    // reading still works, and close/fsync have nothing to commit
    const [code, fd] = await call((cb) => ops.open!('/f', 0, cb as never));
    assert.equal(code, 0);
    assert.ok((fd as number) > 0);
    assert.deepEqual(await call((cb) => ops.flush!('/f', 1, cb as never)), [0]);
    assert.deepEqual(calls, []);
  });

  it('read copies into the kernel buffer and returns the count; write goes to the buffered path', async () => {
    const { store, calls } = fakeStore({
      readHeld: async (_r, _p, off, len) => new HeldBytes(Buffer.from('hello world'.slice(off as number, (off as number) + (len as number)))),
      writeBuffered: async (_r, _p, _o, data) => (data as Uint8Array).length,
    });
    const { ops, stats } = createFuseOps({ store, capsuleId: 'c1', readOnly: false, logger: logCapture().logger });
    const buf = Buffer.alloc(16);
    const [n] = await call((cb) => ops.read!('/f', 1, buf, 16, 6, cb as never));
    assert.equal(n, 5);
    assert.equal(buf.subarray(0, 5).toString(), 'world');
    const [w] = await call((cb) => ops.write!('/f', 1, Buffer.alloc(8192), 8192, 4096, cb as never));
    assert.equal(w, 8192);
    assert.equal(stats.maxWriteBytes, 8192);
    assert.ok(calls.includes('writeBuffered ["c1","f",4096]'), calls.join('\n'));
    // close commits the file; a file removed meanwhile has nothing to commit
    const gone = fakeStore({ flush: async () => { throw new SpaceError('NOT_FOUND', 'gone'); } });
    const g = createFuseOps({ store: gone.store, capsuleId: 'c1', readOnly: false, logger: logCapture().logger });
    assert.deepEqual(await call((cb) => g.ops.release!('/f', 1, cb as never)), [0]);
    assert.ok(gone.calls.includes('flush ["c1","f"]'));
  });

  it('chown leaves -1 ids unchanged; utimens sets both times', async () => {
    const { store, calls } = fakeStore();
    const { ops } = createFuseOps({ store, capsuleId: 'c1', readOnly: false, logger: logCapture().logger });
    await call((cb) => ops.chown!('/f', 0xffffffff, 50, cb as never));
    assert.ok(calls.includes('setattr ["c1","f",{"gid":50}]'), calls.join('\n'));
    await call((cb) => ops.utimens!('/f', 5_000, 5_000, cb as never));
    assert.ok(calls.at(-1)!.includes('{"atimeMs":5000,"mtimeMs":5000}'));
  });

  it('readdir lists . and .. with stats, then the entries', async () => {
    const { store } = fakeStore({
      readdir: async () => [{ name: 'a', attr: attr({ ino: 9 }) }, { name: 'sub', attr: attr({ ino: 10, type: 'dir', mode: 0o755 }) }],
      getattr: async () => attr({ ino: 1, type: 'dir', mode: 0o755 }),
    });
    const { ops } = createFuseOps({ store, capsuleId: 'c1', readOnly: false, logger: logCapture().logger });
    const [code, names, stats] = (await call((cb) => ops.readdir!('/', cb as never))) as [number, string[], FuseStat[]];
    assert.equal(code, 0);
    assert.deepEqual(names, ['.', '..', 'a', 'sub']);
    assert.equal(stats.length, names.length);
    assert.equal(stats[3]!.mode, 0o040755);
  });

  it('statfs reports the data dir with every field within uint32', async () => {
    const s: FuseStatfs = await statfsOf('/tmp');
    for (const [k, v] of Object.entries(s)) assert.ok(Number.isInteger(v) && v >= 0 && v <= 0xffffffff, `${k}=${v}`);
    assert.ok(s.blocks > 0 && s.bsize > 0);
    const none = await statfsOf(undefined);
    assert.ok(none.blocks * none.bsize >= 2 ** 49);
    const { ops } = createFuseOps({ store: fakeStore().store, capsuleId: 'c1', readOnly: false, logger: logCapture().logger, statfsDir: '/nonexistent-dir-xyz' });
    assert.deepEqual(await call((cb) => (ops as Required<FuseOperations>).statfs('/', cb as never)), [errno('EIO')]);
  });
});
