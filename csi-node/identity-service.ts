/**
 * CSI Identity: served in every mode; kubelet's registrar and the sidecars use it to learn the
 * driver name and what it offers, and liveness probes call Probe.
 */
import fs from 'node:fs';
import path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { packageRoot } from '../gateway/proto.js';
import { unary } from './proto.js';

export const DRIVER_NAME = 'csi.space.io';

let version: string | undefined;
export function pluginVersion(): string {
  if (version) return version;
  const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version?: string };
  version = pkg.version ?? '0.0.0';
  return version;
}

export interface IdentityOptions {
  /** Whether this process serves the Controller service (advertised only then). */
  controller: boolean;
  /** Topology is advertised only when a zone is configured. */
  zone?: string;
  /** Backend reachability; without one (a node plugin not tied to a store) Probe says ready. */
  ready?: () => Promise<boolean>;
}

export function createIdentityService(opts: IdentityOptions): grpc.UntypedServiceImplementation {
  return {
    GetPluginInfo: unary(async () => ({ name: DRIVER_NAME, vendor_version: pluginVersion(), manifest: {} })),
    GetPluginCapabilities: unary(async () => {
      const capabilities: object[] = [];
      if (opts.controller) capabilities.push({ service: { type: 'CONTROLLER_SERVICE' } });
      if (opts.zone) capabilities.push({ service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } });
      // Growing `content` needs no unmount: fuse and nfs see the new size at once.
      capabilities.push({ volume_expansion: { type: 'ONLINE' } });
      return { capabilities };
    }),
    Probe: unary(async () => ({ ready: { value: opts.ready ? await opts.ready() : true } })),
  };
}
