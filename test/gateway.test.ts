/**
 * The gateway end to end: a real Store behind a real gRPC server, driven by GatewayClient (and
 * a raw grpc-js client for status-level checks) over TCP and over the unix socket.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { IntegrityError, SpaceError } from '../capsule/errors.js';
import { defaultPolicy } from '../capsule/policy.js';
import type { PutOptions } from '../capsule/api.js';
import { Store } from '../capsule/store.js';
import { sharedSegmentPool } from '../capsule/segment-pool.js';
import type { ChangeEvent } from '../capsule/types.js';
import { GatewayClient } from '../gateway/client.js';
import type { MountInfo, MountSpec, ViewManager } from '../gateway/views-api.js';
import {
  MiB, collect, httpGet, metricValue, pieces, rawClient, rawUnary, segmentFiles, sha256, startTestGateway, tempDir,
  type RawClient, type TestGateway,
} from './gateway-helpers.js';

async function rejectsWith(p: Promise<unknown>, code: string, errno?: string, msg?: RegExp): Promise<SpaceError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof SpaceError, `expected a SpaceError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (errno) assert.equal(err.errno, errno);
    if (msg) assert.match(err.message, msg);
    return err;
  }
  assert.fail(`expected ${code}`);
}

describe('gateway: Capsule API over gRPC (real Store)', function () {
  let dir: string;
  let gw: TestGateway;
  let tcp: GatewayClient;
  let uds: GatewayClient;
  let raw: RawClient;

  before(async () => {
    dir = tempDir();
    gw = await startTestGateway(dir);
    tcp = new GatewayClient(`127.0.0.1:${gw.grpcPort}`);
    uds = new GatewayClient(`unix://${gw.socketPath}`);
    raw = rawClient(`127.0.0.1:${gw.grpcPort}`);
  });

  after(async () => {
    tcp?.close();
    uds?.close();
    raw?.close();
    await gw?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('listens on TCP and on <dataDir>/gateway.sock, logs it, and records the socket in the owner lock', () => {
    assert.ok(gw.grpcPort > 0);
    assert.equal(gw.socketPath, path.join(dir, 'gateway.sock'));
    assert.ok(fs.statSync(gw.socketPath).isSocket());
    const listening = gw.logs.find((l) => l.event === 'gateway.listening');
    assert.ok(listening, 'gateway.listening logged');
    assert.equal(listening.grpc, `127.0.0.1:${gw.grpcPort}`);
    assert.equal(listening.socket, gw.socketPath);
    const owner = JSON.parse(fs.readFileSync(path.join(dir, 'owner.json'), 'utf8')) as { pid: number; endpoint?: string };
    assert.equal(owner.pid, process.pid);
    assert.equal(owner.endpoint, `unix://${gw.socketPath}`);
  });

  it('creates capsules and sees them over both transports', async () => {
    const info = await tcp.create({ id: 'alpha', policy: { ...defaultPolicy(), compression: 'gzip' } });
    assert.equal(info.id, 'alpha');
    assert.equal(info.policy.compression, 'gzip');
    assert.deepEqual(info.versions, []);
    const got = await uds.get('alpha');
    assert.deepEqual(got, info);
    const named = await uds.create({ name: 'beta.example' });
    assert.match(named.id, /^[0-9a-f-]{36}$/);
    const names = (await tcp.list()).map((c) => c.name);
    assert.ok(names.includes('alpha') && names.includes('beta.example'));
  });

  it('streams a multi-MiB put and reads it back whole and in ranges (sha256 matches)', async () => {
    const data = crypto.randomBytes(5 * MiB + 123);
    const attr = await tcp.put('alpha', 'dir/blob.bin', pieces(data, 300 * 1024 + 7), { mode: 0o600 });
    assert.equal(attr.size, data.length);
    assert.equal(attr.type, 'file');
    assert.equal(attr.mode, 0o600);

    const whole = await uds.read('alpha', 'dir/blob.bin', 0, data.length + 10);
    assert.equal(whole.length, data.length);
    assert.equal(sha256(whole), sha256(data));
    const ranges: [number, number][] = [[0, 10], [MiB - 5, 10], [3 * MiB + 17, 2 * MiB], [data.length - 7, 100]];
    for (const [off, len] of ranges) {
      const got = await tcp.read('alpha', 'dir/blob.bin', off, len);
      const want = data.subarray(off, Math.min(data.length, off + len));
      assert.equal(sha256(got), sha256(want), `range ${off}+${len}`);
    }
    assert.equal((await tcp.read('alpha', 'dir/blob.bin', data.length + 5, 10)).length, 0, 'past EOF reads empty');
    // readStream without a length goes to the end of file
    const tail = Buffer.concat(await collect(uds.readStream('alpha', 'dir/blob.bin', { offset: 4 * MiB })));
    assert.equal(sha256(tail), sha256(data.subarray(4 * MiB)));
  });

  it('sends large segments in wire chunks of at most 1 MiB', async () => {
    await tcp.create({ id: 'bigseg', policy: { ...defaultPolicy(), segmentSize: 8 * MiB } });
    const data = crypto.randomBytes(10 * MiB);
    await uds.put('bigseg', 'content', pieces(data, 2 * MiB));
    const chunks = await collect(tcp.readStream('bigseg', 'content'));
    assert.ok(chunks.length >= 10);
    assert.ok(chunks.every((c) => c.length <= MiB), `chunk sizes ${chunks.map((c) => c.length).join(',')}`);
    assert.equal(sha256(Buffer.concat(chunks)), sha256(data));
  });

  it('writes, truncates and manages the tree', async () => {
    await tcp.create({ id: 'tree' });
    await tcp.mkdir('tree', 'a', 0o750);
    const f = await tcp.createFile('tree', 'a/f.txt', 0o640);
    assert.equal(f.mode, 0o640);
    assert.equal(await tcp.write('tree', 'a/f.txt', 0, Buffer.from('hello world')), 11);
    assert.equal(await uds.write('tree', 'a/f.txt', 6, Buffer.from('gRPC!')), 5);
    assert.equal((await tcp.read('tree', 'a/f.txt', 0, 100)).toString(), 'hello gRPC!');
    // a write larger than one gRPC message goes out in pieces
    const big = crypto.randomBytes(9 * MiB + 3);
    await uds.createFile('tree', 'big');
    assert.equal(await tcp.write('tree', 'big', 0, big), big.length);
    assert.equal(sha256(await uds.read('tree', 'big', 0, big.length)), sha256(big));
    await tcp.truncate('tree', 'a/f.txt', 5);
    assert.equal((await tcp.getattr('tree', 'a/f.txt')).size, 5);
    const set = await tcp.setattr('tree', 'a/f.txt', { mode: 0o600, mtimeMs: 1_000_000 });
    assert.equal(set.mode, 0o600);
    assert.equal(set.mtimeMs, 1_000_000);
    await tcp.rename('tree', 'a/f.txt', 'a/g.txt');
    const entries = await uds.readdir('tree', 'a');
    assert.deepEqual(entries.map((e) => e.name), ['g.txt']);
    assert.equal(entries[0]!.attr.size, 5);
    assert.equal((await tcp.getattr('tree', 'a')).type, 'dir');
    await tcp.unlink('tree', 'a/g.txt');
    await tcp.rmdir('tree', 'a');
    assert.deepEqual((await tcp.readdir('tree', '/')).map((e) => e.name), ['big']);
  });

  it('snapshots, reads old versions, clones, stats and deletes', async () => {
    await tcp.create({ id: 'ver' });
    await tcp.put('ver', 'content', pieces(Buffer.from('version one'), 4));
    const v1 = await tcp.snapshot('ver');
    assert.equal(v1, 1);
    await tcp.write('ver', 'content', 8, Buffer.from('TWO'));
    assert.equal((await tcp.read('ver', 'content', 0, 100)).toString(), 'version TWO');
    assert.equal((await uds.read('ver', 'content', 0, 100, v1)).toString(), 'version one');
    assert.equal((await uds.getattr('ver', 'content', v1)).size, 11);
    assert.deepEqual((await tcp.readdir('ver', '', v1)).map((e) => e.name), ['content']);
    const info = await tcp.get('ver');
    assert.deepEqual(info.versions.map((v) => v.version), [1]);
    assert.equal(info.versions[0]!.logicalSize, 11);

    const fromV1 = await tcp.clone('ver', { id: 'ver-clone', version: v1 });
    assert.deepEqual(fromV1.origin, { capsule: 'ver', version: 1 });
    const fromHead = await uds.clone('ver', { id: 'ver-head' });
    assert.deepEqual(fromHead.origin, { capsule: 'ver', version: null });
    assert.equal((await tcp.read('ver-clone', 'content', 0, 100)).toString(), 'version one');
    assert.equal((await tcp.read('ver-head', 'content', 0, 100)).toString(), 'version TWO');
    const st = await tcp.stat('ver-head');
    assert.equal(st.logicalSize, 11);
    assert.equal(st.files, 1);
    assert.equal(st.digest, (await tcp.stat('ver')).digest);
    assert.deepEqual((await tcp.stat('ver')).versions, [1]);

    await tcp.delete('ver-head');
    await rejectsWith(tcp.get('ver-head'), 'NOT_FOUND', 'ENOENT');
    const ss = await uds.storeStat();
    assert.ok(ss.capsules >= 4 && ss.segments > 0 && ss.storedBytes > 0);
    const gc = await tcp.gc();
    assert.ok(gc.segmentsRemoved >= 0);
    const fsck = await tcp.fsck();
    assert.deepEqual(fsck.problems, []);
    assert.ok(fsck.segmentsChecked > 0);
  });

  it('streams change events to a watcher until it aborts', async () => {
    const ac = new AbortController();
    const feed = uds.watch(ac.signal);
    await feed.ready; // the gateway has subscribed: nothing after this point is missed
    const seen: ChangeEvent[] = [];
    const done = (async () => {
      for await (const ev of feed) {
        seen.push(ev);
        if (seen.some((e) => e.kind === 'snapshot')) ac.abort();
      }
    })();
    await tcp.create({ id: 'watched' });
    await tcp.put('watched', 'x/y', pieces(Buffer.from('data'), 2));
    await tcp.snapshot('watched');
    await done; // ends normally after abort
    const mine = seen.filter((e) => e.capsule === 'watched');
    assert.deepEqual(mine.map((e) => e.kind), ['created', 'written', 'snapshot']);
    assert.equal(mine[1]!.path, 'x/y');
    assert.equal(mine[2]!.version, 1);
    assert.ok(!Number.isNaN(Date.parse(mine[0]!.at)));
  });

  describe('errors', () => {
    it('INVALID_ARGUMENT: malformed and invalid policy JSON, with the validator message', async () => {
      const bad = await rawUnary(raw, 'Create', { id: 'badjson', policy_json: '{"compression": ' });
      assert.equal(bad.err?.code, grpc.status.INVALID_ARGUMENT);
      assert.match(bad.err!.details, /policy_json is not valid JSON/);
      assert.equal(bad.err!.metadata.get('space-errno')[0], 'EINVAL');

      const invalid = await rawUnary(raw, 'Create', { id: 'badpolicy', policy_json: '{"compression":"lz4","segmentSize":"3KiB"}' });
      assert.equal(invalid.err?.code, grpc.status.INVALID_ARGUMENT);
      assert.match(invalid.err!.details, /compression: must be one of none, gzip, brotli, zstd/);
      assert.match(invalid.err!.details, /segmentSize: must be between 4KiB and 64MiB/);

      // the same through GatewayClient: a SpaceError with the errno
      const policy = { ...defaultPolicy(), redundancy: { replicas: 9 } };
      await rejectsWith(tcp.create({ id: 'badpolicy', policy }), 'INVALID_ARGUMENT', 'EINVAL', /replicas: must be an integer from 1 to 5/);
      await rejectsWith(tcp.get('badpolicy'), 'NOT_FOUND');
    });

    it('INVALID_ARGUMENT: missing fields, negative offsets, wrong message order', async () => {
      const noRef = await rawUnary(raw, 'Get', {});
      assert.equal(noRef.err?.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(noRef.err!.details, 'ref is required');
      const noPath = await rawUnary(raw, 'Unlink', { ref: 'alpha' });
      assert.equal(noPath.err?.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(noPath.err!.details, 'path is required');
      const negWrite = await rawUnary(raw, 'Write', { ref: 'alpha', path: 'x', offset: -1, data: Buffer.from('x') });
      assert.equal(negWrite.err?.code, grpc.status.INVALID_ARGUMENT);
      assert.match(negWrite.err!.details, /offset must be a non-negative integer \(got -1\)/);
      const badMode = await rawUnary(raw, 'Mkdir', { ref: 'alpha', path: 'd', mode: 0o17777 });
      assert.equal(badMode.err?.code, grpc.status.INVALID_ARGUMENT);

      await rejectsWith(tcp.read('alpha', 'dir/blob.bin', -5, 10), 'INVALID_ARGUMENT', 'EINVAL', /offset must be a non-negative/);
      await rejectsWith(tcp.read('alpha', 'dir/blob.bin', 0, 10, -2), 'INVALID_ARGUMENT', 'EINVAL', /version/);
      await rejectsWith(uds.truncate('alpha', '', 0), 'INVALID_ARGUMENT', 'EINVAL', /path is required/);

      // Put whose first message is data, not a header
      const st = await new Promise<grpc.ServiceError | null>((resolve) => {
        const call = (raw.Put as (cb: (e: grpc.ServiceError | null) => void) => grpc.ClientWritableStream<object>).call(raw, resolve);
        call.write({ data: Buffer.from('oops') });
        call.end();
      });
      assert.equal(st?.code, grpc.status.INVALID_ARGUMENT);
      assert.match(st!.details, /first message must be a header/);
    });

    it('NOT_FOUND: unknown capsule, unknown file, unknown version', async () => {
      await rejectsWith(tcp.get('no-such-capsule'), 'NOT_FOUND', 'ENOENT', /capsule no-such-capsule not found/);
      await rejectsWith(uds.read('alpha', 'no/such/file', 0, 1), 'NOT_FOUND', 'ENOENT', /not found in capsule alpha/);
      await rejectsWith(tcp.put('no-such-capsule', 'f', pieces(Buffer.alloc(3 * MiB), MiB)), 'NOT_FOUND', 'ENOENT');
      await rejectsWith(tcp.getattr('alpha', 'dir', 42), 'NOT_FOUND', 'ENOENT', /no version 42/);
      const st = await rawUnary(raw, 'Stat', { ref: 'nope' });
      assert.equal(st.err?.code, grpc.status.NOT_FOUND);
    });

    it('ALREADY_EXISTS: creating the same id twice', async () => {
      await tcp.create({ id: 'twice' });
      await rejectsWith(uds.create({ id: 'twice' }), 'ALREADY_EXISTS', 'EEXIST', /capsule twice already exists/);
      const r = await rawUnary(raw, 'Create', { id: 'twice', policy_json: '' });
      assert.equal(r.err?.code, grpc.status.ALREADY_EXISTS);
    });

    it('UNIMPLEMENTED for views when the gateway has no view manager', async () => {
      const r = await rawUnary(raw, 'ListMounts', {});
      assert.equal(r.err?.code, grpc.status.UNIMPLEMENTED);
      await rejectsWith(tcp.mount({ ref: 'alpha', target: '/mnt/x', rw: false }), 'FAILED_PRECONDITION', undefined, /serves no views/);
    });

    it('put with createWith creates the capsule on first upload', async () => {
      const attr = await tcp.put('auto-made', 'content', pieces(Buffer.from('abc'), 1), { createWith: { policy: { ...defaultPolicy(), compression: 'brotli' } } });
      assert.equal(attr.size, 3);
      assert.equal((await tcp.get('auto-made')).policy.compression, 'brotli');
    });

    it('a put whose source fails is cancelled and leaves no file', async () => {
      async function* failing() {
        yield Buffer.alloc(MiB, 1);
        throw new Error('disk read error on the client');
      }
      await assert.rejects(tcp.put('alpha', 'half.bin', failing()), /disk read error on the client/);
      await rejectsWith(tcp.getattr('alpha', 'half.bin'), 'NOT_FOUND');
    });
  });

  // after the error tests (mocha runs a suite's own tests before its nested suites)
  describe('probes and metrics', () => {
    it('serves /healthz, /readyz and /metrics with counters after the calls above', async () => {
      assert.equal((await httpGet(gw.httpPort, '/healthz')).status, 200);
      const ready = await httpGet(gw.httpPort, '/readyz');
      assert.equal(ready.status, 200);
      assert.equal(ready.body, 'ready\n');
      assert.equal((await httpGet(gw.httpPort, '/nope')).status, 404);
      // Writes above may still be committing in the background (write-behind): compare the
      // store gauges with a storeStat taken while nothing changed around the scrape.
      let m = await httpGet(gw.httpPort, '/metrics');
      let ss = await tcp.storeStat();
      for (let i = 0; i < 100; i++) {
        const before = ss;
        m = await httpGet(gw.httpPort, '/metrics');
        ss = await tcp.storeStat();
        if (before.segments === ss.segments && before.storedBytes === ss.storedBytes) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(m.status, 200);
      assert.match(m.type ?? '', /^text\/plain/);
      assert.ok(metricValue(m.body, 'space_gateway_bytes_in_total')! > 5 * MiB);
      assert.ok(metricValue(m.body, 'space_gateway_bytes_out_total')! > 5 * MiB);
      assert.ok(metricValue(m.body, 'space_gateway_ops_total{op="Put",code="OK"}')! >= 3);
      assert.ok(metricValue(m.body, 'space_gateway_ops_total{op="Get",code="NOT_FOUND"}')! >= 1);
      assert.ok(metricValue(m.body, 'space_gateway_ops_total{op="Create",code="INVALID_ARGUMENT"}')! >= 2);
      assert.ok(metricValue(m.body, 'space_gateway_op_duration_seconds_count{op="Read"}')! >= 1);
      assert.match(m.body, /space_gateway_op_duration_seconds_bucket\{le="\+Inf",op="Put"\} \d+/);
      assert.equal(metricValue(m.body, 'space_store_segments'), ss.segments);
      assert.equal(metricValue(m.body, 'space_store_stored_bytes'), ss.storedBytes);
      assert.ok(metricValue(m.body, 'space_store_dedup_ratio')! > 0);
      assert.equal(metricValue(m.body, 'space_integrity_failures_total'), 0);
      // The gateway's store keeps cached plaintext in the process's segment pool.
      const pool = sharedSegmentPool().snapshot();
      assert.ok(metricValue(m.body, 'space_segment_pool_bytes')! > 0, 'the reads above used the pool');
      assert.equal(metricValue(m.body, 'space_segment_pool_bytes'), pool.bytes);
      for (const name of ['slots_in_use', 'reused_total', 'kept_total', 'refused_total']) {
        assert.ok(Number.isFinite(metricValue(m.body, `space_segment_pool_${name}`)), `space_segment_pool_${name} is exported`);
      }
    });
  });
});

describe('gateway: integrity failures reach the client as DATA_LOSS', function () {
  let dir: string;
  let gw: TestGateway | undefined;
  let client: GatewayClient | undefined;

  before(() => { dir = tempDir(); });
  after(async () => {
    client?.close();
    await gw?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('names capsule, file and offset; undamaged ranges still read; the metric counts it', async () => {
    gw = await startTestGateway(dir);
    client = new GatewayClient(`127.0.0.1:${gw.grpcPort}`);
    await client.create({ name: 'fragile' });
    const [p, q, r] = [crypto.randomBytes(MiB), crypto.randomBytes(MiB), crypto.randomBytes(MiB)];
    // Store Q alone first so its segment file is identifiable, then a file whose 2nd segment is Q.
    await client.put('fragile', 'q-only', pieces(q, MiB));
    const qFiles = segmentFiles(dir);
    assert.equal(qFiles.length, 1);
    await client.put('fragile', 'data/three.bin', pieces(Buffer.concat([p, q, r]), 256 * 1024));
    assert.equal(segmentFiles(dir).length, 3, 'Q is deduplicated');
    client.close();
    await gw.close(); // a fresh store afterwards: no verified segment is cached

    const blob = fs.readFileSync(qFiles[0]!);
    blob[blob.length >> 1]! ^= 0x40;
    fs.writeFileSync(qFiles[0]!, blob);

    gw = await startTestGateway(dir);
    client = new GatewayClient(`unix://${gw.socketPath}`);
    const err = await rejectsWith(client.read('fragile', 'data/three.bin', 0, 3 * MiB), 'DATA_LOSS', 'EIO');
    assert.ok(err instanceof IntegrityError, 'rebuilt as IntegrityError');
    assert.match(err.message, /integrity failure in capsule fragile, file data\/three\.bin at offset 1048576/);
    assert.equal(err.offset, MiB);
    assert.equal(err.file, 'data/three.bin');
    // the undamaged segments still read correctly: the failure is precise, never wrong bytes
    assert.equal(sha256(await client.read('fragile', 'data/three.bin', 0, MiB)), sha256(p));
    assert.equal(sha256(await client.read('fragile', 'data/three.bin', 2 * MiB, MiB)), sha256(r));

    const raw = rawClient(`127.0.0.1:${gw.grpcPort}`);
    try {
      const status = await new Promise<grpc.StatusObject>((resolve) => {
        const call = raw.Read!.call(raw, { ref: 'fragile', path: 'q-only', offset: 0 }) as grpc.ClientReadableStream<unknown>;
        call.on('data', () => assert.fail('no bytes of a damaged segment may be sent'));
        call.on('error', () => {});
        call.on('status', resolve);
      });
      assert.equal(status.code, grpc.status.DATA_LOSS);
      assert.match(status.details, /capsule fragile, file q-only at offset 0/);
    } finally {
      raw.close();
    }

    const fsck = await client.fsck();
    assert.ok(fsck.problems.some((pr) => pr.file === 'data/three.bin' && pr.offset === MiB), JSON.stringify(fsck.problems));
    const m = await httpGet(gw.httpPort, '/metrics');
    assert.ok(metricValue(m.body, 'space_integrity_failures_total')! >= 2);
    assert.ok(metricValue(m.body, 'space_gateway_ops_total{op="Read",code="DATA_LOSS"}')! >= 2);
    assert.ok(gw.logs.some((l) => l.event === 'gateway.integrity_failure' && l.file === 'data/three.bin' && l.offset === MiB));
  });
});

describe('gateway: a full disk is RESOURCE_EXHAUSTED', function () {
  let dir: string;
  let mounted = false;
  let gw: TestGateway | undefined;
  let client: GatewayClient | undefined;

  before(function () {
    dir = tempDir();
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', dir], { stdio: 'pipe' });
      mounted = true;
    } catch (err) {
      console.log(`      (skipped: cannot mount a 3 MiB tmpfs here: ${(err as Error).message.split('\n')[0]})`);
      this.skip();
    }
  });
  after(async () => {
    client?.close();
    await gw?.close();
    if (mounted) execFileSync('umount', [dir]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('rejects a put larger than the disk with ENOSPC and keeps serving', async () => {
    gw = await startTestGateway(dir);
    client = new GatewayClient(`127.0.0.1:${gw.grpcPort}`);
    await client.create({ id: 'small' });
    await client.put('small', 'ok', pieces(Buffer.from('fits'), 4));
    await rejectsWith(client.put('small', 'huge', pieces(crypto.randomBytes(8 * MiB), MiB)), 'RESOURCE_EXHAUSTED', 'ENOSPC', /no space left/);
    // still healthy: earlier data reads back, the failed file does not exist
    assert.equal((await client.read('small', 'ok', 0, 10)).toString(), 'fits');
    await rejectsWith(client.getattr('small', 'huge'), 'NOT_FOUND');
    assert.equal((await httpGet(gw.httpPort, '/readyz')).status, 200);
  });
});

describe('gateway: lifecycle and views', function () {
  const dirs: string[] = [];
  after(() => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }); });

  it('applies backpressure end to end: a slow store holds back the uploading client', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const real = Store.open(dir);
    let consumed = 0;
    let produced = 0;
    let maxLead = 0;
    // The real store, with a put that takes its time over every chunk (a slow disk).
    const slow = new Proxy(real, {
      get(target, key) {
        if (key === 'put') {
          return (ref: string, p: string, source: AsyncIterable<Uint8Array>, o?: PutOptions) => target.put(ref, p, (async function* () {
            for await (const chunk of source) {
              consumed += chunk.length;
              await new Promise((r) => setTimeout(r, 3));
              yield chunk;
            }
          })(), o);
        }
        const v = Reflect.get(target, key, target) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const gw = await startTestGateway(dir, { store: slow });
    const client = new GatewayClient(`127.0.0.1:${gw.grpcPort}`);
    try {
      await client.create({ id: 'slow' });
      const chunk = Buffer.alloc(MiB, 7);
      const total = 128;
      async function* source() {
        for (let i = 0; i < total; i++) {
          produced += MiB;
          maxLead = Math.max(maxLead, produced - consumed);
          yield chunk;
        }
      }
      const attr = await client.put('slow', 'content', source());
      assert.equal(attr.size, total * MiB);
      assert.equal(consumed, total * MiB);
      // Without flow control the client would read its whole source (128 MiB) at once.
      assert.ok(maxLead <= 48 * MiB, `client ran ${maxLead / MiB} MiB ahead of the store`);
    } finally {
      client.close();
      await gw.close();
    }
  });

  it('is not ready while shutting down, then frees the socket and the data dir', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const gw = await startTestGateway(dir);
    const client = new GatewayClient(`127.0.0.1:${gw.grpcPort}`);
    await client.create({ id: 'vol', size: 256 * MiB }); // sparse: a long read costs no disk
    // A reader that stops pulling keeps a Read call in flight, so shutdown has to wait for it.
    const it = client.readStream('vol', 'content')[Symbol.asyncIterator]();
    assert.equal((await it.next()).value.length, MiB);
    const closing = gw.close();
    const ready = await httpGet(gw.httpPort, '/readyz');
    assert.equal(ready.status, 503);
    assert.match(ready.body, /shutting down/);
    assert.equal((await httpGet(gw.httpPort, '/healthz')).status, 200);
    await it.return!(undefined); // the reader goes away; the call ends; shutdown completes
    await closing;
    client.close();
    assert.ok(!fs.existsSync(path.join(dir, 'gateway.sock')));
    assert.ok(gw.logs.some((l) => l.event === 'gateway.closed'));
    // the owner lock is released: another gateway can open the same data dir
    const again = await startTestGateway(dir);
    const c2 = new GatewayClient(`unix://${again.socketPath}`);
    assert.equal((await c2.getattr('vol', 'content')).size, 256 * MiB);
    c2.close();
    await again.close();
  });

  it('refuses a second gateway on a data dir that is in use', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const gw = await startTestGateway(dir);
    try {
      await rejectsWith(startTestGateway(dir), 'UNAVAILABLE', 'EBUSY');
      assert.ok(fs.statSync(gw.socketPath!).isSocket(), 'the running gateway keeps its socket');
    } finally {
      await gw.close();
    }
  });

  it('ends open Watch streams with UNAVAILABLE on close instead of waiting for them', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const gw = await startTestGateway(dir);
    const client = new GatewayClient(`unix://${gw.socketPath}`);
    try {
      const feed = client.watch(new AbortController().signal);
      await feed.ready;
      const iterating = (async () => { for await (const _ of feed) { /* none expected */ } })();
      const outcome = rejectsWith(iterating, 'UNAVAILABLE', undefined, /shutting down/);
      await gw.close();
      await outcome;
      assert.ok(!gw.logs.some((l) => l.event === 'gateway.shutdown_forced'), 'graceful shutdown, not forced');
    } finally {
      client.close();
    }
  });

  it('maps an unexpected store exception to INTERNAL and logs it', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const real = Store.open(dir);
    const broken = new Proxy(real, {
      get(target, key) {
        if (key === 'stat') return async () => { throw new TypeError('cannot read properties of undefined'); };
        const v = Reflect.get(target, key, target) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const gw = await startTestGateway(dir, { store: broken });
    const client = new GatewayClient(`127.0.0.1:${gw.grpcPort}`);
    try {
      await client.create({ id: 'c' });
      await rejectsWith(client.stat('c'), 'INTERNAL', 'EIO', /internal error: cannot read properties of undefined/);
      const line = gw.logs.find((l) => l.event === 'gateway.internal_error');
      assert.equal(line?.op, 'Stat');
      assert.equal(line?.level, 'error');
    } finally {
      client.close();
      await gw.close();
    }
  });

  it('runGateway serves until SIGTERM, then shuts down cleanly (the spacectl serve path)', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const runJs = new URL('../gateway/run.js', import.meta.url).href;
    const script = `import { runGateway } from ${JSON.stringify(runJs)};
      await runGateway({ dataDir: ${JSON.stringify(dir)}, listen: '127.0.0.1:0', httpListen: '' },
        (gw) => process.stdout.write(JSON.stringify({ port: gw.grpcPort }) + '\\n'));
      process.stdout.write('exited-cleanly\\n');`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        const m = /\{"port":(\d+)\}/.exec(stdout);
        if (m) resolve(Number(m[1]));
      });
      exited.then(() => reject(new Error(`gateway exited early: ${stderr}`)));
    });
    const client = new GatewayClient(`127.0.0.1:${port}`);
    await client.create({ id: 'served' });
    client.close();
    child.kill('SIGTERM');
    assert.equal(await exited, 0, stderr);
    assert.match(stdout, /exited-cleanly/);
    const events = stderr.trim().split('\n').map((l) => (JSON.parse(l) as { event: string }).event);
    for (const e of ['gateway.listening', 'gateway.signal', 'gateway.closing', 'gateway.closed']) assert.ok(events.includes(e), `${e} in ${events.join(',')}`);
    assert.ok(!fs.existsSync(path.join(dir, 'owner.json')), 'owner lock released');
    assert.ok(!fs.existsSync(path.join(dir, 'gateway.sock')), 'socket removed');
  });

  it('routes Mount/Unmount/ListMounts to the view manager', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const mounts = new Map<string, MountInfo>();
    let closedAll = false;
    const views: ViewManager = {
      async mount(spec: MountSpec) {
        const info: MountInfo = { ...spec, capsuleId: spec.ref, kind: 'content-file', since: new Date(0).toISOString() };
        mounts.set(spec.target, info);
        return info;
      },
      async unmount(target: string) {
        if (!mounts.delete(target)) throw new SpaceError('NOT_FOUND', `${target} is not mounted`);
      },
      list: () => [...mounts.values()],
      async closeAll() { closedAll = true; },
    };
    const gw = await startTestGateway(dir, { views });
    const client = new GatewayClient(`unix://${gw.socketPath}`);
    try {
      const info = await client.mount({ ref: 'cap', target: '/mnt/cap', rw: true });
      assert.deepEqual(info, { ref: 'cap', target: '/mnt/cap', rw: true, capsuleId: 'cap', kind: 'content-file', since: '1970-01-01T00:00:00.000Z' });
      assert.deepEqual((await client.listMounts()).map((m) => m.target), ['/mnt/cap']);
      await client.unmount('/mnt/cap');
      await rejectsWith(client.unmount('/mnt/cap'), 'NOT_FOUND', 'ENOENT');
      assert.deepEqual(await client.listMounts(), []);
    } finally {
      client.close();
      await gw.close();
    }
    assert.ok(closedAll, 'close() unmounts every view');
  });
});
