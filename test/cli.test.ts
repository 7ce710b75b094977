import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { prand, rmrf, sha256, tmpDir } from './helpers/tmp.js';
import { spawn } from 'node:child_process';
import { SPACECTL, sh, spacectl, startServe } from './helpers/cli.js';

const ID = '550e8400-e29b-41d4-a716-446655440000';

describe('spacectl', function () {
  this.timeout(120_000);
  let home: string;
  let env: Record<string, string>;
  beforeEach(() => {
    home = tmpDir('space-cli-');
    env = { SPACE_HOME: path.join(home, 'data'), SPACE_LOG_LEVEL: 'warn' };
  });
  afterEach(() => rmrf(home));

  it('put, cat, get, ls, stat, snapshot, clone, rm, gc, fsck on a local data dir', async () => {
    const src = path.join(home, 'hello.txt');
    fs.writeFileSync(src, 'hello space\n');
    let r = await spacectl(['put', src, '--id', ID, '--policy-file', 'deployment/examples/policy.yaml'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`created capsule ${ID}`));
    r = await spacectl(['cat', '--id', ID], env);
    assert.equal(r.stdout, 'hello space\n');
    r = await spacectl(['snapshot', '--name', ID], env);
    assert.match(r.stdout, /version 1/);
    fs.writeFileSync(src, 'changed\n');
    assert.equal((await spacectl(['put', src, '--id', ID], env)).code, 0);
    assert.equal((await spacectl(['cat', '--id', ID, '--version', '1'], env)).stdout, 'hello space\n');
    const out = path.join(home, 'out.txt');
    r = await spacectl(['get', '--id', ID, '-o', out], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(fs.readFileSync(out, 'utf8'), 'changed\n');
    r = await spacectl(['clone', '--id', ID, '--to', 'copy', '--version', '1'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await spacectl(['cat', '--id', 'copy'], env)).stdout, 'hello space\n');
    r = await spacectl(['ls'], env);
    assert.match(r.stdout, new RegExp(`${ID}.*zstd\\s+yes`));
    assert.match(r.stdout, /copy/);
    r = await spacectl(['ls', '--id', ID], env);
    assert.match(r.stdout, /-rw-r--r--\s+8 .* content/);
    r = await spacectl(['stat', '--id', ID, '--json'], env);
    const st = JSON.parse(r.stdout) as { stat: { logicalSize: number; versions: number[] }; policy: { compression: string } };
    assert.equal(st.stat.logicalSize, 8);
    assert.deepEqual(st.stat.versions, [1]);
    assert.equal(st.policy.compression, 'zstd');
    r = await spacectl(['rm', '--id', 'copy'], env);
    assert.match(r.stdout, /deleted capsule copy/);
    r = await spacectl(['fsck'], env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /clean/);
  });

  it('puts directory trees and stdin, and reads them back', async () => {
    const tree = path.join(home, 'tree');
    fs.mkdirSync(path.join(tree, 'a', 'b'), { recursive: true });
    fs.writeFileSync(path.join(tree, 'a', 'b', 'deep.txt'), 'deep');
    fs.writeFileSync(path.join(tree, 'top.txt'), 'top');
    assert.equal((await spacectl(['put', tree, '--name', 'tree'], env)).code, 0);
    assert.equal((await spacectl(['cat', '--name', 'tree', '--path', 'a/b/deep.txt'], env)).stdout, 'deep');
    const data = prand(3 << 20, 2);
    assert.equal((await spacectl(['put', '-', '--name', 'piped'], env, data)).code, 0);
    const r = await spacectl(['cat', '--name', 'piped'], env);
    assert.equal(sha256(Buffer.from(r.stdout, 'latin1')), sha256(data));
  });

  it('gives clear messages for user errors', async () => {
    let r = await spacectl(['cat', '--id', 'nope'], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /spacectl: capsule nope not found/);
    const bad = path.join(home, 'bad.yaml');
    fs.writeFileSync(bad, 'compression: lz4\n');
    fs.writeFileSync(path.join(home, 'f'), 'x');
    r = await spacectl(['put', path.join(home, 'f'), '--id', 'x', '--policy-file', bad], env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /bad\.yaml:1:14: compression: must be one of none, gzip, brotli, zstd/);
    r = await spacectl(['put', path.join(home, 'f'), '--id', 'x', '--policy-file', path.join(home, 'missing.yaml')], env);
    assert.match(r.stderr, /cannot read policy file .*missing\.yaml/);
    r = await spacectl(['put', path.join(home, 'missing')], env);
    assert.match(r.stderr, /--id \(or --name\) is required/);
    r = await spacectl(['ls', '--colour', 'x'], env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown option --colour/);
    r = await spacectl(['frobnicate'], env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown command "frobnicate"/);
  });

  it('routes to a running gateway: through the data dir socket and with --gateway', async () => {
    const gw = await startServe(['--listen', '127.0.0.1:0', '--http', ''], env);
    try {
      fs.writeFileSync(path.join(home, 'f.txt'), 'via gateway');
      // same data dir: the command finds the owner's socket in the lock and uses it
      let r = await spacectl(['put', path.join(home, 'f.txt'), '--name', 'routed'], env);
      assert.equal(r.code, 0, r.stderr);
      r = await spacectl(['cat', '--name', 'routed', '--gateway', `127.0.0.1:${gw.port}`], { SPACE_HOME: path.join(home, 'elsewhere') });
      assert.equal(r.stdout, 'via gateway');
      r = await spacectl(['cat', '--name', 'missing', '--gateway', `127.0.0.1:${gw.port}`], env);
      assert.match(r.stderr, /capsule missing not found/);
    } finally {
      gw.child.kill('SIGTERM');
      await new Promise((res) => gw.child.once('exit', res));
    }
    // the gateway released the data dir on SIGTERM: local commands open it directly again
    assert.equal((await spacectl(['cat', '--name', 'routed'], env)).stdout, 'via gateway');
    assert.ok(!fs.existsSync(path.join(home, 'data', 'owner.json')));
  });

  describe('project mount (kernel FUSE)', function () {
    before(function () {
      if (!fs.existsSync('/dev/fuse')) {
        console.log('    (skipped: /dev/fuse is not available)');
        this.skip();
      }
    });

    it('mounts in the background, serves cat/cp, refuses a busy target, unmounts cleanly', async () => {
      const target = path.join(home, 'view');
      const data = prand(5 << 20, 4);
      fs.writeFileSync(path.join(home, 'big.bin'), data);
      assert.equal((await spacectl(['put', path.join(home, 'big.bin'), '--id', ID, '--policy-file', 'deployment/examples/policy.yaml'], env)).code, 0);
      let r = await spacectl(['project', 'mount', '--id', ID, '--target', target, '--rw'], env);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`mounted capsule ${ID} at ${target}`));
      try {
        assert.equal(sha256(Buffer.from((await sh('cat', [path.join(target, 'content')])).stdout, 'latin1')), sha256(data));
        fs.writeFileSync(path.join(home, 'new.txt'), 'written through FUSE\n');
        assert.equal((await sh('cp', [path.join(home, 'new.txt'), path.join(target, 'new.txt')])).code, 0);
        // while mounted, CLI commands go through the mount process
        r = await spacectl(['cat', '--id', ID, '--path', 'new.txt'], env);
        assert.equal(r.stdout, 'written through FUSE\n');
        r = await spacectl(['project', 'mount', '--id', ID, '--target', target], env);
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /busy|already mounted|in use/i);
        r = await spacectl(['project', 'mount', '--id', 'unknown-capsule', '--target', path.join(home, 'v2')], env);
        assert.match(r.stderr, /capsule unknown-capsule not found/);
      } finally {
        r = await spacectl(['project', 'umount', '--target', target], env);
      }
      assert.equal(r.code, 0, r.stderr);
      const mounts = fs.readFileSync('/proc/mounts', 'utf8');
      assert.ok(!mounts.includes(target), 'no mount left behind');
      // the background owner exits after its last unmount and releases the data dir
      for (let i = 0; i < 50 && fs.existsSync(path.join(home, 'data', 'owner.json')); i++) await new Promise((res) => setTimeout(res, 100));
      assert.ok(!fs.existsSync(path.join(home, 'data', 'owner.json')));
      assert.equal((await spacectl(['cat', '--id', ID, '--path', 'new.txt'], env)).stdout, 'written through FUSE\n');
    });

    it('a --foreground mount stays attached and exits when unmounted, as sshfs -f does', async () => {
      const target = path.join(home, 'view3');
      fs.writeFileSync(path.join(home, 'fg.txt'), 'foreground');
      await spacectl(['put', path.join(home, 'fg.txt'), '--name', 'fg'], env);
      const child = spawn(process.execPath, [SPACECTL, 'project', 'mount', '--name', 'fg', '--target', target, '--foreground'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      try {
        for (let i = 0; i < 100 && !stdout.includes('mounted capsule'); i++) await new Promise((res) => setTimeout(res, 100));
        assert.match(stdout, new RegExp(`mounted capsule \\S+ at ${target}`));
        assert.equal(fs.readFileSync(path.join(target, 'content'), 'utf8'), 'foreground');
        assert.equal(child.exitCode, null, 'attached while mounted');
        const r = await spacectl(['project', 'umount', '--target', target], env);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(await exited, 0, 'the foreground process ends with its mount');
        assert.ok(!fs.readFileSync('/proc/mounts', 'utf8').includes(target), 'no mount left behind');
        assert.ok(!fs.existsSync(path.join(home, 'data', 'owner.json')), 'data dir released');
      } finally {
        if (child.exitCode === null) child.kill('SIGTERM');
      }
    });

    it('SIGTERM to the mount process unmounts and keeps written data', async () => {
      const target = path.join(home, 'view2');
      fs.writeFileSync(path.join(home, 'a.txt'), 'a');
      await spacectl(['put', path.join(home, 'a.txt'), '--name', 'sig'], env);
      const r = await spacectl(['project', 'mount', '--name', 'sig', '--target', target, '--rw'], env);
      assert.equal(r.code, 0, r.stderr);
      fs.writeFileSync(path.join(home, 'b.txt'), 'before sigterm');
      await sh('cp', [path.join(home, 'b.txt'), path.join(target, 'b.txt')]);
      const owner = JSON.parse(fs.readFileSync(path.join(home, 'data', 'owner.json'), 'utf8')) as { pid: number };
      process.kill(owner.pid, 'SIGTERM');
      for (let i = 0; i < 100 && fs.existsSync(path.join(home, 'data', 'owner.json')); i++) await new Promise((res) => setTimeout(res, 100));
      assert.ok(!fs.readFileSync('/proc/mounts', 'utf8').includes(target), 'unmounted on SIGTERM');
      assert.equal((await spacectl(['cat', '--name', 'sig', '--path', 'b.txt'], env)).stdout, 'before sigterm');
    });
  });
});
