/**
 * A real Kubernetes API server for the e2e suite, found or started the way envtest does:
 *  1. KUBECONFIG names a cluster (KIND, a dev cluster): use it as it is;
 *  2. TEST_ASSET_KUBE_APISERVER and TEST_ASSET_ETCD name binaries: start etcd and
 *     kube-apiserver on loopback ports in a temp dir, with a static admin token;
 *  3. neither: the suite skips, saying which variables would enable it.
 * kube-apiserver is not packaged by Debian, so on the development machine the suite skips
 * unless one of the above is provided; etcd comes from Debian's etcd-server package.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface TestCluster {
  kubeconfig: string;
  /** How it was obtained, for the test log. */
  description: string;
  stop(): Promise<void>;
}

export type ClusterOrSkip = { cluster: TestCluster } | { skip: string };

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what} did not come up within ${timeoutMs} ms`);
}

export function kubectl(kubeconfig: string, args: string[], input?: string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync('kubectl', ['--kubeconfig', kubeconfig, ...args], { encoding: 'utf8', input, timeout: 60_000 });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? (r.error ? String(r.error) : '') };
}

export async function findOrStartCluster(): Promise<ClusterOrSkip> {
  if (spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status !== 0) return { skip: 'kubectl is not on PATH' };
  const kc = process.env.KUBECONFIG;
  if (kc && fs.existsSync(kc)) {
    const r = kubectl(kc, ['get', '--raw', '/readyz']);
    if (r.code !== 0) return { skip: `KUBECONFIG=${kc} names a cluster that does not answer: ${r.stderr.trim()}` };
    return { cluster: { kubeconfig: kc, description: `cluster from KUBECONFIG=${kc}`, stop: async () => {} } };
  }
  const apiserver = process.env.TEST_ASSET_KUBE_APISERVER;
  const etcd = process.env.TEST_ASSET_ETCD ?? (fs.existsSync('/usr/bin/etcd') ? '/usr/bin/etcd' : undefined);
  if (!apiserver || !fs.existsSync(apiserver) || !etcd || !fs.existsSync(etcd)) {
    return {
      skip: 'no Kubernetes API server: set KUBECONFIG to a cluster, or TEST_ASSET_KUBE_APISERVER (and TEST_ASSET_ETCD, default /usr/bin/etcd from etcd-server) to binaries; kube-apiserver is not packaged by Debian',
    };
  }
  return { cluster: await startControlPlane(apiserver, etcd) };
}

async function startControlPlane(apiserverBin: string, etcdBin: string): Promise<TestCluster> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'space-e2e-cp-'));
  const procs: ChildProcess[] = [];
  const stop = async () => {
    for (const p of procs.reverse()) p.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    const etcdClient = await freePort();
    const etcdPeer = await freePort();
    const etcdLog = fs.openSync(path.join(dir, 'etcd.log'), 'w');
    procs.push(spawn(etcdBin, [
      '--data-dir', path.join(dir, 'etcd'),
      '--listen-client-urls', `http://127.0.0.1:${etcdClient}`, '--advertise-client-urls', `http://127.0.0.1:${etcdClient}`,
      '--listen-peer-urls', `http://127.0.0.1:${etcdPeer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${etcdPeer}`,
      '--initial-cluster', `default=http://127.0.0.1:${etcdPeer}`, '--unsafe-no-fsync',
    ], { stdio: ['ignore', etcdLog, etcdLog] }));
    await waitFor('etcd', async () => (await fetch(`http://127.0.0.1:${etcdClient}/health`)).ok, 30_000);

    // Service-account signing key and a static admin token (what envtest sets up too).
    const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    fs.writeFileSync(path.join(dir, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    fs.writeFileSync(path.join(dir, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
    const token = crypto.randomBytes(16).toString('hex');
    fs.writeFileSync(path.join(dir, 'tokens.csv'), `${token},admin,admin,system:masters\n`);
    const port = await freePort();
    const apiLog = fs.openSync(path.join(dir, 'apiserver.log'), 'w');
    procs.push(spawn(apiserverBin, [
      '--etcd-servers', `http://127.0.0.1:${etcdClient}`,
      '--bind-address', '127.0.0.1', '--secure-port', String(port), '--cert-dir', path.join(dir, 'certs'),
      '--token-auth-file', path.join(dir, 'tokens.csv'), '--authorization-mode', 'RBAC',
      '--service-account-issuer', 'https://kubernetes.default.svc', '--service-account-key-file', path.join(dir, 'sa.pub'),
      '--service-account-signing-key-file', path.join(dir, 'sa.key'), '--service-cluster-ip-range', '10.0.0.0/24',
      '--allow-privileged=true',
    ], { stdio: ['ignore', apiLog, apiLog] }));
    const kubeconfig = path.join(dir, 'kubeconfig');
    fs.writeFileSync(kubeconfig, [
      'apiVersion: v1', 'kind: Config',
      'clusters:', '- name: e2e', '  cluster:', `    server: https://127.0.0.1:${port}`, '    insecure-skip-tls-verify: true',
      'users:', '- name: admin', '  user:', `    token: ${token}`,
      'contexts:', '- name: e2e', '  context: {cluster: e2e, user: admin, namespace: default}',
      'current-context: e2e', '',
    ].join('\n'));
    await waitFor('kube-apiserver', async () => kubectl(kubeconfig, ['get', '--raw', '/readyz']).code === 0, 90_000);
    return { kubeconfig, description: `kube-apiserver ${apiserverBin} + etcd ${etcdBin} on 127.0.0.1:${port}`, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
