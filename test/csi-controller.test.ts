/**
 * CSI Identity + Controller end to end: a real store behind a real gateway, the CSI server on a
 * real unix socket, and a grpc-js client built from our proto (plus a Python grpcio client, so
 * a peer that is not grpc-js sees the same wire).
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Store } from '../capsule/store.js';
import { silentLogger } from '../capsule/log.js';
import { GatewayClient } from '../gateway/client.js';
import { startGateway, type Gateway } from '../gateway/server.js';
import { loadCsiClients } from '../csi-node/proto.js';
import { startCsiServer, type CsiServer } from '../csi-node/server.js';
import { GatewayVolumeBackend, KubeVolumeBackend, volumeCapsuleName } from '../csi-node/volumes.js';
import { pluginVersion } from '../csi-node/identity-service.js';
import { ObjectStore } from '../operator/standalone/object-store.js';
import { CAPSULES, CAPSULE_VIEWS, type ObjectApi } from '../operator/runtime/object-api.js';
import { packageRoot } from '../gateway/proto.js';
import { rmrf, tmpDir } from './helpers/tmp.js';

const MiB = 1024 * 1024;
type Raw = grpc.Client & Record<string, (...a: unknown[]) => unknown>;

function call<T = any>(client: Raw, method: string, req: object): Promise<T> {
  return new Promise((resolve, reject) => {
    client[method]!.call(client, req, (err: grpc.ServiceError | null, res: T) => (err ? reject(err) : resolve(res)));
  });
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (e) {
    return grpc.status[(e as grpc.ServiceError).code]!;
  }
}

const mountCap = (mode = 'SINGLE_NODE_WRITER') => ({ mount: { fs_type: '', mount_flags: [] }, access_mode: { mode } });
const blockCap = (mode = 'SINGLE_NODE_WRITER') => ({ block: {}, access_mode: { mode } });

interface Env {
  dir: string;
  store: Store;
  gw: Gateway;
  gc: GatewayClient;
  backend: GatewayVolumeBackend;
  server: CsiServer;
  identity: Raw;
  controller: Raw;
  endpoint: string;
}

async function start(dir: string): Promise<Env> {
  const store = Store.open(path.join(dir, 'data'), { logger: silentLogger });
  const gw = await startGateway({ dataDir: path.join(dir, 'data'), store, listen: '', httpListen: '', logger: silentLogger });
  const gc = new GatewayClient(`unix://${gw.socketPath}`);
  const backend = new GatewayVolumeBackend({ api: gc, dataDir: path.join(dir, 'data'), logger: silentLogger });
  // A nested socket dir that does not exist yet: the server must create it.
  const endpoint = `unix://${path.join(dir, 'plugins', 'csi.space.io', 'csi.sock')}`;
  const server = await startCsiServer({ endpoint, mode: 'controller', nodeId: 'node-a', zone: 'zone-a', backend, logger: silentLogger });
  const clients = loadCsiClients();
  const identity = new clients.Identity(endpoint, grpc.credentials.createInsecure()) as unknown as Raw;
  const controller = new clients.Controller(endpoint, grpc.credentials.createInsecure()) as unknown as Raw;
  return { dir, store, gw, gc, backend, server, identity, controller, endpoint };
}

async function stop(e: Env): Promise<void> {
  e.identity.close();
  e.controller.close();
  await e.server.close();
  await e.backend.close();
  e.gc.close();
  await e.gw.close();
}

describe('CSI Identity and Controller over a unix socket', function () {
  this.timeout(60_000);
  let dir: string;
  let env: Env;

  before(async () => {
    dir = tmpDir('space-csi-');
    env = await start(dir);
  });
  after(async () => {
    if (env) await stop(env);
    rmrf(dir);
  });

  const create = (name: string, extra: object = {}) => call(env.controller, 'CreateVolume', {
    name, capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [mountCap()], parameters: {}, ...extra,
  });

  describe('Identity', () => {
    it('GetPluginInfo names the driver and its version', async () => {
      const r = await call(env.identity, 'GetPluginInfo', {});
      assert.equal(r.name, 'csi.space.io');
      assert.equal(r.vendor_version, pluginVersion());
    });
    it('GetPluginCapabilities lists controller, topology and online expansion', async () => {
      const r = await call(env.identity, 'GetPluginCapabilities', {});
      const caps = r.capabilities.map((c: any) => c.service?.type ?? `expansion:${c.volume_expansion?.type}`);
      assert.deepEqual(caps.sort(), ['CONTROLLER_SERVICE', 'VOLUME_ACCESSIBILITY_CONSTRAINTS', 'expansion:ONLINE']);
    });
    it('Probe is ready while the gateway answers', async () => {
      const r = await call(env.identity, 'Probe', {});
      assert.equal(r.ready.value, true);
    });
    it('a socket left behind by a dead plugin is replaced', async () => {
      const sock = path.join(dir, 'stale', 'csi.sock');
      fs.mkdirSync(path.dirname(sock));
      fs.writeFileSync(sock, 'stale');
      const s = await startCsiServer({ endpoint: `unix://${sock}`, mode: 'node', nodeId: 'n', logger: silentLogger });
      const c = new (loadCsiClients().Identity)(`unix://${sock}`, grpc.credentials.createInsecure()) as unknown as Raw;
      assert.equal((await call(c, 'Probe', {})).ready.value, true);
      // No Node service is wired in yet: its methods answer UNIMPLEMENTED, not a crash.
      const n = new (loadCsiClients().Node)(`unix://${sock}`, grpc.credentials.createInsecure()) as unknown as Raw;
      assert.equal(await code(call(n, 'NodeGetInfo', {})), 'UNIMPLEMENTED');
      c.close();
      n.close();
      await s.close();
      assert.ok(!fs.existsSync(sock));
    });
  });

  describe('Controller', () => {
    it('advertises exactly what it implements', async () => {
      const r = await call(env.controller, 'ControllerGetCapabilities', {});
      assert.deepEqual(r.capabilities.map((c: any) => c.rpc.type).sort(), [
        'CLONE_VOLUME', 'CREATE_DELETE_SNAPSHOT', 'CREATE_DELETE_VOLUME', 'EXPAND_VOLUME', 'GET_CAPACITY', 'GET_VOLUME',
        'LIST_SNAPSHOTS', 'LIST_VOLUMES', 'VOLUME_CONDITION',
      ]);
    });

    it('CreateVolume makes a capsule of the size, with context and topology; again is the same volume', async () => {
      const a = (await create('pvc-one')).volume;
      assert.equal(a.capacity_bytes, String(8 * MiB));
      assert.equal(a.volume_context.protocol, 'fuse');
      assert.equal(a.volume_context.capsuleId, a.volume_id);
      assert.deepEqual(a.accessible_topology, [{ segments: { 'topology.space.io/zone': 'zone-a' } }]);
      assert.equal((await env.gc.getattr(a.volume_id, 'content')).size, 8 * MiB);
      const b = (await create('pvc-one')).volume;
      assert.equal(b.volume_id, a.volume_id);
      assert.equal(await code(create('pvc-one', { capacity_range: { required_bytes: String(16 * MiB) } })), 'ALREADY_EXISTS');
    });

    it('takes 128-character names with any characters', async () => {
      const name = ('Vol_ume:' + 'x'.repeat(200)).slice(0, 128);
      const v = (await create(name)).volume;
      assert.equal((await create(name)).volume.volume_id, v.volume_id);
      const capsule = await env.gc.get(v.volume_id);
      assert.equal(capsule.name, volumeCapsuleName(name));
    });

    it('rejects bad CreateVolume requests with the spec codes', async () => {
      assert.equal(await code(create('')), 'INVALID_ARGUMENT');
      assert.equal(await code(create('no-caps', { volume_capabilities: [] })), 'INVALID_ARGUMENT');
      assert.equal(await code(create('no-mode', { volume_capabilities: [{ mount: {} }] })), 'INVALID_ARGUMENT');
      assert.equal(await code(create('no-type', { volume_capabilities: [{ access_mode: { mode: 'SINGLE_NODE_WRITER' } }] })), 'INVALID_ARGUMENT');
      // Raw block only over NVMe; NVMe never multi-node; fuse not multi-node single-writer.
      assert.equal(await code(create('block-fuse', { volume_capabilities: [blockCap()] })), 'INVALID_ARGUMENT');
      assert.equal(await code(create('nvme-rwx', { parameters: { protocol: 'nvme' }, volume_capabilities: [mountCap('MULTI_NODE_MULTI_WRITER')] })), 'INVALID_ARGUMENT');
      assert.equal(await code(create('bad-proto', { parameters: { protocol: 'iscsi' } })), 'INVALID_ARGUMENT');
      assert.equal(await code(create('bad-param', { parameters: { compresion: 'zstd' } })), 'INVALID_ARGUMENT');
      assert.equal(await code(create('bad-comp', { parameters: { compression: 'lz4' } })), 'INVALID_ARGUMENT');
      assert.equal(await code(create('tiny', { capacity_range: { required_bytes: '0', limit_bytes: '4096' } })), 'OUT_OF_RANGE');
      assert.equal(await code(create('inverted', { capacity_range: { required_bytes: String(8 * MiB), limit_bytes: String(MiB) } })), 'OUT_OF_RANGE');
      assert.equal(await code(create('other-zone', { accessibility_requirements: { requisite: [{ segments: { 'topology.space.io/zone': 'zone-b' } }], preferred: [] } })), 'RESOURCE_EXHAUSTED');
      assert.equal(await code(create('from-nothing', { volume_content_source: { snapshot: { snapshot_id: '00000000-0000-4000-8000-000000000000' } } })), 'NOT_FOUND');
    });

    it('accepts the supported protocol/capability combinations and passes policy through', async () => {
      const nfs = (await create('nfs-rwx', { parameters: { protocol: 'nfs' }, volume_capabilities: [mountCap('MULTI_NODE_MULTI_WRITER')] })).volume;
      assert.equal(nfs.volume_context.protocol, 'nfs');
      const nvme = (await create('nvme-block', { parameters: { protocol: 'nvme' }, volume_capabilities: [blockCap()] })).volume;
      assert.equal(nvme.volume_context.protocol, 'nvme');
      const fuse = (await create('fuse-policy', { parameters: { compression: 'gzip', 'csi.storage.k8s.io/pvc/name': 'x' }, volume_capabilities: [mountCap('MULTI_NODE_READER_ONLY')] })).volume;
      assert.equal((await env.gc.get(fuse.volume_id)).policy.compression, 'gzip');
    });

    it('concurrent operations on one volume name are ABORTED, one wins', async () => {
      const codes = await Promise.all(Array.from({ length: 5 }, () => code(create('pvc-race'))));
      assert.ok(codes.includes('OK'), codes.join());
      assert.ok(codes.includes('ABORTED'), codes.join());
      const v = (await create('pvc-race')).volume;
      const both = await Promise.all([
        code(call(env.controller, 'ControllerExpandVolume', { volume_id: v.volume_id, capacity_range: { required_bytes: String(32 * MiB) } })),
        code(call(env.controller, 'DeleteVolume', { volume_id: v.volume_id })),
      ]);
      assert.deepEqual(both.sort(), ['ABORTED', 'OK']);
    });

    it('ValidateVolumeCapabilities confirms only supported capabilities', async () => {
      const v = (await create('pvc-validate')).volume;
      const ok = await call(env.controller, 'ValidateVolumeCapabilities', { volume_id: v.volume_id, volume_capabilities: [mountCap('MULTI_NODE_MULTI_WRITER')] });
      assert.equal(ok.confirmed.volume_capabilities.length, 1);
      const no = await call(env.controller, 'ValidateVolumeCapabilities', { volume_id: v.volume_id, volume_capabilities: [blockCap()] });
      assert.equal(no.confirmed, null);
      assert.match(no.message, /nvme/);
      assert.equal(await code(call(env.controller, 'ValidateVolumeCapabilities', { volume_id: '', volume_capabilities: [mountCap()] })), 'INVALID_ARGUMENT');
      assert.equal(await code(call(env.controller, 'ValidateVolumeCapabilities', { volume_id: v.volume_id, volume_capabilities: [] })), 'INVALID_ARGUMENT');
      assert.equal(await code(call(env.controller, 'ValidateVolumeCapabilities', { volume_id: 'nope', volume_capabilities: [mountCap()] })), 'NOT_FOUND');
    });

    it('ListVolumes pages through every volume; a bad token is ABORTED', async () => {
      for (let i = 0; i < 5; i++) await create(`pvc-page-${i}`);
      const all = await call(env.controller, 'ListVolumes', {});
      assert.ok(all.entries.length >= 5);
      assert.equal(all.next_token, '');
      const seen: string[] = [];
      let token = '';
      do {
        const r = await call(env.controller, 'ListVolumes', { max_entries: 2, starting_token: token });
        assert.ok(r.entries.length <= 2);
        for (const e of r.entries) {
          seen.push(e.volume.volume_id);
          assert.equal(e.status.volume_condition.abnormal, false);
        }
        token = r.next_token;
      } while (token);
      assert.deepEqual(seen, all.entries.map((e: any) => e.volume.volume_id));
      assert.equal(new Set(seen).size, seen.length);
      assert.equal(await code(call(env.controller, 'ListVolumes', { starting_token: 'garbage' })), 'ABORTED');
      assert.equal(await code(call(env.controller, 'ListVolumes', { starting_token: '99999' })), 'ABORTED');
    });

    it('GetCapacity reports the free space of the store', async () => {
      const r = await call(env.controller, 'GetCapacity', { volume_capabilities: [mountCap()], parameters: {} });
      const st = fs.statfsSync(path.join(dir, 'data'));
      const free = st.bavail * st.bsize;
      assert.ok(Number(r.available_capacity) > 0);
      assert.ok(Math.abs(Number(r.available_capacity) - free) < 256 * MiB);
      assert.equal(r.minimum_volume_size.value, String(MiB));
      const elsewhere = await call(env.controller, 'GetCapacity', { accessible_topology: { segments: { 'topology.space.io/zone': 'zone-b' } } });
      assert.equal(elsewhere.available_capacity, '0');
    });

    it('snapshot → volume from snapshot has the snapshotted bytes; clone from volume too', async () => {
      const src = (await create('pvc-data')).volume;
      const data = Buffer.from('hello from the source volume');
      await env.gc.write(src.volume_id, 'content', 4096, data);
      const snap = (await call(env.controller, 'CreateSnapshot', { source_volume_id: src.volume_id, name: 'snap-1' })).snapshot;
      assert.equal(snap.ready_to_use, true);
      assert.equal(snap.source_volume_id, src.volume_id);
      assert.equal(snap.size_bytes, String(8 * MiB));
      assert.ok(Number(snap.creation_time.seconds) > 1_600_000_000);
      // Idempotent; same name for another volume is ALREADY_EXISTS.
      assert.equal((await call(env.controller, 'CreateSnapshot', { source_volume_id: src.volume_id, name: 'snap-1' })).snapshot.snapshot_id, snap.snapshot_id);
      const other = (await create('pvc-other')).volume;
      assert.equal(await code(call(env.controller, 'CreateSnapshot', { source_volume_id: other.volume_id, name: 'snap-1' })), 'ALREADY_EXISTS');
      assert.equal(await code(call(env.controller, 'CreateSnapshot', { source_volume_id: '', name: 'x' })), 'INVALID_ARGUMENT');
      assert.equal(await code(call(env.controller, 'CreateSnapshot', { source_volume_id: src.volume_id, name: '' })), 'INVALID_ARGUMENT');
      assert.equal(await code(call(env.controller, 'CreateSnapshot', { source_volume_id: 'missing', name: 'snap-x' })), 'NOT_FOUND');

      // Writes after the snapshot must not reach the restored volume.
      await env.gc.write(src.volume_id, 'content', 4096, Buffer.from('CHANGED'));
      const restored = (await create('pvc-restored', { volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } }, capacity_range: { required_bytes: String(16 * MiB) } })).volume;
      assert.deepEqual(restored.content_source, { snapshot: { snapshot_id: snap.snapshot_id }, type: 'snapshot' });
      assert.equal(restored.capacity_bytes, String(16 * MiB));
      assert.equal((await env.gc.read(restored.volume_id, 'content', 4096, data.length)).toString(), data.toString());
      assert.equal(await code(create('pvc-restored-small', { volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } }, capacity_range: { required_bytes: String(MiB), limit_bytes: String(2 * MiB) } })), 'OUT_OF_RANGE');

      const clone = (await create('pvc-clone', { volume_content_source: { volume: { volume_id: src.volume_id } } })).volume;
      assert.equal((await env.gc.read(clone.volume_id, 'content', 4096, 7)).toString(), 'CHANGED');
      assert.equal(await code(create('pvc-clone-missing', { volume_content_source: { volume: { volume_id: 'missing' } } })), 'NOT_FOUND');
      // Same name, different source: not the same volume.
      assert.equal(await code(create('pvc-clone', {})), 'ALREADY_EXISTS');

      // The snapshot outlives its source volume.
      await call(env.controller, 'DeleteVolume', { volume_id: src.volume_id });
      const again = (await create('pvc-restored-2', { volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } })).volume;
      assert.equal((await env.gc.read(again.volume_id, 'content', 4096, data.length)).toString(), data.toString());
    });

    it('ListSnapshots filters by id and source and pages; DeleteSnapshot is idempotent', async () => {
      const v = (await create('pvc-snaps')).volume;
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) ids.push((await call(env.controller, 'CreateSnapshot', { source_volume_id: v.volume_id, name: `snaps-${i}` })).snapshot.snapshot_id);
      const bySource = await call(env.controller, 'ListSnapshots', { source_volume_id: v.volume_id });
      assert.deepEqual(bySource.entries.map((e: any) => e.snapshot.snapshot_id).sort(), [...ids].sort());
      const byId = await call(env.controller, 'ListSnapshots', { snapshot_id: ids[1] });
      assert.deepEqual(byId.entries.map((e: any) => e.snapshot.snapshot_id), [ids[1]]);
      assert.equal((await call(env.controller, 'ListSnapshots', { snapshot_id: 'unknown' })).entries.length, 0);
      const seen: string[] = [];
      let token = '';
      do {
        const r = await call(env.controller, 'ListSnapshots', { source_volume_id: v.volume_id, max_entries: 1, starting_token: token });
        seen.push(...r.entries.map((e: any) => e.snapshot.snapshot_id));
        token = r.next_token;
      } while (token);
      assert.deepEqual(seen.sort(), [...ids].sort());
      assert.equal(await code(call(env.controller, 'ListSnapshots', { starting_token: 'x' })), 'ABORTED');
      await call(env.controller, 'DeleteSnapshot', { snapshot_id: ids[0] });
      await call(env.controller, 'DeleteSnapshot', { snapshot_id: ids[0] });
      assert.equal(await code(call(env.controller, 'DeleteSnapshot', { snapshot_id: '' })), 'INVALID_ARGUMENT');
      assert.equal((await call(env.controller, 'ListSnapshots', { source_volume_id: v.volume_id })).entries.length, 2);
    });

    it('ControllerExpandVolume grows content; node expansion only for nvme filesystems', async () => {
      const v = (await create('pvc-grow')).volume;
      const r = await call(env.controller, 'ControllerExpandVolume', { volume_id: v.volume_id, capacity_range: { required_bytes: String(64 * MiB) } });
      assert.equal(r.capacity_bytes, String(64 * MiB));
      assert.equal(r.node_expansion_required, false);
      assert.equal((await env.gc.getattr(v.volume_id, 'content')).size, 64 * MiB);
      const got = await call(env.controller, 'ControllerGetVolume', { volume_id: v.volume_id });
      assert.equal(got.volume.capacity_bytes, String(64 * MiB));
      const nv = (await create('pvc-grow-nvme', { parameters: { protocol: 'nvme' } })).volume;
      const nr = await call(env.controller, 'ControllerExpandVolume', { volume_id: nv.volume_id, capacity_range: { required_bytes: String(32 * MiB) }, volume_capability: mountCap() });
      assert.equal(nr.node_expansion_required, true);
      assert.equal(await code(call(env.controller, 'ControllerExpandVolume', { volume_id: '', capacity_range: { required_bytes: '1' } })), 'INVALID_ARGUMENT');
      assert.equal(await code(call(env.controller, 'ControllerExpandVolume', { volume_id: v.volume_id })), 'INVALID_ARGUMENT');
      assert.equal(await code(call(env.controller, 'ControllerExpandVolume', { volume_id: 'missing', capacity_range: { required_bytes: '1' } })), 'NOT_FOUND');
      assert.equal(await code(call(env.controller, 'ControllerExpandVolume', { volume_id: v.volume_id, capacity_range: { required_bytes: String(8 * MiB), limit_bytes: String(MiB) } })), 'OUT_OF_RANGE');
    });

    it('ControllerGetVolume reports the condition; missing volumes are NOT_FOUND', async () => {
      const v = (await create('pvc-get')).volume;
      const r = await call(env.controller, 'ControllerGetVolume', { volume_id: v.volume_id });
      assert.equal(r.volume.volume_id, v.volume_id);
      assert.equal(r.status.volume_condition.abnormal, false);
      assert.equal(await code(call(env.controller, 'ControllerGetVolume', { volume_id: '' })), 'INVALID_ARGUMENT');
      assert.equal(await code(call(env.controller, 'ControllerGetVolume', { volume_id: 'missing' })), 'NOT_FOUND');
      await env.backend.settled();
    });

    it('DeleteVolume removes the capsule and is idempotent; publish is UNIMPLEMENTED', async () => {
      const v = (await create('pvc-del')).volume;
      await call(env.controller, 'DeleteVolume', { volume_id: v.volume_id });
      await call(env.controller, 'DeleteVolume', { volume_id: v.volume_id });
      await assert.rejects(env.gc.get(v.volume_id));
      assert.equal(await code(call(env.controller, 'DeleteVolume', { volume_id: '' })), 'INVALID_ARGUMENT');
      assert.equal(await code(call(env.controller, 'ControllerPublishVolume', { volume_id: 'x', node_id: 'n' })), 'UNIMPLEMENTED');
      assert.equal(await code(call(env.controller, 'ControllerUnpublishVolume', { volume_id: 'x', node_id: 'n' })), 'UNIMPLEMENTED');
    });

    it('volumes and snapshots survive a restart on the same data dir', async () => {
      const before = await call(env.controller, 'ListVolumes', {});
      const snapsBefore = await call(env.controller, 'ListSnapshots', {});
      assert.ok(snapsBefore.entries.length > 0);
      await stop(env);
      env = await start(dir);
      const after = await call(env.controller, 'ListVolumes', {});
      assert.deepEqual(after.entries.map((e: any) => e.volume), before.entries.map((e: any) => e.volume));
      const snapsAfter = await call(env.controller, 'ListSnapshots', {});
      assert.deepEqual(snapsAfter.entries, snapsBefore.entries);
      // Idempotency by name still holds after the restart.
      const v = before.entries.find((e: any) => e.volume.volume_context.capsuleName === volumeCapsuleName('pvc-one'));
      assert.equal((await create('pvc-one')).volume.volume_id, v.volume.volume_id);
    });
  });

  describe('a non-Node client (python grpcio)', () => {
    // Debian's python3-grpcio lives under /usr/bin/python3, which a pyenv or venv python3
    // earlier on PATH does not see: take the first interpreter that can import grpc.
    let python: string | undefined;
    before(function () {
      python = ['python3', '/usr/bin/python3'].find((py) => spawnSync(py, ['-c', 'import grpc'], { stdio: 'ignore' }).status === 0);
      if (!python) {
        console.log('    skipped: python3-grpcio is not installed (apt-get install -y python3-grpcio)');
        this.skip();
      }
    });
    const script = () => path.join(packageRoot(), 'test', 'helpers', 'csi_probe.py');
    for (const authority of [undefined, 'unix:///csi/csi.sock', '/csi/csi.sock', 'localhost']) {
      it(`GetPluginInfo and Probe with authority ${authority ?? '(default)'}`, async function () {
        // Node's HTTP/2 layer (nghttp2) resets streams whose :authority holds a '/'; the plugin's
        // socket is served through csi-node/h2/authority-proxy.ts, which repairs it.
        // Asynchronously: the server under test runs on this process's event loop.
        const { stdout: out } = await promisify(execFile)(python!, [script(), env.endpoint, ...(authority ? [authority] : [])], { encoding: 'utf8', timeout: 30_000 });
        assert.deepEqual(JSON.parse(out), { name: 'csi.space.io', vendor_version: pluginVersion(), ready: true });
      });
    }
  });
});

describe('KubeVolumeBackend against the embedded object store', function () {
  this.timeout(30_000);
  let dir: string;
  let api: ObjectStore;
  let stopFake: () => void;

  before(() => {
    dir = tmpDir('space-csi-kube-');
    api = ObjectStore.open(dir);
    // The operator is not running here: mark every Capsule and CapsuleView Ready as it would.
    let running = true;
    const tick = async () => {
      while (running) {
        for (const t of [CAPSULES, CAPSULE_VIEWS]) {
          for (const o of (await (api as ObjectApi).list(t, 'csi')).items) {
            if ((o.status as { phase?: string } | undefined)?.phase !== 'Ready') {
              await api.replaceStatus(t, { ...o, status: { phase: 'Ready', capsuleId: `id-${o.metadata.name}`, size: 8 * MiB } }).catch(() => {});
            }
          }
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    void tick();
    stopFake = () => { running = false; };
  });
  after(async () => {
    stopFake();
    await new Promise((r) => setTimeout(r, 50));
    await api.close();
    rmrf(dir);
  });

  it('creates Capsule + CapsuleView, snapshots, restores, lists and deletes', async () => {
    const b = new KubeVolumeBackend({ api, namespace: 'csi', pollMs: 10, readyTimeoutMs: 5000 });
    const policy = (await import('../csi-node/volumes.js')).policyFromParameters({ compression: 'zstd' });
    const spec = { name: 'pvc-kube', capacityBytes: 8 * MiB, protocol: 'nfs' as const, parameters: { protocol: 'nfs', compression: 'zstd' }, policy, topology: [] };
    const v = await b.createVolume(spec);
    assert.equal(v.id, volumeCapsuleName('pvc-kube'));
    assert.equal((await b.createVolume(spec)).id, v.id);
    const obj = await api.get(CAPSULES, v.id, 'csi');
    assert.deepEqual((obj.spec as any).source, { empty: { size: String(8 * MiB) } });
    assert.equal((obj.spec as any).policy.compression, 'zstd');
    await api.get(CAPSULE_VIEWS, `${v.id}-nfs`, 'csi');
    assert.equal((await b.findVolumeByName('pvc-kube'))?.protocol, 'nfs');

    const s = await b.createSnapshot(v.id, 'snap-kube');
    assert.equal(s.sourceVolumeId, v.id);
    const r = await b.createVolume({ ...spec, name: 'pvc-kube-restored', source: { snapshotId: s.id } });
    assert.deepEqual(((await api.get(CAPSULES, r.id, 'csi')).spec as any).source, { clone: { capsule: s.id } });
    await new Promise((res) => setTimeout(res, 100));
    assert.equal((await b.getSnapshot(s.id))?.readyToUse, true);
    assert.equal((await b.listVolumes()).length, 2);
    assert.equal((await b.listSnapshots()).length, 1);
    assert.equal((await b.volumeCondition(v.id)).abnormal, false);
    await b.deleteVolume(r.id);
    await b.deleteSnapshot(s.id);
    assert.equal((await b.listVolumes()).length, 1);
    assert.equal(await b.getSnapshot(s.id), null);
    assert.equal((await b.volumeCondition('missing')).abnormal, true);
    assert.equal(await b.ready(), true);
  });
});
