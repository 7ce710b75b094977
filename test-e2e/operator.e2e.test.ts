/**
 * End to end against a real API server (see cluster.ts for where it comes from; skips with the
 * reason when there is none): CRDs installed with kubectl, a standalone gateway and two operator
 * replicas as local processes, the example manifests applied with kubectl, then status,
 * conditions, events, finalizers, leader failover and admission of invalid manifests checked.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { findOrStartCluster, kubectl, type TestCluster } from './cluster.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const SPACECTL = path.join(ROOT, 'dist', 'cli', 'spacectl.js');
const LEASE_SECONDS = 6;

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function manifests(): string[] {
  const dir = path.join(ROOT, 'deployment', 'examples');
  return fs.readdirSync(dir).filter((f) => /^(capsule-|view-|zones).*\.yaml$/.test(f)).sort().map((f) => path.join(dir, f));
}

async function eventually<T>(what: string, fn: () => T | undefined | false, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

describe('e2e: operator against a real API server', function () {
  this.timeout(10 * 60_000);
  let cluster: TestCluster | undefined;
  let kc = '';
  const procs = new Map<string, ChildProcess>();
  let work = '';

  const getJson = (args: string[]) => {
    const r = kubectl(kc, [...args, '-o', 'json']);
    if (r.code !== 0) throw new Error(r.stderr);
    return JSON.parse(r.stdout);
  };
  const condition = (o: { status?: { conditions?: { type: string; status: string }[] } }, type: string) => o.status?.conditions?.find((c) => c.type === type)?.status;

  function startOperator(id: string, gatewayPort: number): void {
    const log = fs.openSync(path.join(work, `${id}.log`), 'w');
    const p = spawn(process.execPath, [SPACECTL, 'operator', '--kubeconfig', kc, '--gateway', `127.0.0.1:${gatewayPort}`,
      '--metrics-addr', '127.0.0.1:0', '--leader-elect', '--lease-namespace', 'default', '--identity', id,
      '--lease-duration', String(LEASE_SECONDS), '--view-root', path.join(work, 'views')], { stdio: ['ignore', log, log] });
    procs.set(id, p);
  }

  before(async function () {
    const found = await findOrStartCluster();
    if ('skip' in found) {
      console.log(`      e2e skipped: ${found.skip}`);
      this.skip();
    }
    cluster = (found as { cluster: TestCluster }).cluster;
    kc = cluster.kubeconfig;
    console.log(`      e2e against ${cluster.description}`);
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'space-e2e-'));
    const crd = kubectl(kc, ['apply', '-f', path.join(ROOT, 'crds')]);
    assert.equal(crd.code, 0, crd.stderr);
    for (const c of ['capsules.space.io', 'capsuleviews.space.io', 'federationzones.space.io']) {
      assert.equal(kubectl(kc, ['wait', '--for=condition=Established', `crd/${c}`, '--timeout=60s']).code, 0);
    }
    const gatewayPort = await freePort();
    const glog = fs.openSync(path.join(work, 'gateway.log'), 'w');
    procs.set('gateway', spawn(process.execPath, [SPACECTL, 'serve', '--data-dir', path.join(work, 'data'), '--listen', `127.0.0.1:${gatewayPort}`, '--http', '127.0.0.1:0', '--no-operator'], { stdio: ['ignore', glog, glog] }));
    startOperator('op-a', gatewayPort);
    startOperator('op-b', gatewayPort);
  });

  after(async () => {
    for (const p of procs.values()) p.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 1000));
    if (kc) for (const f of manifests()) kubectl(kc, ['delete', '-f', f, '--ignore-not-found', '--wait=false']);
    await cluster?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('rejects invalid manifests at admission with a clear message', () => {
    const dir = path.join(ROOT, 'deployment', 'examples', 'invalid');
    for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.yaml'))) {
      const r = kubectl(kc, ['apply', '-f', path.join(dir, f)]);
      assert.notEqual(r.code, 0, `${f} was accepted`);
      assert.match(r.stderr, /invalid|Unsupported value|Required value|must/i, `${f}: ${r.stderr}`);
    }
  });

  it('applies the examples; capsules and the fuse view become Ready with status, conditions, events and a finalizer', async () => {
    // Every manifest (policy.yaml beside them is a store policy for `spacectl put`, not an object).
    for (const f of manifests()) {
      const r = kubectl(kc, ['apply', '-f', f]);
      assert.equal(r.code, 0, `${f}: ${r.stderr}`);
    }
    const hello = await eventually('capsule hello Ready', () => {
      const o = getJson(['get', 'capsule', 'hello']);
      return condition(o, 'Ready') === 'True' ? o : undefined;
    });
    assert.equal(hello.status.phase, 'Ready');
    assert.ok(hello.status.size > 0);
    assert.match(hello.status.digest, /^sha256:/);
    assert.equal(hello.status.observedGeneration, hello.metadata.generation);
    assert.ok(hello.metadata.finalizers.includes('space.io/finalizer'));
    await eventually('clone Ready', () => condition(getJson(['get', 'capsule', 'hello-v1']), 'Ready') === 'True');
    const view = await eventually('fuse view Ready', () => {
      const o = getJson(['get', 'capsuleview', 'hello-fuse']);
      return condition(o, 'Ready') === 'True' ? o : undefined;
    });
    assert.ok(view.status.endpoint.mountPath);
    const events = getJson(['get', 'events', '--field-selector', 'involvedObject.name=hello']);
    assert.ok(events.items.some((e: { reason: string }) => e.reason === 'Ingested'), 'an Ingested event');
  });

  it('fails over to the other replica when the leader dies', async () => {
    const lease = getJson(['get', 'lease', 'space-operator', '-n', 'default']);
    const leader = lease.spec.holderIdentity as string;
    assert.ok(procs.has(leader), `leader ${leader} is one of ours`);
    procs.get(leader)!.kill('SIGKILL');
    await eventually('the other replica to take the lease', () => {
      const l = getJson(['get', 'lease', 'space-operator', '-n', 'default']);
      return l.spec.holderIdentity && l.spec.holderIdentity !== leader;
    }, (LEASE_SECONDS + 20) * 1000);
    const m = kubectl(kc, ['apply', '-f', '-'], 'apiVersion: space.io/v1alpha1\nkind: Capsule\nmetadata: {name: after-failover, namespace: default}\nspec: {source: {inline: {data: "hi"}}}\n');
    assert.equal(m.code, 0, m.stderr);
    await eventually('new capsule Ready after failover', () => condition(getJson(['get', 'capsule', 'after-failover']), 'Ready') === 'True');
  });

  it('deleting a capsule runs the finalizer and removes the object', async () => {
    assert.equal(kubectl(kc, ['delete', 'capsule', 'after-failover', '--wait=false']).code, 0);
    await eventually('capsule gone', () => kubectl(kc, ['get', 'capsule', 'after-failover']).code !== 0);
  });
});
