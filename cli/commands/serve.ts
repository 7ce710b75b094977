/** spacectl serve: the standalone gateway (the cluster's StatefulSet runs the same entry). */
import fs from 'node:fs';
import path from 'node:path';
import { runGateway } from '../../gateway/run.js';
import { DEFAULT_HTTP_LISTEN, DEFAULT_LISTEN } from '../../gateway/server.js';
import { Store } from '../../capsule/store.js';
import { serverCacheBytes } from '../../capsule/cache-size.js';
import { tuneHeapForServing } from '../../gateway/heap-tuning.js';
import { createLogger } from '../../capsule/log.js';
import { LocalViewManager } from '../../gateway/fuse/views.js';
import { GatewayExports } from '../../gateway/exports.js';
import { DEFAULT_NVME_LISTEN, NvmeExports } from '../../gateway/nvme/exports.js';
import { DEFAULT_NFS_LISTEN, NfsExports } from '../../gateway/nfs/gateway-exports.js';
import { parseHostPort } from '../../gateway/address.js';
import type { Command } from '../command.js';
import { dataDirOf } from '../target.js';
import { invalid } from '../../capsule/errors.js';
import { startStandaloneOperator } from '../../operator/standalone/run.js';

export const serve: Command = {
  name: 'serve',
  summary: 'run a gateway (gRPC Capsule API, FUSE views, /metrics /healthz /readyz) and, standalone, the operator',
  usage: [
    'spacectl serve [--data-dir D] [--listen 127.0.0.1:7420] [--http 127.0.0.1:7421] [--socket PATH] [--tls-cert F --tls-key F [--tls-ca F] [--tls-client-auth]]',
    '               [--no-operator] [--operator-http 127.0.0.1:7422] [--view-root DIR] [--nvme-listen 127.0.0.1:4420] [--nfs-listen 127.0.0.1:2049]',
    'NVMe/TCP and NFS views are served on --nvme-listen and --nfs-listen (bound when the first one is',
    'exported; \'\' disables the protocol). NFS also answers MOUNT on port 20048 of the default listener.',
    'Standalone, serve also runs the operator on the data dir\'s object store (what `spacectl apply` writes);',
    '--no-operator runs the gateway alone (in a cluster, `spacectl operator` does that job).',
  ].join('\n'),
  booleans: ['tls-client-auth', 'no-operator'],
  async run(f) {
    const dataDir = dataDirOf(f);
    const listen = f.str('listen') ?? DEFAULT_LISTEN;
    const httpListen = f.str('http') ?? DEFAULT_HTTP_LISTEN;
    const socket = f.str('socket');
    const cert = f.str('tls-cert');
    const key = f.str('tls-key');
    const ca = f.str('tls-ca');
    const requireClientCert = f.bool('tls-client-auth');
    const withOperator = !f.bool('no-operator');
    const operatorHttp = f.str('operator-http');
    const viewRoot = f.str('view-root');
    const nvmeListen = f.str('nvme-listen') ?? DEFAULT_NVME_LISTEN;
    if (nvmeListen) parseHostPort(nvmeListen, '--nvme-listen');
    const nfsListen = f.str('nfs-listen') ?? DEFAULT_NFS_LISTEN;
    if (nfsListen) parseHostPort(nfsListen, '--nfs-listen');
    if (!!cert !== !!key) throw invalid('--tls-cert and --tls-key go together');
    if (requireClientCert && !ca) throw invalid('--tls-client-auth needs --tls-ca to verify client certificates');
    for (const file of [cert, key, ca]) if (file && !fs.existsSync(file)) throw invalid(`TLS file ${file} does not exist`);
    f.rejectUnknown();
    const logger = createLogger({ component: 'gateway' });
    tuneHeapForServing(logger);
    const store = Store.open(dataDir, { logger: logger.child({ component: 'store' }), cacheBytes: serverCacheBytes() });
    const views = new LocalViewManager(store, logger.child({ component: 'fuse' }));
    const exports = new GatewayExports([
      ...(nvmeListen ? [new NvmeExports(store, logger.child({ component: 'nvme' }), nvmeListen)] : []),
      ...(nfsListen ? [new NfsExports(store, logger.child({ component: 'nfs' }), nfsListen)] : []),
    ]);
    await runGateway(
      { dataDir, store, views, exports, listen, httpListen, socket, logger, tls: cert && key ? { cert, key, ca, requireClientCert } : undefined },
      async (gw) => {
        process.stderr.write(`space gateway: data dir ${dataDir}; gRPC ${gw.grpcPort ? `${listen.replace(/:\d+$/, '')}:${gw.grpcPort}` : 'off'}, socket ${gw.socketPath}, http ${gw.httpPort ? `:${gw.httpPort}` : 'off'}\n`);
        if (!withOperator) return;
        const address = gw.socketPath ? `unix://${gw.socketPath}` : `127.0.0.1:${gw.grpcPort}`;
        const op = await startStandaloneOperator({ dataDir, gatewayAddress: address, logger: logger.child({ component: 'operator' }), metricsAddress: operatorHttp, viewRoot });
        process.stderr.write(`space operator: reconciling ${path.join(dataDir, 'objects')}${operatorHttp ? `, http ${operatorHttp}` : ''}\n`);
        return op.stop;
      },
    );
  },
};
