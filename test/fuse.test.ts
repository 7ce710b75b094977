/**
 * FUSE views against the host kernel, driven by real tools (cat, dd, cp, mv, truncate, stat...).
 *
 * This process serves the mounts (fuse-native runs the FUSE loop in-process, answering on the JS
 * thread), so everything that touches a mount runs in a child started asynchronously (execFile /
 * spawn). Never execSync/spawnSync or fs.*Sync against a mount from here: that blocks the thread
 * that must answer the kernel, and the test deadlocks. For the same reason a child is never
 * spawned with its cwd inside a mount (libuv's spawn waits for the child's chdir + exec).
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { SpaceError } from '../capsule/errors.js';
import { createLogger, type Logger } from '../capsule/log.js';
import { Store } from '../capsule/store.js';
import { mountAt } from '../gateway/fuse/kernel.js';
import { fuseAvailability } from '../gateway/fuse/native.js';
import { LocalViewManager } from '../gateway/fuse/views.js';
import { chunks, prand, rmrf, segmentFiles, sha256, tmpDir } from './helpers/tmp.js';

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a host tool asynchronously (see the file comment for why it must be async). */
function sh(cmd: string, args: string[]): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function ok(cmd: string, args: string[]): Promise<string> {
  const r = await sh(cmd, args);
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** A shell pipeline with pipefail, so a failing reader is not hidden by a succeeding sha256sum. */
const pipe = (script: string, ...args: string[]) => sh('bash', ['-c', `set -o pipefail; ${script}`, 'bash', ...args]);
const shaOf = (out: string) => out.trim().split(/\s+/)[0];

async function rejects(p: Promise<unknown>, code: string, re?: RegExp): Promise<SpaceError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof SpaceError, `expected a SpaceError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    return e;
  }
  assert.fail(`expected ${code}`);
}

const fuseReason = !fs.existsSync('/dev/fuse') ? '/dev/fuse does not exist' : fuseAvailability().ok ? '' : (fuseAvailability() as { reason: string }).reason;

describe('FUSE views (host kernel, real tools)', function () {
  this.timeout(120_000);

  let root: string;
  let dataDir: string;
  let store: Store;
  let logger: Logger;
  const logLines: Record<string, unknown>[] = [];
  const managers: LocalViewManager[] = [];
  const targets: string[] = [];
  const children: ChildProcess[] = [];
  let views: LocalViewManager;
  let mnt: string;
  const big = prand((6 << 20) + 12345, 1);
  const small = Buffer.from('hello from a capsule\n');
  const expected = new Map<string, Buffer>(); // durable content checked after reopening the store

  const target = (name: string) => {
    const t = path.join(root, name);
    targets.push(t);
    return t;
  };
  const manager = (opts?: ConstructorParameters<typeof LocalViewManager>[2]) => {
    const m = new LocalViewManager(store, logger, opts);
    managers.push(m);
    return m;
  };
  const logged = (event: string) => logLines.filter((l) => l.event === event);

  before(async function () {
    if (fuseReason) {
      console.log(`      skipping the kernel FUSE tests: ${fuseReason}`);
      this.skip();
    }
    root = tmpDir('space-fuse-');
    dataDir = path.join(root, 'data');
    logger = createLogger({
      component: 'fuse-test',
      level: 'debug',
      write: (l) => {
        logLines.push(JSON.parse(l) as Record<string, unknown>);
        if (process.env.SPACE_TEST_LOG) process.stderr.write(l + '\n');
      },
    });
    store = Store.open(dataDir, { logger });
    await store.create({ name: 'fz' });
    await store.put('fz', 'big.bin', chunks(big));
    await store.put('fz', 'dir/small.txt', chunks(small));
    views = manager();
    mnt = target('rw');
    const info = await views.mount({ ref: 'fz', target: mnt, rw: true });
    assert.equal(info.kind, 'fuse');
    assert.equal(info.capsuleId, store.resolveId('fz'));
  });

  after(async function () {
    for (const c of children) c.kill('SIGKILL');
    for (const m of managers) await m.closeAll().catch(() => {});
    // last resort: never leave a mount behind, whatever failed above
    for (const t of targets) if (mountAt(t)) await sh('fusermount', ['-uz', t]);
    if (store) await store.close().catch(() => {});
    if (root) rmrf(root);
  });

  it('cat, dd bs=1M and sha256sum read exactly the bytes that were put', async () => {
    const want = sha256(big);
    assert.equal(shaOf(await ok('sha256sum', [`${mnt}/big.bin`])), want);
    assert.equal(shaOf((await pipe('cat "$1" | sha256sum', `${mnt}/big.bin`)).stdout), want);
    assert.equal(shaOf((await pipe('dd if="$1" bs=1M status=none | sha256sum', `${mnt}/big.bin`)).stdout), want);
    const part = (await pipe('dd if="$1" bs=1M skip=2 count=3 status=none | sha256sum', `${mnt}/big.bin`)).stdout;
    assert.equal(shaOf(part), sha256(big.subarray(2 << 20, 5 << 20)));
    assert.equal(await ok('cat', [`${mnt}/dir/small.txt`]), small.toString());
    assert.ok(views.fuseMount(mnt)!.stats.reads > 0);
  });

  it('ls -l and stat show the tree with the store inode numbers', async () => {
    const ls = await ok('ls', ['-la', mnt]);
    assert.match(ls, / \.\n/);
    assert.match(ls, / big\.bin\n/);
    assert.match(ls, /^d.* dir$/m);
    assert.equal((await ok('stat', ['-c', '%s %a %F', `${mnt}/big.bin`])).trim(), `${big.length} 644 regular file`);
    const ino = Number((await ok('stat', ['-c', '%i', `${mnt}/dir/small.txt`])).trim());
    assert.equal(ino, (await store.getattr('fz', 'dir/small.txt')).ino);
    assert.match(await ok('df', ['-k', mnt]), /space:/);
  });

  it('dd bs=1M into the mount arrives as large writes, not 4 KiB pages', async () => {
    const src = path.join(root, 'src8.bin');
    const data = prand(8 << 20, 2);
    fs.writeFileSync(src, data);
    const stats = views.fuseMount(mnt)!.stats;
    const before = { ...stats };
    await ok('dd', [`if=${src}`, `of=${mnt}/dd.bin`, 'bs=1M', 'status=none']);
    const writes = stats.writes - before.writes;
    const bytes = stats.writeBytes - before.writeBytes;
    const avgKiB = Math.round(bytes / writes / 1024);
    console.log(`      dd bs=1M: ${writes} write requests, average ${avgKiB} KiB, largest ${stats.maxWriteBytes >> 10} KiB`);
    logger.info('test.write-sizes', { writes, bytes, avgKiB, maxWriteBytes: stats.maxWriteBytes });
    assert.equal(bytes, data.length);
    // libfuse 2.9 caps a request at 128 KiB; without big_writes every request would be 4 KiB.
    assert.ok(stats.maxWriteBytes >= 128 << 10, `largest write ${stats.maxWriteBytes}`);
    assert.ok(writes <= data.length / (64 << 10), `${writes} writes for 8 MiB`);
    assert.ok((await store.read('fz', 'dd.bin', 0, data.length)).equals(data), 'store sees the dd bytes');
    assert.equal(shaOf(await ok('sha256sum', [`${mnt}/dd.bin`])), sha256(data));
  });

  it('cp into the rw mount: close commits the bytes to the store', async () => {
    const src = path.join(root, 'src3.bin');
    const data = prand((3 << 20) + 7, 3);
    fs.writeFileSync(src, data);
    await ok('cp', [src, `${mnt}/copied.bin`]);
    await store.flush('fz', 'copied.bin'); // a no-op when close already committed; harmless otherwise
    const back = await store.read('fz', 'copied.bin', 0, data.length + 10);
    assert.equal(back.length, data.length);
    assert.ok(back.equals(data));
    expected.set('copied.bin', data);
  });

  it('mkdir, mv, rm and rmdir change the capsule tree', async () => {
    await ok('mkdir', ['-p', `${mnt}/a/b`]);
    await ok('cp', [`${mnt}/dir/small.txt`, `${mnt}/a/tmp.txt`]);
    await ok('mv', [`${mnt}/a/tmp.txt`, `${mnt}/a/b/moved.txt`]);
    assert.equal((await store.read('fz', 'a/b/moved.txt', 0, 100)).toString(), small.toString());
    await rejects(store.getattr('fz', 'a/tmp.txt'), 'NOT_FOUND');
    const notEmpty = await sh('rmdir', [`${mnt}/a`]);
    assert.notEqual(notEmpty.code, 0);
    assert.match(notEmpty.stderr, /Directory not empty/);
    await ok('mv', [`${mnt}/a/b`, `${mnt}/a/c`]);
    assert.equal((await store.getattr('fz', 'a/c/moved.txt')).size, small.length);
    await ok('rm', [`${mnt}/a/c/moved.txt`]);
    await ok('rmdir', [`${mnt}/a/c`, `${mnt}/a`]);
    await rejects(store.getattr('fz', 'a'), 'NOT_FOUND');
    const missing = await sh('cat', [`${mnt}/a/c/moved.txt`]);
    assert.match(missing.stderr, /No such file or directory/);
  });

  it('truncate -s makes sparse files: holes take no blocks, a seek write allocates one segment', async () => {
    const f = `${mnt}/sparse.img`;
    await ok('truncate', ['-s', '64M', f]);
    assert.equal((await ok('stat', ['-c', '%s %b', f])).trim(), `${64 << 20} 0`);
    assert.equal((await ok('du', ['-k', f])).split(/\s/)[0], '0');
    const src = path.join(root, 'one.bin');
    const one = prand(1 << 20, 4);
    fs.writeFileSync(src, one);
    await ok('dd', [`if=${src}`, `of=${f}`, 'bs=1M', 'seek=3', 'count=1', 'conv=notrunc', 'status=none']);
    const [size, blocks] = (await ok('stat', ['-c', '%s %b', f])).trim().split(' ').map(Number);
    assert.equal(size, 64 << 20);
    assert.equal(blocks, (1 << 20) / 512, 'exactly one 1 MiB segment allocated');
    assert.equal(shaOf((await pipe('dd if="$1" bs=1M skip=3 count=1 status=none | sha256sum', f)).stdout), sha256(one));
    assert.ok((await store.read('fz', 'sparse.img', 0, 4096)).equals(Buffer.alloc(4096)), 'hole reads as zeros');
    // shrinking keeps the prefix
    await ok('truncate', ['-s', '100', `${mnt}/dd.bin`]);
    assert.equal((await ok('stat', ['-c', '%s', `${mnt}/dd.bin`])).trim(), '100');
    assert.ok((await store.read('fz', 'dd.bin', 0, 1000)).equals(prand(8 << 20, 2).subarray(0, 100)));
  });

  it('dd conv=notrunc seek= overwrites part of a file in place, across a segment boundary', async () => {
    await ok('cp', [`${mnt}/big.bin`, `${mnt}/patch.bin`]);
    const want = Buffer.from(big);
    const p1 = prand(3 * 4096, 5);
    const p2 = prand(2000, 6);
    fs.writeFileSync(path.join(root, 'p1'), p1);
    fs.writeFileSync(path.join(root, 'p2'), p2);
    await ok('dd', [`if=${root}/p1`, `of=${mnt}/patch.bin`, 'bs=4096', 'seek=300', 'conv=notrunc', 'status=none']);
    p1.copy(want, 300 * 4096);
    await ok('dd', [`if=${root}/p2`, `of=${mnt}/patch.bin`, 'bs=1000', 'seek=1048', 'conv=notrunc', 'status=none']);
    p2.copy(want, 1048 * 1000); // 1,048,000..1,050,000 crosses the 1 MiB segment boundary
    assert.equal((await ok('stat', ['-c', '%s', `${mnt}/patch.bin`])).trim(), String(big.length));
    assert.equal(shaOf(await ok('sha256sum', [`${mnt}/patch.bin`])), sha256(want));
    assert.ok((await store.read('fz', 'patch.bin', 0, want.length)).equals(want));
    expected.set('patch.bin', want);
  });

  it('chmod and touch -d change metadata', async () => {
    await ok('chmod', ['600', `${mnt}/copied.bin`]);
    assert.equal((await ok('stat', ['-c', '%a', `${mnt}/copied.bin`])).trim(), '600');
    await ok('touch', ['-d', '2020-01-02 03:04:05 UTC', `${mnt}/copied.bin`]);
    assert.equal((await ok('stat', ['-c', '%Y', `${mnt}/copied.bin`])).trim(), '1577934245');
    const a = await store.getattr('fz', 'copied.bin');
    assert.equal(a.mode, 0o600);
    assert.equal(a.mtimeMs, 1577934245000);
    await ok('touch', [`${mnt}/new-empty`]);
    assert.equal((await store.getattr('fz', 'new-empty')).size, 0);
  });

  it('a read-only mount serves reads and rejects every change with EROFS', async () => {
    const ro = target('ro');
    const info = await views.mount({ ref: 'fz', target: ro, rw: false });
    assert.equal(info.rw, false);
    assert.match(mountAt(ro)!.fstype, /^fuse/);
    assert.equal(shaOf(await ok('sha256sum', [`${ro}/big.bin`])), sha256(big));
    for (const [cmd, args] of [
      ['touch', [`${ro}/x`]],
      ['mkdir', [`${ro}/d`]],
      ['rm', [`${ro}/big.bin`]],
      ['truncate', ['-s', '0', `${ro}/big.bin`]],
      ['chmod', ['600', `${ro}/big.bin`]],
    ] as const) {
      const r = await sh(cmd, [...args]);
      assert.notEqual(r.code, 0, cmd);
      assert.match(r.stderr, /Read-only file system/, `${cmd}: ${r.stderr}`);
    }
    const dd = await sh('dd', ['if=/dev/zero', `of=${ro}/big.bin`, 'bs=4k', 'count=1', 'conv=notrunc', 'status=none']);
    assert.match(dd.stderr, /Read-only file system/);
    await views.unmount(ro);
    assert.equal(mountAt(ro), undefined);
    assert.equal((await store.getattr('fz', 'big.bin')).size, big.length);
  });

  it('a corrupt segment makes cat fail with an I/O error instead of returning wrong bytes', async () => {
    await store.create({ name: 'fz-corrupt' });
    const before = new Set(segmentFiles(dataDir));
    const victim = prand((2 << 20) + 5, 9);
    await store.put('fz-corrupt', 'victim.bin', chunks(victim));
    const fresh = segmentFiles(dataDir).filter((f) => !before.has(f));
    assert.ok(fresh.length >= 1, 'the put wrote new segment files');
    const seg = fs.readFileSync(fresh[0]!);
    seg[seg.length >> 1] ^= 0x40;
    fs.writeFileSync(fresh[0]!, seg);

    const t = target('corrupt');
    await views.mount({ ref: 'fz-corrupt', target: t, rw: false });
    const r = await pipe('cat "$1" | sha256sum', `${t}/victim.bin`);
    assert.notEqual(r.code, 0, 'cat must fail');
    assert.match(r.stderr, /Input\/output error/);
    assert.notEqual(shaOf(r.stdout), sha256(victim));
    const rec = logged('fuse.io-error').find((l) => l.path === '/victim.bin');
    assert.ok(rec, 'an EIO is logged with capsule and path');
    assert.equal(rec.capsule, store.resolveId('fz-corrupt'));
    assert.match(String(rec.err), /integrity failure/);
    await views.unmount(t);
  });

  it('unmount of a busy mount retries, then detaches lazily', async () => {
    const m = manager({ fuse: { unmount: { retries: 2, retryDelayMs: 50 } } });
    const t = target('busy');
    await m.mount({ ref: 'fz', target: t, rw: true });
    // cd happens in bash after exec, so our JS thread is free to answer the lookup.
    const holder = spawn('bash', ['-c', 'cd "$1" && echo in && exec sleep 60', 'bash', t], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(holder);
    await new Promise<void>((resolve, reject) => {
      holder.stdout!.once('data', () => resolve());
      holder.once('exit', (c) => reject(new Error(`holder exited early (${c})`)));
    });
    await m.unmount(t);
    assert.equal(mountAt(t), undefined, 'detached from the namespace');
    assert.ok(logged('fuse.unmount.lazy').some((l) => l.target === t), 'the lazy fallback is logged');
    assert.deepEqual(m.list(), []);
    holder.kill('SIGKILL');
  });

  it('mount errors: unknown capsule, busy target, non-empty dir, file target; unknown unmount', async () => {
    await rejects(views.mount({ ref: 'no-such-capsule', target: target('nf'), rw: true }), 'NOT_FOUND');
    await rejects(views.mount({ ref: 'fz', target: mnt, rw: true }), 'ALREADY_EXISTS', /already mounted/);
    const other = manager();
    const e = await rejects(other.mount({ ref: 'fz', target: mnt, rw: true }), 'FAILED_PRECONDITION', /busy.*already mounted/);
    assert.equal(e.errno, 'EBUSY');
    const full = target('full');
    fs.mkdirSync(full);
    fs.writeFileSync(path.join(full, 'x'), 'x');
    assert.equal((await rejects(views.mount({ ref: 'fz', target: full, rw: true }), 'FAILED_PRECONDITION', /not empty/)).errno, 'EBUSY');
    const file = target('a-file');
    fs.writeFileSync(file, '');
    assert.equal((await rejects(views.mount({ ref: 'fz', target: file, rw: true }), 'FAILED_PRECONDITION', /not a directory/)).errno, 'ENOTDIR');
    await rejects(views.mount({ ref: 'fz', target: 'relative/dir', rw: true }), 'INVALID_ARGUMENT');
    await rejects(views.mount({ ref: 'fz', target: `${mnt}/nested`, rw: true }), 'INVALID_ARGUMENT', /inside the FUSE view/);
    await rejects(views.unmount(path.join(root, 'never-mounted')), 'NOT_FOUND');
    assert.deepEqual(views.list().map((v) => v.target), [mnt]);
  });

  it('force: a dead FUSE mount left by a killed process is cleaned before mounting', async () => {
    const t = target('stale');
    const fuseNative = createRequire(import.meta.url).resolve('fuse-native');
    const script = `const F = require(process.argv[1]);
      const d = new Date();
      const f = new F(process.argv[2], { getattr: (p, cb) => cb(0, { mode: 0o40755, size: 0, nlink: 2, atime: d, mtime: d, ctime: d }) }, { mkdir: true });
      f.mount((e) => { if (e) { console.error(e); process.exit(1); } console.log('ready'); });`;
    const server = spawn(process.execPath, ['-e', script, fuseNative, t], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(server);
    await new Promise<void>((resolve, reject) => {
      server.stdout!.once('data', () => resolve());
      server.once('exit', (c) => reject(new Error(`stale-mount helper exited (${c})`)));
    });
    const exited = new Promise((r) => server.once('exit', r));
    server.kill('SIGKILL');
    await exited;
    assert.ok(mountAt(t), 'the dead mount is still in the mount table');
    assert.match((await sh('stat', [t])).stderr, /not connected/);
    await views.mount({ ref: 'fz', target: t, rw: false });
    assert.ok(logged('fuse.stale-mount').some((l) => l.target === t));
    assert.equal(shaOf(await ok('sha256sum', [`${t}/big.bin`])), sha256(big));
    await views.unmount(t);
    assert.equal(mountAt(t), undefined);
  });

  it('content-file fallback (forced) places a readable read-only copy and says so', async () => {
    const m = manager({ forceContentFile: true });
    assert.equal(m.fuse.ok, false);
    const t = target('copy');
    const info = await m.mount({ ref: 'fz', target: t, rw: true });
    assert.equal(info.kind, 'content-file');
    assert.equal(info.rw, false);
    assert.equal(mountAt(t), undefined, 'nothing is mounted');
    // not a FUSE mount, so reading it from this process is fine
    assert.equal(sha256(fs.readFileSync(path.join(t, 'big.bin'))), sha256(big));
    assert.equal(fs.readFileSync(path.join(t, 'dir/small.txt'), 'utf8'), small.toString());
    assert.equal(fs.statSync(path.join(t, 'big.bin')).mode & 0o222, 0, 'files are read-only');
    assert.equal(fs.statSync(path.join(t, 'dir')).mode & 0o222, 0, 'directories are read-only');
    const sparse = fs.statSync(path.join(t, 'sparse.img'));
    assert.equal(sparse.size, 64 << 20);
    assert.ok(sparse.blocks * 512 <= 2 << 20, `the copy keeps holes (${sparse.blocks} blocks)`);
    const warn = logged('view.content-file').find((l) => l.target === t);
    assert.ok(warn && /COPY/.test(String(warn.msg)), 'the copy is logged as a copy');
    assert.deepEqual(m.list().map((v) => v.kind), ['content-file']);
    await m.unmount(t);
    assert.deepEqual(fs.readdirSync(t), []);
    await rejects(m.unmount(t), 'NOT_FOUND');
  });

  it('after unmounting everything and reopening the store, written bytes are durable', async () => {
    for (const m of managers) await m.closeAll();
    for (const t of targets) assert.equal(mountAt(t), undefined, `${t} still mounted`);
    assert.ok(logged('fuse.unmounted').length > 0);
    await store.close();
    store = Store.open(dataDir, { logger });
    for (const [p, want] of expected) {
      const got = await store.read('fz', p, 0, want.length + 1);
      assert.ok(got.equals(want), `${p} differs after reopen`);
    }
    assert.equal((await store.getattr('fz', 'sparse.img')).size, 64 << 20);
  });
});
