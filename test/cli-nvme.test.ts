import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, SPACECTL, spacectl, startServe } from './helpers/cli.js';
import { check, connectController, readSqe, writeSqe } from '../bench/nvme/initiator.js';
import { prand, rmrf, tmpDir } from './helpers/tmp.js';

/** Start `spacectl project ...` in the foreground; resolve with the NQN (stdout) and port (stderr). */
function projectNvme(args: string[], env: Record<string, string>): Promise<{ child: ChildProcess; nqn: string; port: number; exited: Promise<number | string | null> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SPACECTL, 'project', ...args], { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | string | null>((r) => child.on('exit', (code, sig) => r(code ?? sig)));
    let out = '';
    let err = '';
    const tryResolve = () => {
      const nqn = /^(nqn\.\S+)$/m.exec(out)?.[1];
      const port = /over NVMe\/TCP on [^ ]*:(\d+),/.exec(err)?.[1];
      if (nqn && port) resolve({ child, nqn, port: Number(port), exited });
    };
    child.stdout!.on('data', (d: Buffer) => { out += d; tryResolve(); });
    child.stderr!.on('data', (d: Buffer) => { err += d; tryResolve(); });
    child.on('exit', (code) => reject(new Error(`spacectl project exited ${code}: ${err}`)));
  });
}

describe('spacectl project nvme (foreground NVMe/TCP namespace)', function () {
  this.timeout(60_000);
  let dir: string;
  let env: Record<string, string>;
  const image = prand(4 << 20, 11);

  before(async () => {
    dir = tmpDir();
    env = { SPACE_HOME: path.join(dir, 'home'), SPACE_LOG_LEVEL: 'error' };
    fs.writeFileSync(path.join(dir, 'disk.img'), image);
    const r = await spacectl(['put', path.join(dir, 'disk.img'), '--name', 'disk'], env);
    assert.equal(r.code, 0, r.stderr);
  });
  after(() => rmrf(dir));

  it('serves the capsule until Ctrl-C, prints the NQN; writes land in the capsule', async () => {
    const p = await projectNvme(['nvme', '--name', 'disk', '--listen', '127.0.0.1:0'], env);
    assert.match(p.nqn, /^nqn\.2024-11\.io\.space:capsule:[0-9a-f-]{36}$/);
    const s = await connectController({ host: '127.0.0.1', port: p.port, subnqn: p.nqn });
    try {
      assert.equal(s.blocks * s.blockSize, image.length);
      const r = check(await s.io[0]!.submit(readSqe(0, 256, s.blockSize)), 'read');
      assert.ok(r.data!.equals(image.subarray(0, 256 * s.blockSize)));
      check(await s.io[0]!.submit(writeSqe(8, 1), Buffer.alloc(512, 0xab)), 'write');
    } finally {
      s.close();
    }
    p.child.kill('SIGINT');
    assert.equal(await p.exited, 0);
    // The write is durable and visible to the other commands once the projection stopped.
    const cat = await spacectl(['cat', '--name', 'disk'], env);
    assert.equal(cat.code, 0, cat.stderr);
    const bytes = Buffer.from(cat.stdout, 'latin1');
    assert.ok(bytes.subarray(8 * 512, 9 * 512).equals(Buffer.alloc(512, 0xab)));
    assert.ok(bytes.subarray(0, 8 * 512).equals(image.subarray(0, 8 * 512)));
  });

  it('--view nvme --read-only through a running gateway: reads work, writes are refused', async () => {
    const gw = await startServe(['--listen', '127.0.0.1:0', '--http', '', '--no-operator'], env);
    try {
      const p = await projectNvme(['--view', 'nvme', '--name', 'disk', '--read-only', '--listen', '127.0.0.1:0'], env);
      assert.match(p.nqn, /:ro$/);
      const s = await connectController({ host: '127.0.0.1', port: p.port, subnqn: p.nqn });
      try {
        const r = check(await s.io[0]!.submit(readSqe(16, 8, s.blockSize)), 'read');
        assert.ok(r.data!.equals(image.subarray(16 * 512, 24 * 512)));
        const w = await s.io[0]!.submit(writeSqe(0, 1), Buffer.alloc(512));
        assert.equal(w.cqe.sc, 0x20, 'namespace is write protected');
      } finally {
        s.close();
      }
      // Still serving until told to stop (it once exited by itself when its gateway connection went idle).
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(p.child.exitCode, null, 'project nvme exited before it was stopped');
      p.child.kill('SIGTERM');
      assert.equal(await p.exited, 0);
    } finally {
      gw.child.kill('SIGTERM');
      await new Promise((r) => gw.child.on('exit', r));
    }
  });

  it('rejects a bad block size and an unknown capsule with clear errors', async () => {
    const bad = await spacectl(['project', 'nvme', '--name', 'disk', '--listen', '127.0.0.1:0', '--block-size', '1000'], env);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /block size 1000 must be 512 or 4096/);
    const missing = await spacectl(['project', 'nvme', '--name', 'nope', '--listen', '127.0.0.1:0'], env);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /nope/);
  });
});
