/**
 * spacectl csi: the CSI plugin. Controller mode runs next to the provisioner/snapshotter/resizer
 * sidecars; node mode runs in the DaemonSet next to the node-driver-registrar.
 */
import path from 'node:path';
import { createLogger } from '../../capsule/log.js';
import { invalid } from '../../capsule/errors.js';
import { readOwner } from '../../capsule/lock.js';
import { Store } from '../../capsule/store.js';
import { GatewayClient } from '../../gateway/client.js';
import { startGateway, type Gateway } from '../../gateway/server.js';
import { KubeObjectApi } from '../../operator/runtime/kube-api.js';
import { CSI_MODES, startCsiServer, type CsiMode } from '../../csi-node/server.js';
import { GatewayVolumeBackend, KubeVolumeBackend, type VolumeBackend } from '../../csi-node/volumes.js';
import type { Command } from '../command.js';
import { clientTls } from '../target.js';
import { createNodeService } from '../../csi-node/node-service.js';
import { MounterClient } from '../../csi-node/mounter-client.js';
import { tuneHeapForServing } from '../../gateway/heap-tuning.js';

export const csi: Command = {
  name: 'csi',
  summary: 'run the CSI plugin (Identity + Controller and/or Node) on a unix socket',
  usage: [
    'spacectl csi --mode controller|node|all --endpoint unix:///csi/csi.sock --node-id N [--zone Z]',
    '             [--data-dir D | --gateway ADDR [--tls-ca F --tls-cert F --tls-key F] | --kube-namespace NS [--kubeconfig F]]',
    '--data-dir: standalone; opens the store (or talks to the process that already owns it).',
    '--gateway: volumes are capsules on that gateway. --kube-namespace: volumes are Capsule objects.',
    'Node mode: [--state-dir DIR] (staged/published volumes, default <data dir>/csi-node) [--max-volumes N];',
    'FUSE volumes are served by one mount process per volume, which outlives a restart of the plugin.',
    '[--mounter-socket PATH]: the mount processes are started by `spacectl csi-mounter` on that socket',
    '(a sidecar container), so they also outlive a restart of the plugin\'s container.',
  ].join('\n'),
  async run(f) {
    const mode = (f.str('mode') ?? 'all') as CsiMode;
    const endpoint = f.str('endpoint') ?? process.env.CSI_ENDPOINT;
    const nodeId = f.str('node-id') ?? process.env.NODE_ID;
    const zone = f.str('zone');
    const dataDirFlag = f.str('data-dir');
    const gateway = f.str('gateway');
    const kubeNamespace = f.str('kube-namespace');
    const kubeconfig = f.str('kubeconfig');
    const stateDirFlag = f.str('state-dir');
    const maxVolumes = f.int('max-volumes');
    const mounterSocket = f.str('mounter-socket');
    const tls = clientTls(f);
    f.rejectUnknown();
    if (!CSI_MODES.includes(mode)) throw invalid(`--mode must be one of ${CSI_MODES.join(', ')}`);
    if (!endpoint) throw invalid('--endpoint unix:///path/csi.sock is required');
    if (!nodeId) throw invalid('--node-id is required');
    if (mounterSocket && mode === 'controller') throw invalid('--mounter-socket is for node mode');
    if ([dataDirFlag, gateway, kubeNamespace].filter(Boolean).length > 1) throw invalid('choose one of --data-dir, --gateway, --kube-namespace');

    const logger = createLogger({ component: 'csi', base: { node: nodeId, mode } });
    tuneHeapForServing(logger);
    let backend: VolumeBackend | undefined;
    let gw: Gateway | undefined;
    let client: GatewayClient | undefined;
    /** Where mount processes reach the gateway that owns the capsules. */
    let nodeGateway: string | undefined = gateway;
    let dataDirUsed: string | undefined;
    if (gateway) {
      client = new GatewayClient(gateway, { ...tls, timeoutMs: 60_000 });
      backend = new GatewayVolumeBackend({ api: client, logger });
    } else if (kubeNamespace) {
      backend = new KubeVolumeBackend({ api: KubeObjectApi.fromConfig({ kubeconfig }, { instance: `csi-${nodeId}` }), namespace: kubeNamespace, logger });
    } else if (dataDirFlag || mode !== 'node') {
      const dataDir = path.resolve(dataDirFlag ?? process.env.SPACE_HOME ?? '/var/lib/space');
      dataDirUsed = dataDir;
      const owner = readOwner(dataDir);
      if (owner?.endpoint) {
        nodeGateway = owner.endpoint;
        // Someone (spacectl serve) holds the store: its head has one writer, so go through it.
        client = new GatewayClient(owner.endpoint, { timeoutMs: 60_000 });
        backend = new GatewayVolumeBackend({ api: client, dataDir, logger });
        logger.info('csi.using_owner', { volume: null, endpoint: owner.endpoint, pid: owner.pid });
      } else {
        // Own the store, and serve it on its socket as `serve` does so FUSE mounts and
        // spacectl reach the same head.
        const store = Store.open(dataDir, { logger: logger.child({ component: 'store' }) });
        gw = await startGateway({ dataDir, store, listen: '', httpListen: '', logger: logger.child({ component: 'gateway' }) });
        if (gw.socketPath) nodeGateway = `unix://${gw.socketPath}`;
        backend = new GatewayVolumeBackend({ api: store, dataDir, logger });
      }
    }

    let node: ReturnType<typeof createNodeService> | undefined;
    let mounterWatch: { close(): void } | undefined;
    if (mode !== 'controller') {
      if (!nodeGateway) throw invalid('node mode needs a gateway for its mounts: --gateway ADDR or --data-dir D');
      const stateDir = path.resolve(stateDirFlag ?? path.join(dataDirUsed ?? process.env.SPACE_HOME ?? '/var/lib/space', 'csi-node'));
      const mounter = mounterSocket ? new MounterClient(path.resolve(mounterSocket.replace(/^unix:\/\//, ''))) : undefined;
      // The sidecar may come up after us. Until it answers, repair could only fail (it cannot
      // tell a live mount from a dead one), so wait a while; if it stays away, serve anyway
      // (FUSE calls then fail UNAVAILABLE) and let the watch below repair on first contact.
      const seen = await mounter?.waitReady(30_000).catch((e: Error) => {
        logger.warn('csi.mounter.unreachable', { volume: null, socket: mounter.socketPath, err: e });
        return undefined;
      });
      const n = (node = createNodeService({ nodeId, zone, maxVolumes, stateDir, gateway: nodeGateway, logger: logger.child({ component: 'csi-node' }), fuseLauncher: mounter }));
      // Mounts whose process died while the plugin was down come back before we serve.
      if (!mounter || seen) await n.repair();
      if (mounter) {
        // A restarted mounter container took its mount processes with it: repair then too.
        // Repairs run one at a time (a second one would find every volume busy).
        let repairing = Promise.resolve();
        mounterWatch = mounter.watch(seen?.instance, (h) => {
          logger.info('csi.mounter.new-instance', { volume: null, instance: h.instance, pid: h.pid });
          repairing = repairing
            .then(() => n.repair())
            .then(() => logger.info('csi.mounter.repaired', { volume: null, instance: h.instance }))
            .catch((e: Error) => logger.error('csi.mounter.repair-failed', { volume: null, err: e }));
        }, logger);
      }
    }
    const server = await startCsiServer({ endpoint, mode, nodeId, zone, backend, logger, nodeService: node?.implementation });
    // Listen before announcing: whoever waits for that line may signal at once.
    const stopped = new Promise<void>((resolve) => {
      const stop = (signal: NodeJS.Signals) => {
        process.off('SIGTERM', stop);
        process.off('SIGINT', stop);
        logger.info('csi.signal', { volume: null, signal });
        resolve();
      };
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    });
    process.stderr.write(`space csi: ${mode} on ${server.socketPath}\n`);
    await stopped;
    mounterWatch?.close();
    await server.close();
    await node?.close(); // leaves the mount processes running: pods keep their volumes
    await backend?.close();
    client?.close();
    await gw?.close();
  },
};
