/**
 * SIGTERM handling of a Manager in a real child process: the in-flight reconcile finishes, the
 * lease is released, the process exits 0; a second signal exits at once.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { waitFor } from './helpers/fake-api.js';

const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const script = (reconcileMs: number) => `
import { Manager } from ${JSON.stringify(path.join(dist, 'operator/runtime/manager.js'))};
import { RuntimeMetrics } from ${JSON.stringify(path.join(dist, 'operator/runtime/metrics.js'))};
import { CAPSULES, LEASES } from ${JSON.stringify(path.join(dist, 'operator/runtime/object-api.js'))};
import { silentLogger } from ${JSON.stringify(path.join(dist, 'capsule/log.js'))};
import { FakeApi } from ${JSON.stringify(path.join(dist, 'test/helpers/fake-api.js'))};
const api = new FakeApi();
await api.create(CAPSULES, { apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name: 'c', namespace: 'ns' }, spec: {} });
const m = new Manager({
  api, logger: silentLogger, metrics: new RuntimeMetrics({ defaultMetrics: false }),
  leaderElection: { namespace: 'ns', name: 'op', identity: 'child', leaseDurationMs: 60000, renewDeadlineMs: 40000, retryPeriodMs: 50 },
});
m.addController({ name: 'c', for: CAPSULES, reconciler: { reconcile: async () => {
  console.log('reconcile-start');
  await new Promise((r) => setTimeout(r, ${reconcileMs}));
  console.log('reconcile-end');
} } });
m.handleSignals();
await m.start();
m.done.then(async () => {
  const lease = await api.get(LEASES, 'op', 'ns');
  console.log('holder=' + JSON.stringify(lease.spec.holderIdentity));
});
`;

function run(reconcileMs: number) {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script(reconcileMs)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, output: () => out, exited };
}

describe('runtime: manager signal handling', function () {
  this.timeout(30_000);

  it('SIGTERM: finishes the in-flight reconcile, releases the lease, exits 0', async () => {
    const p = run(300);
    await waitFor(() => p.output().includes('reconcile-start'), 'reconcile started', 15_000);
    p.child.kill('SIGTERM');
    const code = await p.exited;
    const lines = p.output().trim().split('\n');
    assert.equal(code, 0, p.output());
    assert.deepEqual(lines, ['reconcile-start', 'reconcile-end', 'holder=""']);
  });

  it('a second signal exits at once', async () => {
    const p = run(600_000);
    await waitFor(() => p.output().includes('reconcile-start'), 'reconcile started', 15_000);
    p.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 50));
    p.child.kill('SIGINT');
    const code = await p.exited;
    assert.equal(code, 1);
    assert.ok(!p.output().includes('reconcile-end'));
  });
});
