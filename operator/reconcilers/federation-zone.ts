/**
 * FederationZone reconciler: probes the peer zone's bridge endpoint and reports whether it is
 * reachable and how far away it is (TCP connect round-trip time, the median of a few tries).
 * Replication itself is later work; the status fields it will fill (replicationLagSeconds) are
 * already in the schema. The probe repeats every `probeIntervalMs`; status is written only
 * when reachability changes or the RTT moves noticeably, so steady state costs no API writes
 * beyond the periodic lastProbeTime refresh.
 */
import net from 'node:net';
import type { EventRecorder } from '../runtime/events.js';
import { setCondition } from '../runtime/conditions.js';
import { FEDERATION_ZONES, type ObjectApi } from '../runtime/object-api.js';
import type { Condition, FederationZone, FederationZoneStatus } from '../api/types.js';
import type { Logger } from '../../capsule/log.js';
import { keyOf, writeStatus, type Lister } from './common.js';

export interface FederationZoneReconcilerDeps {
  api: ObjectApi;
  zones: Lister;
  events: EventRecorder;
  log: Logger;
  probeIntervalMs?: number;
  probeTimeoutMs?: number;
  /** Refresh lastProbeTime in status at most this often when nothing else changed. */
  statusRefreshMs?: number;
}

export interface ProbeResult {
  connected: boolean;
  rttMs?: number;
  error?: string;
}

/** TCP connect to host:port, a few times; the median connect time is the RTT. */
export async function probeEndpoint(endpoint: string, timeoutMs: number, tries = 3): Promise<ProbeResult> {
  const m = /^(.*):(\d{1,5})$/.exec(endpoint);
  if (!m) return { connected: false, error: `endpoint ${JSON.stringify(endpoint)} is not host:port` };
  const host = m[1]!.replace(/^\[(.*)\]$/, '$1');
  const port = Number(m[2]);
  const times: number[] = [];
  let lastError = '';
  for (let i = 0; i < tries; i++) {
    const t0 = performance.now();
    try {
      await new Promise<void>((resolve, reject) => {
        const s = net.connect({ host, port });
        const timer = setTimeout(() => {
          s.destroy();
          reject(new Error(`no answer within ${timeoutMs} ms`));
        }, timeoutMs);
        s.once('connect', () => {
          clearTimeout(timer);
          s.destroy();
          resolve();
        });
        s.once('error', (e) => {
          clearTimeout(timer);
          reject(e);
        });
      });
      times.push(performance.now() - t0);
    } catch (e) {
      lastError = (e as Error).message;
    }
  }
  if (!times.length) return { connected: false, error: lastError };
  times.sort((a, b) => a - b);
  return { connected: true, rttMs: Math.round(times[times.length >> 1]! * 1000) / 1000 };
}

export class FederationZoneReconciler {
  constructor(private readonly d: FederationZoneReconcilerDeps) {}

  async reconcile(req: { namespace?: string; name: string }): Promise<{ requeueAfterMs?: number; requeue?: boolean } | void> {
    const zone = this.d.zones.get(keyOf(req.namespace, req.name)) as FederationZone | undefined;
    if (!zone || zone.metadata.deletionTimestamp) return; // nothing of ours to clean up
    const gen = zone.metadata.generation ?? 1;
    const interval = this.d.probeIntervalMs ?? 30_000;
    const r = await probeEndpoint(zone.spec.endpoint, this.d.probeTimeoutMs ?? 2000);
    const old = zone.status;
    const conditions: Condition[] = structuredClone(old?.conditions ?? []); // never mutate the cache
    if (r.connected) setCondition(conditions, { type: 'Connected', status: 'True', reason: 'Reachable', message: `${zone.spec.endpoint} answers` }, gen);
    else setCondition(conditions, { type: 'Connected', status: 'False', reason: 'Unreachable', message: `${zone.spec.endpoint}: ${r.error}` }, gen);
    setCondition(conditions, { type: 'Ready', status: r.connected ? 'True' : 'False', reason: r.connected ? 'Reachable' : 'Unreachable', message: r.connected ? 'peer zone reachable' : `peer zone unreachable: ${r.error}` }, gen);
    if (old?.connected !== r.connected) {
      this.d.events.event(zone, r.connected ? 'Normal' : 'Warning', r.connected ? 'Connected' : 'Unreachable', r.connected ? `${zone.spec.endpoint} reachable, rtt ${r.rttMs} ms` : `${zone.spec.endpoint}: ${r.error}`);
      this.d.log.info('zone.probe', { zone: zone.spec.zone, connected: r.connected, rttMs: r.rttMs, error: r.error });
    }
    // Keep the old RTT and probe time unless something changed enough to be worth a write.
    const rttMoved = r.rttMs !== undefined && (old?.roundTripMillis === undefined || Math.abs(r.rttMs - old.roundTripMillis) > Math.max(1, old.roundTripMillis * 0.5));
    const stale = !old?.lastProbeTime || Date.now() - Date.parse(old.lastProbeTime) >= (this.d.statusRefreshMs ?? 5 * 60_000);
    const changed = old?.connected !== r.connected || rttMoved || stale || old?.observedGeneration !== gen;
    const status: FederationZoneStatus = {
      ...(old ?? {}),
      connected: r.connected,
      ...(r.connected ? { roundTripMillis: changed ? r.rttMs! : old?.roundTripMillis ?? r.rttMs! } : {}),
      lastProbeTime: changed ? new Date().toISOString() : old!.lastProbeTime!,
      observedGeneration: gen,
      conditions,
    };
    if (!r.connected) delete status.roundTripMillis;
    await writeStatus(this.d.api, FEDERATION_ZONES, zone, status);
    return { requeueAfterMs: interval };
  }
}
