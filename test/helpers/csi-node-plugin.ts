/**
 * A CSI node plugin in its own process, so a test can kill -9 it like a crashed DaemonSet pod
 * and check that the volumes it staged keep working.
 *   node dist/test/helpers/csi-node-plugin.js STATE_DIR GATEWAY SOCKET
 * Prints "ready" on stdout once serving.
 */
import * as grpc from '@grpc/grpc-js';
import { createLogger } from '../../capsule/log.js';
import { loadCsiProto } from '../../csi-node/proto.js';
import { createNodeService } from '../../csi-node/node-service.js';

const [stateDir, gateway, socket] = process.argv.slice(2);
if (!stateDir || !gateway || !socket) throw new Error('usage: csi-node-plugin STATE_DIR GATEWAY SOCKET');
const svc = createNodeService({ nodeId: 'node-a', stateDir, gateway, logger: createLogger({ component: 'csi-node-plugin' }) });
await svc.repair();
const server = new grpc.Server();
server.addService(loadCsiProto().Node, svc.implementation);
server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) throw err;
  process.stdout.write('ready\n');
});
