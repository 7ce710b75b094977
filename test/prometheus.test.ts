/**
 * A real Prometheus (Debian's package) scrapes a running Manager and must see the
 * controller-runtime series with their labels. Skips when /usr/bin/prometheus is missing
 * (hack/install-deps.sh installs it).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { Manager } from '../operator/runtime/manager.js';
import { CAPSULES } from '../operator/runtime/object-api.js';
import { silentLogger } from '../capsule/log.js';
import { FakeApi, sleep } from './helpers/fake-api.js';
import { rmrf, tmpDir } from './helpers/tmp.js';

const PROMETHEUS = process.env.PROMETHEUS_BIN ?? '/usr/bin/prometheus';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

async function query(port: number, q: string): Promise<Sample[]> {
  const res = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(q)}`);
  const body = (await res.json()) as { status: string; data?: { result: Sample[] } };
  return body.status === 'success' ? body.data?.result ?? [] : [];
}

describe('prometheus scrapes the operator', function () {
  this.timeout(120_000);
  let prom: ChildProcess | undefined;
  let manager: Manager | undefined;
  let dir: string | undefined;
  let promLog = '';

  after(async () => {
    if (prom && prom.exitCode === null) {
      const exited = new Promise((r) => prom!.once('exit', r));
      prom.kill('SIGTERM');
      const t = setTimeout(() => prom!.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    await manager?.stop();
    if (dir) rmrf(dir);
  });

  it('finds controller_runtime_reconcile_total with controller and result labels', async function () {
    if (!fs.existsSync(PROMETHEUS)) {
      console.log(`    (skipped: ${PROMETHEUS} not installed; apt-get install prometheus, or run hack/install-deps.sh)`);
      this.skip();
    }
    const api = new FakeApi();
    for (const name of ['a', 'b', 'c']) {
      await api.create(CAPSULES, { apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name, namespace: 'ns' }, spec: {} });
    }
    manager = new Manager({ api, logger: silentLogger, metricsAddress: '127.0.0.1:0' });
    let calls = 0;
    manager.addController({
      name: 'capsule', for: CAPSULES, workers: 2, resyncPeriodMs: 500, rateLimiter: { baseDelayMs: 10, maxDelayMs: 200 },
      reconciler: {
        reconcile: async (req) => {
          calls++;
          if (req.name === 'b' && calls % 3 === 0) throw new Error('sometimes fails');
        },
      },
    });
    await manager.start();
    const target = `127.0.0.1:${manager.port}`;

    dir = tmpDir('space-prom-');
    const promPort = await freePort();
    const config = path.join(dir, 'prometheus.yml');
    fs.writeFileSync(config, [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'scrape_configs:',
      '  - job_name: space-operator',
      '    static_configs:',
      `      - targets: ['${target}']`,
      '',
    ].join('\n'));
    prom = spawn(PROMETHEUS, [
      `--config.file=${config}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    prom.stdout?.on('data', (d: Buffer) => (promLog += d.toString()));
    prom.stderr?.on('data', (d: Buffer) => (promLog += d.toString()));

    const deadline = Date.now() + 60_000;
    let samples: Sample[] = [];
    while (Date.now() < deadline) {
      assert.equal(prom.exitCode, null, `prometheus exited:\n${promLog.slice(-2000)}`);
      try {
        samples = await query(promPort, 'controller_runtime_reconcile_total{result="success"} > 0');
        if (samples.length > 0) break;
      } catch {
        // not listening yet
      }
      await sleep(500);
    }
    assert.ok(samples.length > 0, `no controller_runtime_reconcile_total series within 60 s; prometheus log:\n${promLog.slice(-2000)}`);
    const s = samples[0];
    assert.equal(s.metric.__name__, 'controller_runtime_reconcile_total');
    assert.equal(s.metric.controller, 'capsule');
    assert.equal(s.metric.result, 'success');
    assert.equal(s.metric.job, 'space-operator');
    assert.equal(s.metric.instance, target);
    assert.ok(Number(s.value[1]) > 0);

    const all = await query(promPort, 'controller_runtime_reconcile_total{controller="capsule"}');
    assert.deepEqual(all.map((x) => x.metric.result).sort(), ['error', 'requeue', 'requeue_after', 'success']);
    const up = await query(promPort, `up{job="space-operator"}`);
    assert.equal(up[0]?.value[1], '1');
    const workqueue = await query(promPort, 'workqueue_adds_total{name="capsule"}');
    assert.equal(workqueue.length, 1);
  });
});
