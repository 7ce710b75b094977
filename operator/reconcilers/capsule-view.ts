/**
 * CapsuleView reconciler: asks the gateway that owns the capsule to serve the view, checks that
 * the endpoint answers, and publishes it in status.
 *
 * A view of a capsule that does not exist or is not Ready yet waits with a condition saying so;
 * the controller also watches Capsules and maps each to the views that name it, so the view
 * recovers as soon as its capsule appears. Protocol front ends plug in as ViewDrivers.
 */
import path from 'node:path';
import fsp from 'node:fs/promises';
import type { EventRecorder } from '../runtime/events.js';
import { setCondition } from '../runtime/conditions.js';
import { CAPSULE_VIEWS, type KubeObject, type ObjectApi } from '../runtime/object-api.js';
import type { Capsule, CapsuleView, CapsuleViewStatus, Condition } from '../api/types.js';
import { SpaceError } from '../../capsule/errors.js';
import type { Logger } from '../../capsule/log.js';
import type { GatewayDirectory, GatewayHandle } from '../gateways.js';
import { addFinalizer, errorMessage, hasFinalizer, keyOf, removeFinalizer, writeStatus, type Lister } from './common.js';

export type Endpoint = NonNullable<CapsuleViewStatus['endpoint']>;

/** The outcome of asking a driver to serve a view. */
export type ServeResult =
  | { ok: true; endpoint: Endpoint }
  /** The gateway cannot serve this protocol (yet): a condition; retried after `retryAfterMs` if given. */
  | { ok: false; reason: string; message: string; retryAfterMs?: number };

export interface ViewDriver {
  protocol: string;
  serve(view: CapsuleView, capsuleId: string, gw: GatewayHandle): Promise<ServeResult>;
  /** Does the endpoint answer? (Ready only when it does.) */
  probe(view: CapsuleView, endpoint: Endpoint, gw: GatewayHandle): Promise<boolean>;
  stop(view: CapsuleView, gw: GatewayHandle): Promise<void>;
}

export interface CapsuleViewReconcilerDeps {
  api: ObjectApi;
  views: Lister;
  capsules: Lister;
  gateways: GatewayDirectory;
  events: EventRecorder;
  log: Logger;
  drivers: ViewDriver[];
  /** Retry delay while the endpoint does not answer yet. */
  probeRetryMs?: number;
}

type Result = { requeueAfterMs?: number; requeue?: boolean } | void;

export class CapsuleViewReconciler {
  private readonly drivers: Map<string, ViewDriver>;
  constructor(private readonly d: CapsuleViewReconcilerDeps) {
    this.drivers = new Map(d.drivers.map((x) => [x.protocol, x]));
  }

  /** The views that name a capsule: the controller's mapping for Capsule events. */
  viewsOf(capsule: KubeObject): { namespace?: string; name: string }[] {
    return (this.d.views.list() as CapsuleView[])
      .filter((v) => v.metadata.namespace === capsule.metadata.namespace && v.spec?.capsuleRef?.name === capsule.metadata.name)
      .map((v) => ({ namespace: v.metadata.namespace, name: v.metadata.name }));
  }

  async reconcile(req: { namespace?: string; name: string }): Promise<Result> {
    let view = this.d.views.get(keyOf(req.namespace, req.name)) as CapsuleView | undefined;
    if (!view) return;
    const log = this.d.log.child({ view: keyOf(req.namespace, req.name) });
    const driver = this.drivers.get(view.spec.protocol);
    const capsule = this.d.capsules.get(keyOf(view.metadata.namespace, view.spec.capsuleRef.name)) as Capsule | undefined;

    if (view.metadata.deletionTimestamp) {
      if (!hasFinalizer(view)) return;
      // Stop it where it was served (the capsule may be gone already).
      const gw = (await this.d.gateways.all()).find((g) => g.name === view!.status?.gateway);
      if (driver && gw && view.status?.endpoint) await driver.stop(view, gw);
      log.info('view.stopped', { protocol: view.spec.protocol });
      await removeFinalizer(this.d.api, CAPSULE_VIEWS, view);
      return;
    }
    view = (await addFinalizer(this.d.api, CAPSULE_VIEWS, view)) as CapsuleView;

    const gen = view.metadata.generation ?? 1;
    const conditions: Condition[] = structuredClone(view.status?.conditions ?? []); // never mutate the cache
    const pending = async (reason: string, message: string, requeueAfterMs?: number): Promise<Result> => {
      setCondition(conditions, { type: 'Ready', status: 'False', reason, message }, gen);
      await writeStatus(this.d.api, CAPSULE_VIEWS, view!, { ...(view!.status ?? {}), phase: 'Pending', observedGeneration: gen, conditions } satisfies CapsuleViewStatus);
      return requeueAfterMs === undefined ? undefined : { requeueAfterMs };
    };

    if (!capsule) return pending('CapsuleNotFound', `capsule ${view.spec.capsuleRef.name} does not exist in namespace ${view.metadata.namespace}`);
    if (capsule.status?.phase !== 'Ready' || !capsule.status.capsuleId) {
      return pending('CapsuleNotReady', `waiting for capsule ${view.spec.capsuleRef.name} to be Ready (now ${capsule.status?.phase ?? 'Pending'})`);
    }
    if (!driver) return pending('ProtocolUnavailable', `no driver for protocol ${view.spec.protocol}`);

    const capsuleId = capsule.status.capsuleId;
    const gw = await this.d.gateways.forCapsule(capsuleId);
    let served: ServeResult;
    try {
      served = await driver.serve(view, capsuleId, gw);
    } catch (e) {
      if (e instanceof SpaceError && (e.code === 'INVALID_ARGUMENT' || e.code === 'FAILED_PRECONDITION' || e.code === 'ALREADY_EXISTS')) {
        // The spec asks for something the gateway refuses (bad path, target busy): user's to fix.
        setCondition(conditions, { type: 'Ready', status: 'False', reason: 'ServeFailed', message: e.message }, gen);
        if (view.status?.phase !== 'Failed') this.d.events.warning(view, 'ServeFailed', e.message);
        await writeStatus(this.d.api, CAPSULE_VIEWS, view, { ...(view.status ?? {}), phase: 'Failed', observedGeneration: gen, gateway: gw.name, conditions });
        return;
      }
      await pending('GatewayError', errorMessage(e)).catch(() => {});
      throw e;
    }
    if (!served.ok) return pending(served.reason, served.message, served.retryAfterMs);

    const answers = await driver.probe(view, served.endpoint, gw).catch(() => false);
    if (!answers) return pending('EndpointNotAnswering', `${served.endpoint.url} does not answer yet`, this.d.probeRetryMs ?? 2000);
    if (view.status?.phase !== 'Ready') this.d.events.normal(view, 'Serving', `serving ${served.endpoint.url}`);
    setCondition(conditions, { type: 'Ready', status: 'True', reason: 'Serving', message: `serving ${served.endpoint.url}` }, gen);
    await writeStatus(this.d.api, CAPSULE_VIEWS, view, {
      ...(view.status ?? {}),
      phase: 'Ready',
      observedGeneration: gen,
      gateway: gw.name,
      endpoint: served.endpoint,
      conditions,
    } satisfies CapsuleViewStatus);
  }
}

/** FUSE: a kernel mount on the gateway's host, through the gateway's Mount API. */
export class FuseViewDriver implements ViewDriver {
  readonly protocol = 'fuse';
  /**
   * @param viewRoot where views without spec.options.mountPath are mounted (<root>/<ns>/<name>)
   * @param localGateway the gateway runs on this host, so the probe also lists the directory
   */
  constructor(private readonly viewRoot: string, private readonly localGateway = false) {}

  private target(view: CapsuleView): string {
    return view.spec.options?.mountPath ?? path.join(this.viewRoot, view.metadata.namespace ?? 'default', view.metadata.name);
  }

  async serve(view: CapsuleView, capsuleId: string, gw: GatewayHandle): Promise<ServeResult> {
    const target = this.target(view);
    const rw = !view.spec.readOnly;
    const mounts = await gw.client.listMounts();
    const current = mounts.find((m) => m.target === target);
    if (current && (current.capsuleId !== capsuleId || current.rw !== rw)) await gw.client.unmount(target);
    if (!current || current.capsuleId !== capsuleId || current.rw !== rw) {
      if (this.localGateway) await fsp.mkdir(target, { recursive: true });
      await gw.client.mount({ ref: capsuleId, target, rw });
    }
    return { ok: true, endpoint: { protocol: 'fuse', mountPath: target, address: gw.name, url: `fuse://${target}` } };
  }

  async probe(view: CapsuleView, endpoint: Endpoint, gw: GatewayHandle): Promise<boolean> {
    const mounts = await gw.client.listMounts();
    if (!mounts.some((m) => m.target === endpoint.mountPath)) return false;
    if (this.localGateway) await fsp.readdir(endpoint.mountPath!);
    return true;
  }

  async stop(view: CapsuleView, gw: GatewayHandle): Promise<void> {
    const target = view.status?.endpoint?.mountPath ?? this.target(view);
    if ((await gw.client.listMounts()).some((m) => m.target === target)) await gw.client.unmount(target);
  }
}

/**
 * CSI: the view is consumed by the CSI node plugin when a pod mounts the volume; the endpoint
 * names the driver and the volume handle, and is ready once the capsule is.
 */
export class CsiViewDriver implements ViewDriver {
  readonly protocol = 'csi';
  async serve(_view: CapsuleView, capsuleId: string): Promise<ServeResult> {
    return { ok: true, endpoint: { protocol: 'csi', address: 'csi.space.io', url: `csi://csi.space.io/${capsuleId}` } };
  }
  async probe(): Promise<boolean> {
    return true;
  }
  async stop(): Promise<void> {}
}

/**
 * A protocol the gateway does not serve yet (NVMe/TCP and NFS land with their own front ends):
 * the view says so plainly instead of pretending to be ready.
 */
export class UnavailableViewDriver implements ViewDriver {
  constructor(readonly protocol: string, private readonly why: string) {}
  async serve(): Promise<ServeResult> {
    return { ok: false, reason: 'ProtocolUnavailable', message: this.why };
  }
  async probe(): Promise<boolean> {
    return false;
  }
  async stop(): Promise<void> {}
}
