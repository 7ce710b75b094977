/** spacectl operator: the Space operator against a Kubernetes API server. */
import os from 'node:os';
import crypto from 'node:crypto';
import { createLogger } from '../../capsule/log.js';
import { invalid } from '../../capsule/errors.js';
import { KubeObjectApi } from '../../operator/runtime/kube-api.js';
import { ServiceGateways, StaticGateways, type GatewayDirectory } from '../../operator/gateways.js';
import { createOperator } from '../../operator/operator.js';
import type { Command } from '../command.js';

export const operator: Command = {
  name: 'operator',
  summary: 'run the operator: reconcile Capsules, CapsuleViews and FederationZones of a cluster',
  usage: [
    'spacectl operator [--kubeconfig F] [--context C] [--gateway ADDR[,ADDR...] | --gateway-service NS/NAME]',
    '                  [--metrics-addr :8080] [--leader-elect] [--lease-namespace NS] [--lease-name N]',
    '                  [--lease-duration SECONDS] [--identity ID] [--namespace NS] [--view-root DIR] [--workers N]',
    'Without --kubeconfig: $KUBECONFIG, ~/.kube/config, then the in-cluster service account.',
    'Without --gateway: the Endpoints of the Service named by --gateway-service or $SPACE_GATEWAY_SERVICE.',
  ].join('\n'),
  booleans: ['leader-elect'],
  async run(f) {
    const kubeconfig = f.str('kubeconfig');
    const context = f.str('context');
    const gatewayList = f.str('gateway');
    const gatewayService = f.str('gateway-service') ?? process.env.SPACE_GATEWAY_SERVICE;
    const metricsAddress = f.str('metrics-addr') ?? ':8080';
    const leaderElect = f.bool('leader-elect');
    const leaseNamespace = f.str('lease-namespace') ?? process.env.POD_NAMESPACE ?? 'default';
    const leaseName = f.str('lease-name') ?? 'space-operator';
    const leaseSeconds = f.int('lease-duration') ?? 15;
    const identity = f.str('identity') ?? `${os.hostname()}_${crypto.randomUUID()}`;
    const namespace = f.str('namespace');
    const viewRoot = f.str('view-root') ?? '/var/lib/space/views';
    const workers = f.int('workers') ?? 4;
    f.rejectUnknown();
    if (leaseSeconds < 2) throw invalid('--lease-duration must be at least 2 seconds');
    if (!gatewayList && !gatewayService) throw invalid('say where the gateways are: --gateway HOST:PORT or --gateway-service NAMESPACE/NAME');

    const logger = createLogger({ component: 'operator', base: { identity } });
    const api = KubeObjectApi.fromConfig({ kubeconfig, context }, { instance: identity });
    let gateways: GatewayDirectory;
    if (gatewayList) gateways = new StaticGateways(gatewayList.split(',').map((s) => s.trim()).filter(Boolean), { timeoutMs: 30_000 });
    else {
      const m = /^([a-z0-9-]+)\/([a-z0-9-]+)$/.exec(gatewayService!);
      if (!m) throw invalid(`--gateway-service ${JSON.stringify(gatewayService)} must be NAMESPACE/NAME`);
      gateways = new ServiceGateways(api, m[1]!, m[2]!, 'grpc', { timeoutMs: 30_000 });
    }
    const op = createOperator({
      api,
      gateways,
      logger,
      viewRoot,
      metricsAddress,
      namespace,
      workers,
      leaderElection: leaderElect
        ? { namespace: leaseNamespace, name: leaseName, identity, leaseDurationMs: leaseSeconds * 1000, renewDeadlineMs: Math.round(leaseSeconds * 2000 / 3), retryPeriodMs: Math.max(500, Math.round(leaseSeconds * 1000 / 7)) }
        : undefined,
    });
    op.manager.handleSignals();
    await op.start();
    logger.info('operator.started', { leaderElect, gateways: gatewayList ?? gatewayService, metricsAddress });
    await op.manager.done;
    await op.stop();
  },
};
