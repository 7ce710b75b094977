/**
 * Standalone mode as a user runs it: `spacectl apply -f <examples> --wait` in a fresh data dir
 * starts the background server (gateway + operator), the capsules and the FUSE view come up,
 * `cat` reads the view, `spacectl get` shows status, `delete` runs the finalizer, and SIGTERM to
 * the server unmounts its views.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, sh, spacectl } from './helpers/cli.js';
import { tmpDir, rmrf } from './helpers/tmp.js';

describe('spacectl standalone mode (apply starts the server; real processes, real FUSE)', function () {
  this.timeout(120_000);
  let dir: string;
  let env: Record<string, string>;
  let mnt: string;

  before(function () {
    if (!fs.existsSync('/dev/fuse')) this.skip();
    dir = tmpDir('space-standalone-');
    env = { SPACE_HOME: path.join(dir, 'home') };
    mnt = path.join(dir, 'views', 'hello');
    // the repository's examples, with the fuse view's mount point moved into the temp dir
    const ex = path.join(dir, 'examples');
    fs.mkdirSync(ex);
    const src = path.join(REPO, 'deployment', 'examples');
    for (const f of fs.readdirSync(src).filter((x) => x.endsWith('.yaml'))) {
      fs.writeFileSync(path.join(ex, f), fs.readFileSync(path.join(src, f), 'utf8').replaceAll('/tmp/space-views/hello', mnt));
    }
  });

  after(async () => {
    if (!dir) return;
    const pidFile = path.join(env.SPACE_HOME!, 'objects', 'operator.pid');
    if (fs.existsSync(pidFile)) {
      try {
        process.kill(Number(fs.readFileSync(pidFile, 'utf8')), 'SIGKILL');
      } catch {
        /* already gone */
      }
      await sh('umount', ['-l', mnt]);
    }
    rmrf(dir);
  });

  it('apply --wait brings everything up; the view is readable with cat; get shows status', async () => {
    const r = await spacectl(['apply', '-f', path.join(dir, 'examples'), '--wait', '--timeout', '60'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /capsule\.space\.io\/hello created/);
    assert.match(r.stdout, /capsule\.space\.io\/hello ready/);
    assert.match(r.stdout, /capsuleview\.space\.io\/hello-fuse ready/);
    assert.match(r.stderr, /skipping .*policy\.yaml: not a Kubernetes manifest/);
    assert.match(r.stderr, /started the standalone server \(pid \d+/);
    assert.match(r.stdout, /capsuleview\.space\.io\/scratch-nvme ready/);
    assert.match(r.stdout, /capsuleview\.space\.io\/hello-nfs ready/);
    const cat = await sh('cat', [path.join(mnt, 'content')]);
    assert.equal(cat.code, 0, `cat: ${cat.stderr}; mounts: ${fs.readFileSync('/proc/mounts', 'utf8').split('\n').filter((l) => l.includes('fuse.space')).join('; ')}`);
    assert.equal(cat.stdout, 'Hello from Space: one capsule, many views.\n');

    const again = await spacectl(['apply', '-f', path.join(dir, 'examples')], env);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /capsule\.space\.io\/hello unchanged/);
    assert.doesNotMatch(again.stderr, /started the standalone server/);

    const table = await spacectl(['get', 'capsules'], env);
    assert.match(table.stdout, /^NAME +PHASE/m);
    assert.match(table.stdout, /^hello +Ready +1 +43 /m);
    const yaml = await spacectl(['get', 'cv', 'hello-fuse', '-o', 'json'], env);
    const view = JSON.parse(yaml.stdout);
    assert.equal(view.status.endpoint.mountPath, mnt);
    // the data commands see the operator's capsules through the server's socket
    const ls = await spacectl(['ls'], env);
    assert.match(ls.stdout, /default\.hello /);
  });

  it('admission rejects an invalid manifest with the schema message; nothing is written', async () => {
    const r = await spacectl(['apply', '-f', path.join(REPO, 'deployment', 'examples', 'invalid', 'view-bad-protocol.yaml')], env);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /spec\.protocol: Unsupported value/);
  });

  it('delete runs the finalizer (data removed); SIGTERM to the server unmounts its views', async () => {
    const r = await spacectl(['delete', 'capsule', 'hello-v1', '--wait'], env);
    assert.equal(r.code, 0, r.stderr);
    const ls = await spacectl(['ls'], env);
    assert.doesNotMatch(ls.stdout, /default\.hello-v1 /);
    const pid = Number(fs.readFileSync(path.join(env.SPACE_HOME!, 'objects', 'operator.pid'), 'utf8'));
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && fs.existsSync(path.join(env.SPACE_HOME!, 'objects', 'operator.pid'))) await new Promise((res) => setTimeout(res, 100));
    assert.ok(!fs.readFileSync('/proc/mounts', 'utf8').includes(mnt), 'view unmounted');
  });
});
