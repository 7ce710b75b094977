/**
 * Capsule reconciler: makes the owning gateway hold the capsule the object describes, and
 * reports what it holds.
 *
 *   deleted  -> (Delete policy) remove the data from the gateway, then drop our finalizer
 *   new      -> add our finalizer; check the policy (bad policy or sovereignty conflict is a
 *               condition on the object, not an error to retry); ingest the source once
 *               (inline data, ConfigMap, Secret, clone of a capsule or of one of its
 *               snapshots, or an empty sparse volume) and freeze it as version 1
 *   always   -> status: phase, capsule id, gateway, version, size, stored size, digest
 *
 * Idempotent: the store capsule's id is the object's uid, and "version 1 exists" marks a
 * finished ingest, so a reconcile interrupted anywhere (operator killed, gateway restarted)
 * redoes only what is missing.
 */
import crypto from 'node:crypto';
import type { EventRecorder } from '../runtime/events.js';
import { setCondition } from '../runtime/conditions.js';
import { CAPSULES, CONFIGMAPS, SECRETS, type KubeObject, type ObjectApi, isConflict, isNotFound } from '../runtime/object-api.js';
import type { Capsule, CapsuleStatus, Condition, FederationZone } from '../api/types.js';
import { validatePolicy, PolicyError, type Policy } from '../../capsule/policy.js';
import { SpaceError } from '../../capsule/errors.js';
import type { CapsuleApi } from '../../capsule/api.js';
import type { Logger } from '../../capsule/log.js';
import type { GatewayDirectory } from '../gateways.js';
import { FINALIZER, errorMessage, hasFinalizer, keyOf, removeFinalizer, writeStatus, type Lister } from './common.js';
import { parseQuantity } from './quantity.js';

export interface CapsuleReconcilerDeps {
  api: ObjectApi;
  capsules: Lister;
  zones: Lister;
  gateways: GatewayDirectory;
  events: EventRecorder;
  log: Logger;
  /** How long to wait before looking again for a missing source (ConfigMap, origin capsule). */
  retryMissingMs?: number;
}

type Result = { requeueAfterMs?: number; requeue?: boolean } | void;

/** A condition of the spec the user must fix: shown on the object, not retried. */
class UserError extends Error {
  constructor(readonly reason: string, message: string) {
    super(message);
  }
}

/** Something not there yet (source ConfigMap, origin capsule): wait and look again. */
class Waiting extends Error {
  constructor(readonly reason: string, message: string) {
    super(message);
  }
}

/**
 * Fingerprint of the fields that cannot change after creation. The CRD rejects changes with a
 * CEL rule; API servers without CEL validation accept them, so the reconciler keeps this in an
 * annotation and refuses a changed spec with a condition instead of silently ignoring it.
 */
export const IMMUTABLE_ANNOTATION = 'space.io/immutable-spec';
const immutableFingerprint = (o: Capsule): string =>
  crypto.createHash('sha256').update(JSON.stringify([o.spec?.source ?? null, o.spec?.policy?.encryption ?? null])).digest('hex').slice(0, 32);

/** The store name of a capsule object: unique per cluster, a DNS subdomain like the store wants. */
export const storeName = (o: KubeObject): string => `${o.metadata.namespace ?? 'default'}.${o.metadata.name}`;

export class CapsuleReconciler {
  constructor(private readonly d: CapsuleReconcilerDeps) {}

  async reconcile(req: { namespace?: string; name: string }): Promise<Result> {
    let obj = this.d.capsules.get(keyOf(req.namespace, req.name)) as Capsule | undefined;
    if (!obj) return; // gone: nothing to do (our finalizer ran before it went)
    const log = this.d.log.child({ capsule: keyOf(req.namespace, req.name) });

    if (obj.metadata.deletionTimestamp) return this.finalize(obj, log);
    if (!hasFinalizer(obj) || !obj.metadata.annotations?.[IMMUTABLE_ANNOTATION]) {
      // One write: our finalizer, and the fingerprint of the fields that must never change.
      obj = (await this.d.api.replace(CAPSULES, {
        ...obj,
        metadata: {
          ...obj.metadata,
          finalizers: hasFinalizer(obj) ? obj.metadata.finalizers : [...(obj.metadata.finalizers ?? []), FINALIZER],
          annotations: { ...(obj.metadata.annotations ?? {}), [IMMUTABLE_ANNOTATION]: obj.metadata.annotations?.[IMMUTABLE_ANNOTATION] ?? immutableFingerprint(obj) },
        },
      })) as Capsule;
    }

    const gen = obj.metadata.generation ?? 1;
    const id = obj.metadata.uid!;
    const conditions: Condition[] = structuredClone(obj.status?.conditions ?? []); // never mutate the cache
    const base: CapsuleStatus = { ...(obj.status ?? {}), capsuleId: id, observedGeneration: gen };
    try {
      if (obj.metadata.annotations?.[IMMUTABLE_ANNOTATION] !== immutableFingerprint(obj)) {
        throw new UserError('ImmutableFieldChanged', 'spec.source and spec.policy.encryption cannot change after creation (the capsule holds what was ingested); restore them, or delete and recreate the Capsule');
      }
      const policy = this.checkPolicy(obj);
      setCondition(conditions, { type: 'PolicyValid', status: 'True', reason: 'Valid', message: 'policy accepted' }, gen);
      const gw = await this.d.gateways.forCapsule(id);
      base.gateway = gw.name;
      const ingested = await this.ensureIngested(obj, gw.client, policy, log);
      if (ingested) this.d.events.normal(obj, 'Ingested', `stored ${ingested} into gateway ${gw.name} as version 1`);
      await this.ensureSize(obj, gw.client);
      const st = await gw.client.stat(id);
      setCondition(conditions, { type: 'Ingested', status: 'True', reason: 'Stored', message: `stored on gateway ${gw.name}` }, gen);
      setCondition(conditions, { type: 'Ready', status: 'True', reason: 'Ready', message: 'capsule is stored and readable' }, gen);
      // Replication is later work: every target zone waits as Pending until then.
      const zones = policy.federation.targets.map((t) => ({ zone: t.zone, state: 'Pending' as const }));
      await writeStatus(this.d.api, CAPSULES, obj, {
        ...base,
        phase: 'Ready',
        version: st.versions.length ? Math.max(...st.versions) : 0,
        size: st.logicalSize,
        storedSize: st.storedSize,
        digest: st.digest,
        files: st.files,
        zones,
        conditions,
      } satisfies CapsuleStatus);
      return;
    } catch (e) {
      if (isConflict(e)) throw e; // stale cache: the controller looks again, nothing to report
      if (e instanceof UserError) {
        if (!isCondition(conditions, 'PolicyValid', 'False', e.message)) this.d.events.warning(obj, e.reason, e.message);
        setCondition(conditions, { type: 'PolicyValid', status: 'False', reason: e.reason, message: e.message }, gen);
        setCondition(conditions, { type: 'Ready', status: 'False', reason: e.reason, message: e.message }, gen);
        await writeStatus(this.d.api, CAPSULES, obj, { ...base, phase: 'Failed', conditions });
        log.warn('capsule.invalid', { reason: e.reason, msg: e.message });
        return; // wait for the user to change the spec (a new generation)
      }
      if (e instanceof Waiting) {
        setCondition(conditions, { type: 'Ready', status: 'False', reason: e.reason, message: e.message }, gen);
        await writeStatus(this.d.api, CAPSULES, obj, { ...base, phase: 'Pending', conditions });
        return { requeueAfterMs: this.d.retryMissingMs ?? 5000 };
      }
      // Gateway or API trouble: say so on the object, then let the queue retry with backoff.
      setCondition(conditions, { type: 'Ready', status: 'False', reason: 'GatewayError', message: errorMessage(e) }, gen);
      await writeStatus(this.d.api, CAPSULES, obj, { ...base, phase: obj.status?.phase === 'Ready' ? 'Ready' : 'Pending', conditions }).catch(() => {});
      throw e;
    }
  }

  private async finalize(obj: Capsule, log: Logger): Promise<Result> {
    if (!hasFinalizer(obj)) return;
    const id = obj.metadata.uid!;
    if (obj.status?.phase !== 'Deleting') await writeStatus(this.d.api, CAPSULES, obj, { ...(obj.status ?? {}), phase: 'Deleting' }).then((o) => (obj = o as Capsule));
    if ((obj.spec?.deletionPolicy ?? 'Delete') === 'Delete') {
      const gw = await this.d.gateways.forCapsule(id);
      try {
        await gw.client.delete(id);
        this.d.events.normal(obj, 'Deleted', `data removed from gateway ${gw.name}`);
      } catch (e) {
        if (!(e instanceof SpaceError && e.code === 'NOT_FOUND')) throw e;
      }
      log.info('capsule.deleted', { capsuleId: id });
    } else {
      log.info('capsule.retained', { capsuleId: id });
    }
    await removeFinalizer(this.d.api, CAPSULES, obj);
  }

  /** The store policy for the spec, or a UserError naming the bad field. */
  private checkPolicy(obj: Capsule): Policy {
    let policy: Policy;
    try {
      policy = validatePolicy(obj.spec?.policy ?? {}, 'spec.policy');
    } catch (e) {
      if (e instanceof PolicyError) throw new UserError('InvalidPolicy', e.message);
      throw e;
    }
    // Sovereignty: every federation target must lie in an allowed region. A target's region is
    // its own field or, failing that, the region of the FederationZone it names.
    const allowed = policy.sovereignty.allowedRegions;
    if (allowed.length) {
      for (const t of policy.federation.targets) {
        const region = t.region ?? this.zoneByName(t.zone)?.spec?.region;
        if (region && !allowed.includes(region)) {
          throw new UserError('SovereigntyConflict', `federation target ${t.zone} is in region ${region}, outside spec.policy.sovereignty.allowedRegions [${allowed.join(', ')}]`);
        }
      }
    }
    return policy;
  }

  private zoneByName(zone: string): FederationZone | undefined {
    return (this.d.zones.list() as FederationZone[]).find((z) => z.spec?.zone === zone);
  }

  /**
   * Create and fill the store capsule unless version 1 exists. Returns a description of what
   * was ingested, or undefined when it was there already.
   */
  private async ensureIngested(obj: Capsule, gw: CapsuleApi, policy: Policy, log: Logger): Promise<string | undefined> {
    const id = obj.metadata.uid!;
    const name = storeName(obj);
    const existing = await gw.get(id).catch((e: unknown) => {
      if (e instanceof SpaceError && e.code === 'NOT_FOUND') return undefined;
      throw e;
    });
    if (existing && existing.versions.length > 0) return undefined;
    const src = obj.spec?.source ?? {};
    let what: string;
    if (src.snapshot || src.clone) {
      // A clone shares the origin's segments (zero copy); a half-made clone is replaced.
      const originName = (src.snapshot?.capsule ?? src.clone?.capsule)!;
      const origin = this.d.capsules.get(keyOf(obj.metadata.namespace, originName)) as Capsule | undefined;
      if (!origin?.status?.capsuleId || origin.status.phase !== 'Ready') throw new Waiting('SourceNotReady', `waiting for capsule ${originName} to be Ready`);
      const version = src.snapshot?.version;
      if (version !== undefined && (origin.status.version ?? 0) < version) throw new UserError('SnapshotNotFound', `capsule ${originName} has no version ${version} (latest is ${origin.status.version ?? 0})`);
      if (existing) await gw.delete(id);
      await gw.clone(origin.status.capsuleId, { id, name, ...(version !== undefined ? { version } : {}) });
      what = version !== undefined ? `a clone of ${originName} version ${version}` : `a clone of ${originName}`;
    } else {
      const files = await this.sourceFiles(obj);
      const create = { id, name, policy, ...(files.size !== undefined ? { size: files.size } : {}) };
      // The first put creates the capsule in the same call; an empty source needs its own create.
      let created = existing !== undefined;
      if (!created && files.files.length === 0) {
        await gw.create(create);
        created = true;
      }
      let bytes = 0;
      for (const [path, data] of files.files) {
        await gw.put(id, path, single(data), created ? {} : { createWith: create });
        created = true;
        bytes += data.length;
      }
      what = files.size !== undefined ? `an empty ${files.size}-byte volume` : `${files.files.length} file(s), ${bytes} bytes`;
    }
    await gw.snapshot(id);
    log.info('capsule.ingested', { capsuleId: id, what });
    return what;
  }

  /**
   * spec.size of a volume capsule: grow `content` to it (sparse, so nothing is written). A volume
   * never shrinks under a pod's filesystem: a smaller size is the user's error.
   */
  private async ensureSize(obj: Capsule, gw: CapsuleApi): Promise<void> {
    if (obj.spec?.size === undefined) return;
    if (!obj.spec.source?.empty) throw new UserError('InvalidSize', 'spec.size applies to volume capsules (spec.source.empty) only');
    const want = parseQuantity(obj.spec.size);
    if (want === undefined) throw new UserError('InvalidSize', `spec.size: ${JSON.stringify(obj.spec.size)} is not a quantity like 2Gi`);
    const have = (await gw.getattr(obj.metadata.uid!, 'content')).size;
    if (want < have) throw new UserError('ShrinkNotSupported', `spec.size ${obj.spec.size} (${want} bytes) is smaller than the volume (${have} bytes); volumes only grow`);
    if (want > have) {
      await gw.truncate(obj.metadata.uid!, 'content', want);
      this.d.events.normal(obj, 'Resized', `content grown from ${have} to ${want} bytes`);
    }
  }

  /** The files a non-clone source describes, or the size of an empty volume. */
  private async sourceFiles(obj: Capsule): Promise<{ files: [string, Buffer][]; size?: number }> {
    const src = obj.spec?.source ?? {};
    if (src.inline) {
      const enc = src.inline.encoding ?? 'utf8';
      return { files: [[src.inline.path ?? 'content', Buffer.from(src.inline.data ?? '', enc === 'base64' ? 'base64' : 'utf8')]] };
    }
    if (src.empty) {
      const size = parseQuantity(src.empty.size);
      if (size === undefined) throw new UserError('InvalidSource', `spec.source.empty.size: ${JSON.stringify(src.empty.size)} is not a quantity like 1Gi`);
      return { files: [], size };
    }
    const ref = src.configMapRef ?? src.secretRef;
    if (ref) {
      const type = src.configMapRef ? CONFIGMAPS : SECRETS;
      let o: KubeObject;
      try {
        o = await this.d.api.get(type, ref.name, obj.metadata.namespace);
      } catch (e) {
        if (isNotFound(e)) throw new Waiting('SourceNotFound', `${type.kind} ${ref.name} not found in namespace ${obj.metadata.namespace}`);
        throw e;
      }
      const files: [string, Buffer][] = [];
      const text = (o.data ?? {}) as Record<string, string>;
      const binary = (o.binaryData ?? {}) as Record<string, string>;
      const secret = type === SECRETS;
      for (const [k, v] of Object.entries(text)) files.push([k, Buffer.from(v, secret ? 'base64' : 'utf8')]);
      for (const [k, v] of Object.entries(binary)) files.push([k, Buffer.from(v, 'base64')]);
      files.sort((a, b) => a[0].localeCompare(b[0]));
      return { files };
    }
    throw new UserError('InvalidSource', 'spec.source names no source');
  }
}

async function* single(b: Buffer): AsyncIterable<Uint8Array> {
  yield b;
}

function isCondition(cs: Condition[], type: string, status: string, message: string): boolean {
  return cs.some((c) => c.type === type && c.status === status && c.message === message);
}

