/**
 * The CSI Node service: stage (FUSE mount process / NVMe/TCP attach / NFS mount) and publish
 * (bind mounts) of Space volumes on one node, with its state on disk so a restarted plugin can
 * unstage cleanly and repair FUSE mounts whose process died.
 *
 * Keys read from volume_context (publish_context wins when both carry one):
 *   protocol   fuse | nfs | nvme (default fuse)
 *   capsuleId  the capsule behind the volume (default: the volume_id itself)
 *   nvme:      nvmeAddress, nvmePort (default 4420), nqn, hostNqn (optional)
 *   nfs:       nfsAddress, nfsPort (default 2049), nfsExport (default "/<capsuleId>")
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../capsule/log.js';
import { SpaceError } from '../capsule/errors.js';
import { GatewayClient } from '../gateway/client.js';
import { NodeState, type Protocol, type VolumeRecord } from './node-state.js';
import { execRunner, type CommandRunner } from './mounters/exec.js';
import { bindMount, unmountPath } from './mounters/bind.js';
import { mountAtPath, readMountInfo } from './mounters/mountinfo.js';
import { deadMountReason, detachStale, fuseStageHealthy } from './mounters/fuse.js';
import { localLauncher, type FuseProcessLauncher } from './mounters/launcher.js';
import { NvmeMounter, type NvmeMounterOptions } from './mounters/nvme.js';
import { NfsMounter } from './mounters/nfs.js';

export const TOPOLOGY_ZONE_KEY = 'topology.space.io/zone';

export interface NodeServiceOptions {
  nodeId: string;
  zone?: string;
  maxVolumes?: number;
  stateDir: string;
  /** gRPC address of the gateway that owns the capsules ("host:port" or "unix:///path"). */
  gateway: string;
  logger: Logger;
  /** Host tool runner (tests inject one to assert argv). */
  run?: CommandRunner;
  nvme?: Omit<NvmeMounterOptions, 'run'>;
  /**
   * Starts/stops the FUSE mount processes. Default: this process, as detached children. With a
   * mounter sidecar (spacectl csi --mounter-socket): a MounterClient (csi-node/mounter-client.ts).
   */
  fuseLauncher?: FuseProcessLauncher;
}

export interface NodeService {
  implementation: grpc.UntypedServiceImplementation;
  /** Re-establish dead FUSE mounts and their bind mounts (call on plugin start). */
  repair(): Promise<void>;
  /** Stop serving; mount processes keep running (pods keep their data). */
  close(): Promise<void>;
}

class CsiError extends Error {
  constructor(readonly code: grpc.status, message: string) {
    super(message);
  }
}
const invalidArg = (m: string) => new CsiError(grpc.status.INVALID_ARGUMENT, m);
const notFound = (m: string) => new CsiError(grpc.status.NOT_FOUND, m);
const precondition = (m: string) => new CsiError(grpc.status.FAILED_PRECONDITION, m);
const alreadyExists = (m: string) => new CsiError(grpc.status.ALREADY_EXISTS, m);

function toStatus(e: unknown): Partial<grpc.StatusObject> {
  if (e instanceof CsiError) return { code: e.code, details: e.message };
  if (e instanceof SpaceError) {
    const code = (grpc.status as unknown as Record<string, number>)[e.code];
    return { code: code ?? grpc.status.INTERNAL, details: e.message };
  }
  return { code: grpc.status.INTERNAL, details: (e as Error)?.message ?? String(e) };
}

// ---- request shapes (proto-loader: keepCase, longs as strings, enums as names, oneofs) ------

interface VolumeCapability {
  block?: object | null;
  mount?: { fs_type: string; mount_flags: string[] } | null;
  access_type?: 'block' | 'mount';
  access_mode?: { mode: string } | null;
}
type Ctx = Record<string, string>;
interface StageReq { volume_id: string; staging_target_path: string; volume_capability?: VolumeCapability | null; volume_context: Ctx; publish_context: Ctx }
interface UnstageReq { volume_id: string; staging_target_path: string }
interface PublishReq extends StageReq { target_path: string; readonly: boolean }
interface UnpublishReq { volume_id: string; target_path: string }
interface StatsReq { volume_id: string; volume_path: string; staging_target_path: string }
interface ExpandReq { volume_id: string; volume_path: string; staging_target_path: string; capacity_range?: { required_bytes: string; limit_bytes: string } | null; volume_capability?: VolumeCapability | null }

function required(value: string | undefined, field: string): string {
  if (!value) throw invalidArg(`${field} is required`);
  return value;
}

function requiredPath(value: string | undefined, field: string): string {
  const p = required(value, field);
  if (!path.isAbsolute(p)) throw invalidArg(`${field} must be an absolute path (got ${p})`);
  return path.resolve(p);
}

function accessOf(cap: VolumeCapability | null | undefined): { type: 'block' | 'mount'; fsType: string; flags: string[]; readonlyMode: boolean } {
  if (!cap) throw invalidArg('volume_capability is required');
  const type = cap.access_type ?? (cap.block ? 'block' : cap.mount ? 'mount' : undefined);
  if (!type) throw invalidArg('volume_capability needs an access type (block or mount)');
  const mode = cap.access_mode?.mode ?? 'UNKNOWN';
  return {
    type,
    fsType: cap.mount?.fs_type || 'ext4',
    flags: cap.mount?.mount_flags ?? [],
    readonlyMode: mode === 'SINGLE_NODE_READER_ONLY' || mode === 'MULTI_NODE_READER_ONLY',
  };
}

function protocolOf(ctx: Ctx): Protocol {
  const p = ctx.protocol || 'fuse';
  if (p !== 'fuse' && p !== 'nfs' && p !== 'nvme') throw invalidArg(`volume_context.protocol must be fuse, nfs or nvme (got ${p})`);
  return p;
}

async function exists(p: string): Promise<boolean> {
  return fsp.lstat(p).then(() => true, () => false);
}

export function createNodeService(opts: NodeServiceOptions): NodeService {
  const log = opts.logger.child({ component: 'csi-node', node: opts.nodeId });
  const run = opts.run ?? execRunner;
  const nvme = new NvmeMounter({ ...opts.nvme, run });
  const nfs = new NfsMounter(run);
  const statePromise = NodeState.open(opts.stateDir);
  statePromise.catch(() => {}); // reported by the first call that awaits it
  let client: GatewayClient | undefined;
  const gateway = () => (client ??= new GatewayClient(opts.gateway, { timeoutMs: 30_000 }));
  const logDir = path.join(opts.stateDir, 'logs');
  const launcher = opts.fuseLauncher ?? localLauncher;
  const fuseHealthy = (v: VolumeRecord) => fuseStageHealthy(v.mountProcess, v.stagingPath, (rec) => launcher.alive(rec, v.stagingPath));

  /** Keys (volume ids, paths) with an operation in flight: a second one is ABORTED, not queued. */
  const inflight = new Set<string>();
  async function exclusive<T>(keys: string[], fn: () => Promise<T>): Promise<T> {
    const busy = keys.find((k) => inflight.has(k));
    if (busy) throw new CsiError(grpc.status.ABORTED, `an operation on ${busy} is already in progress`);
    keys.forEach((k) => inflight.add(k));
    try {
      return await fn();
    } finally {
      keys.forEach((k) => inflight.delete(k));
    }
  }

  /** NOT_FOUND when the gateway does not know the capsule; other gateway errors pass through. */
  async function checkCapsule(capsuleId: string): Promise<void> {
    try {
      await gateway().get(capsuleId);
    } catch (e) {
      if (e instanceof SpaceError && e.code === 'NOT_FOUND') throw notFound(`volume's capsule ${capsuleId} does not exist`);
      throw e;
    }
  }

  async function stageFuse(v: VolumeRecord, vlog: Logger): Promise<void> {
    v.mountProcess = await launcher.start({
      volumeId: v.volumeId, capsuleId: v.capsuleId, stagingPath: v.stagingPath, gateway: opts.gateway, rw: !v.readonly,
      logFile: path.join(logDir, `${v.volumeId.replace(/[^A-Za-z0-9._-]/g, '_')}.log`),
    }, vlog);
  }

  async function stageNvme(v: VolumeRecord, flags: string[]): Promise<void> {
    const t = v.nvme!;
    const device = await nvme.connect({ address: t.address, port: t.port, nqn: t.nqn, hostNqn: t.hostNqn });
    t.device = device;
    if (v.accessType === 'mount') {
      await nvme.ensureFilesystem(device, v.fsType ?? 'ext4');
      if (!mountAtPath(await readMountInfo(), v.stagingPath)) await nvme.mount(device, v.stagingPath, v.fsType ?? 'ext4', flags, v.readonly);
    }
  }

  async function stage(req: StageReq): Promise<object> {
    const volumeId = required(req.volume_id, 'volume_id');
    const staging = requiredPath(req.staging_target_path, 'staging_target_path');
    const access = accessOf(req.volume_capability);
    const ctx: Ctx = { ...req.volume_context, ...req.publish_context };
    const protocol = protocolOf(ctx);
    const capsuleId = ctx.capsuleId || volumeId;
    const vlog = log.child({ volume: volumeId, capsule: capsuleId });
    const state = await statePromise;
    return exclusive([`volume:${volumeId}`, `path:${staging}`], async () => {
      const old = state.get(volumeId);
      if (old) {
        if (old.stagingPath !== staging) throw alreadyExists(`volume ${volumeId} is already staged at ${old.stagingPath}`);
        if (old.accessType !== access.type || old.readonly !== access.readonlyMode || (access.type === 'mount' && protocol === 'nvme' && old.fsType !== access.fsType)) {
          throw alreadyExists(`volume ${volumeId} is staged at ${staging} with an incompatible capability`);
        }
        if (old.protocol === 'fuse' && !(await fuseHealthy(old)).ok) await repairOne(old);
        vlog.info('node.stage.exists', { staging });
        return {};
      }
      const other = state.findByPath(staging);
      if (other) throw alreadyExists(`${staging} is in use by volume ${other.volume.volumeId}`);
      if (access.type === 'block' && protocol !== 'nvme') throw precondition(`${protocol} volumes cannot be used as raw block devices (use protocol nvme)`);
      if (protocol === 'fuse') await checkCapsule(capsuleId);
      const createdStaging = !(await exists(staging));
      if (access.type === 'mount') await fsp.mkdir(staging, { recursive: true, mode: 0o750 });
      const v: VolumeRecord = {
        volumeId, capsuleId, protocol, stagingPath: staging, accessType: access.type, readonly: access.readonlyMode,
        publishes: {}, createdStaging, stagedAt: new Date().toISOString(),
        ...(access.type === 'mount' ? { fsType: protocol === 'nvme' ? access.fsType : protocol === 'nfs' ? 'nfs4' : 'fuse.space' } : {}),
      };
      try {
        if (protocol === 'fuse') await stageFuse(v, vlog);
        else if (protocol === 'nfs') {
          v.nfs = { address: required(ctx.nfsAddress, 'volume_context.nfsAddress'), port: ctx.nfsPort || '2049', export: ctx.nfsExport || `/${capsuleId}` };
          await nfs.mount(v.nfs, staging, v.readonly, access.flags);
        } else {
          v.nvme = { address: required(ctx.nvmeAddress, 'volume_context.nvmeAddress'), port: ctx.nvmePort || '4420', nqn: required(ctx.nqn, 'volume_context.nqn'), ...(ctx.hostNqn ? { hostNqn: ctx.hostNqn } : {}) };
          await stageNvme(v, access.flags);
        }
      } catch (e) {
        if (createdStaging) await fsp.rmdir(staging).catch(() => {});
        vlog.error('node.stage.failed', { staging, protocol, err: e });
        throw e;
      }
      await state.put(v);
      vlog.info('node.staged', { staging, protocol, readonly: v.readonly, pid: v.mountProcess?.pid, device: v.nvme?.device });
      return {};
    });
  }

  async function unstage(req: UnstageReq): Promise<object> {
    const volumeId = required(req.volume_id, 'volume_id');
    const staging = requiredPath(req.staging_target_path, 'staging_target_path');
    const vlog = log.child({ volume: volumeId });
    const state = await statePromise;
    return exclusive([`volume:${volumeId}`, `path:${staging}`], async () => {
      const v = state.get(volumeId);
      if (!v || v.stagingPath !== staging) {
        vlog.info('node.unstage.not-staged', { staging }); // idempotent: nothing staged there
        return {};
      }
      const targets = Object.keys(v.publishes);
      if (targets.length) throw precondition(`volume ${volumeId} is still published at ${targets.join(', ')}`);
      if (v.protocol === 'fuse') await launcher.stop(v.mountProcess, staging, vlog);
      else if (v.protocol === 'nfs') await nfs.unmount(staging);
      else {
        if (v.accessType === 'mount') await unmountPath(run, staging);
        await nvme.disconnect(v.nvme!.nqn);
      }
      if (v.createdStaging) await fsp.rmdir(staging).catch(() => {});
      await state.remove(volumeId);
      vlog.info('node.unstaged', { staging });
      return {};
    });
  }

  async function publish(req: PublishReq): Promise<object> {
    const volumeId = required(req.volume_id, 'volume_id');
    const staging = requiredPath(req.staging_target_path, 'staging_target_path');
    const target = requiredPath(req.target_path, 'target_path');
    const access = accessOf(req.volume_capability);
    const vlog = log.child({ volume: volumeId });
    const state = await statePromise;
    return exclusive([`volume:${volumeId}`, `path:${target}`], async () => {
      const v = state.get(volumeId);
      if (!v) {
        await checkCapsule(req.volume_context?.capsuleId || volumeId);
        throw precondition(`volume ${volumeId} is not staged on this node`);
      }
      if (v.stagingPath !== staging) throw precondition(`volume ${volumeId} is staged at ${v.stagingPath}, not ${staging}`);
      if (access.type !== v.accessType) throw alreadyExists(`volume ${volumeId} was staged for ${v.accessType} access, not ${access.type}`);
      const readonly = req.readonly || v.readonly || access.readonlyMode;
      const user = state.findByPath(target);
      if (user && user.volume.volumeId !== volumeId) throw alreadyExists(`${target} is in use by volume ${user.volume.volumeId}`);
      const prev = v.publishes[target];
      const mounted = mountAtPath(await readMountInfo(), target);
      if (prev) {
        if (prev.readonly !== readonly) throw alreadyExists(`volume ${volumeId} is published at ${target} ${prev.readonly ? 'read-only' : 'read-write'}`);
        if (mounted) return {}; // idempotent repeat
      } else if (mounted) {
        throw alreadyExists(`${target} is busy: ${mounted.fstype} ${mounted.source} is mounted there`);
      }
      const block = v.accessType === 'block';
      const createdTarget = prev?.createdTarget ?? !(await exists(target));
      if (block) {
        await fsp.mkdir(path.dirname(target), { recursive: true });
        await fsp.writeFile(target, '', { flag: 'a', mode: 0o660 });
      } else {
        await fsp.mkdir(target, { recursive: true, mode: 0o750 });
      }
      try {
        await bindMount(run, block ? v.nvme!.device! : staging, target, readonly);
      } catch (e) {
        if (createdTarget) await fsp.rm(target, { recursive: false, force: true }).catch(() => fsp.rmdir(target).catch(() => {}));
        throw e;
      }
      v.publishes[target] = { readonly, block, createdTarget, publishedAt: new Date().toISOString() };
      await state.put(v);
      vlog.info('node.published', { target, readonly, block });
      return {};
    });
  }

  async function removeTarget(target: string): Promise<void> {
    const st = await fsp.lstat(target).catch(() => undefined);
    if (!st) return;
    if (st.isDirectory()) await fsp.rmdir(target);
    else await fsp.unlink(target);
  }

  async function unpublish(req: UnpublishReq): Promise<object> {
    const volumeId = required(req.volume_id, 'volume_id');
    const target = requiredPath(req.target_path, 'target_path');
    const vlog = log.child({ volume: volumeId });
    const state = await statePromise;
    return exclusive([`volume:${volumeId}`, `path:${target}`], async () => {
      const v = state.get(volumeId);
      const rec = v?.publishes[target];
      if (!v || !rec) {
        const other = state.findByPath(target);
        if (other && other.volume.volumeId !== volumeId) throw precondition(`${target} belongs to volume ${other.volume.volumeId}, not ${volumeId}`);
        // Idempotent: a repeated unpublish finds nothing; still clear a leftover mount/dir.
        await unmountPath(run, target, { lazy: true });
        await removeTarget(target).catch(() => {});
        vlog.info('node.unpublish.not-published', { target });
        return {};
      }
      await unmountPath(run, target);
      await removeTarget(target); // the spec: the SP MUST delete what it created at target_path
      delete v.publishes[target];
      await state.put(v);
      vlog.info('node.unpublished', { target });
      return {};
    });
  }

  async function volumeStats(req: StatsReq): Promise<object> {
    const volumeId = required(req.volume_id, 'volume_id');
    const volumePath = requiredPath(req.volume_path, 'volume_path');
    const state = await statePromise;
    const found = state.findByPath(volumePath);
    if (!found || found.volume.volumeId !== volumeId) throw notFound(`volume ${volumeId} is not staged or published at ${volumePath}`);
    const v = found.volume;
    const abnormal = (message: string) => {
      log.warn('node.volume.abnormal', { volume: volumeId, path: volumePath, reason: message });
      return { usage: [], volume_condition: { abnormal: true, message } };
    };
    if (v.accessType === 'block') {
      const ok = v.nvme?.device && (await exists(v.nvme.device));
      return ok ? { usage: [], volume_condition: { abnormal: false, message: 'device present' } } : abnormal(`device ${v.nvme?.device ?? '?'} is gone`);
    }
    if (!mountAtPath(await readMountInfo(), volumePath)) return abnormal(`nothing is mounted at ${volumePath}`);
    if (v.protocol === 'fuse') {
      const h = await fuseHealthy(v);
      if (!h.ok) return abnormal(h.reason!);
    }
    // Probed in a child with a timeout first: statfs on a dead FUSE mount would fail with
    // ENOTCONN, and on a hung one would tie up a libuv thread.
    const dead = await deadMountReason(volumePath);
    if (dead) return abnormal(dead);
    let st;
    try {
      st = await fsp.statfs(volumePath);
    } catch (e) {
      return abnormal((e as Error).message);
    }
    const bytes = (n: number) => String(BigInt(n) * BigInt(st.bsize));
    return {
      usage: [
        { unit: 'BYTES', total: bytes(st.blocks), available: bytes(st.bavail), used: bytes(st.blocks - st.bfree) },
        { unit: 'INODES', total: String(st.files), available: String(st.ffree), used: String(Math.max(0, st.files - st.ffree)) },
      ],
      volume_condition: { abnormal: false, message: 'healthy' },
    };
  }

  async function expand(req: ExpandReq): Promise<object> {
    const volumeId = required(req.volume_id, 'volume_id');
    const volumePath = requiredPath(req.volume_path, 'volume_path');
    const state = await statePromise;
    return exclusive([`volume:${volumeId}`], async () => {
      const found = state.findByPath(volumePath);
      if (!found || found.volume.volumeId !== volumeId) throw notFound(`volume ${volumeId} is not staged or published at ${volumePath}`);
      const v = found.volume;
      const requested = req.capacity_range?.required_bytes ?? '0';
      // FUSE and NFS views grow with the capsule at the gateway: nothing to do on the node.
      // An NVMe filesystem must be grown to the (already grown) namespace.
      if (v.protocol === 'nvme' && v.accessType === 'mount') await nvme.expand(v.nvme!.device!, v.stagingPath, v.fsType ?? 'ext4');
      log.info('node.expanded', { volume: volumeId, path: volumePath, requested });
      return { capacity_bytes: requested };
    });
  }

  /** One volume: a dead FUSE stage gets a new mount process; its binds are redone on top. */
  async function repairOne(v: VolumeRecord): Promise<void> {
    const vlog = log.child({ volume: v.volumeId, capsule: v.capsuleId });
    const state = await statePromise;
    if (v.protocol === 'fuse') {
      const h = await fuseHealthy(v);
      if (!h.ok) {
        vlog.warn('node.repair.fuse', { staging: v.stagingPath, reason: h.reason, oldPid: v.mountProcess?.pid });
        // Binds of a dead FUSE mount keep pointing at the dead connection: drop them first.
        for (const t of Object.keys(v.publishes)) await unmountPath(run, t, { lazy: true });
        await launcher.stop(v.mountProcess, v.stagingPath, vlog); // a hung-but-alive process too
        await detachStale(v.stagingPath, vlog);
        await fsp.mkdir(v.stagingPath, { recursive: true });
        await stageFuse(v, vlog);
        await state.put(v);
      }
    }
    const block = v.accessType === 'block';
    for (const [t, p] of Object.entries(v.publishes)) {
      if (mountAtPath(await readMountInfo(), t)) continue;
      if (!block) await fsp.mkdir(t, { recursive: true });
      await bindMount(run, block ? v.nvme!.device! : v.stagingPath, t, p.readonly);
      vlog.info('node.repair.rebound', { target: t, readonly: p.readonly });
    }
  }

  async function repair(): Promise<void> {
    const state = await statePromise;
    for (const v of state.list()) {
      try {
        await exclusive([`volume:${v.volumeId}`], () => repairOne(v));
      } catch (e) {
        // One broken volume must not keep the others from being repaired.
        log.error('node.repair.failed', { volume: v.volumeId, err: e });
      }
    }
  }

  function unary<Req>(name: string, fn: (req: Req) => Promise<object>): grpc.handleUnaryCall<Req, object> {
    return (call, cb) => {
      fn(call.request).then(
        (res) => cb(null, res),
        (e: unknown) => {
          const st = toStatus(e);
          if (st.code === grpc.status.INTERNAL) log.error('node.rpc.failed', { rpc: name, volume: (call.request as { volume_id?: string }).volume_id, err: e });
          cb(st as grpc.ServiceError);
        },
      );
    };
  }

  const capability = (type: string) => ({ rpc: { type } });
  const implementation: grpc.UntypedServiceImplementation = {
    NodeStageVolume: unary<StageReq>('NodeStageVolume', stage),
    NodeUnstageVolume: unary<UnstageReq>('NodeUnstageVolume', unstage),
    NodePublishVolume: unary<PublishReq>('NodePublishVolume', publish),
    NodeUnpublishVolume: unary<UnpublishReq>('NodeUnpublishVolume', unpublish),
    NodeGetVolumeStats: unary<StatsReq>('NodeGetVolumeStats', volumeStats),
    NodeExpandVolume: unary<ExpandReq>('NodeExpandVolume', expand),
    NodeGetCapabilities: unary<object>('NodeGetCapabilities', async () => ({
      capabilities: ['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME', 'VOLUME_CONDITION'].map(capability),
    })),
    NodeGetInfo: unary<object>('NodeGetInfo', async () => ({
      node_id: opts.nodeId,
      max_volumes_per_node: String(opts.maxVolumes ?? 0),
      ...(opts.zone ? { accessible_topology: { segments: { [TOPOLOGY_ZONE_KEY]: opts.zone } } } : {}),
    })),
  };

  return {
    implementation,
    repair,
    async close() {
      // Deliberately leaves mount processes and bind mounts alone: pods keep using them, and
      // the next plugin instance picks them up from the state file.
      client?.close();
      client = undefined;
      await statePromise.then((s) => s.save()).catch(() => {});
    },
  };
}
