import assert from 'node:assert/strict';
import { memoryLimitBytes, serverCacheBytes, MIN_SERVER_CACHE, MAX_SERVER_CACHE } from '../capsule/cache-size.js';
import { SpaceError } from '../capsule/errors.js';
import { spacectl } from './helpers/cli.js';
import { rmrf, tmpDir } from './helpers/tmp.js';

const MiB = 1 << 20;
const GiB = 1 << 30;

/** A fake /sys/fs/cgroup: the files given exist, every other read fails like a missing file. */
function cgroup(files: Record<string, string>): (f: string) => string {
  return (f) => {
    const v = files[f];
    if (v === undefined) throw Object.assign(new Error(`ENOENT: ${f}`), { code: 'ENOENT' });
    return v;
  };
}

describe('segment cache size of a serving process', function () {
  it('takes the memory limit from cgroup v2, then v1, else RAM', () => {
    const total = 24 * GiB;
    assert.equal(memoryLimitBytes(cgroup({ '/sys/fs/cgroup/memory.max': '2147483648\n' }), total), 2 * GiB);
    assert.equal(memoryLimitBytes(cgroup({ '/sys/fs/cgroup/memory.max': 'max\n' }), total), total);
    assert.equal(memoryLimitBytes(cgroup({ '/sys/fs/cgroup/memory/memory.limit_in_bytes': '1073741824' }), total), GiB);
    assert.equal(memoryLimitBytes(cgroup({ '/sys/fs/cgroup/memory/memory.limit_in_bytes': '9223372036854771712' }), total), total, 'v1 says "no limit" with a huge number');
    assert.equal(memoryLimitBytes(cgroup({ '/sys/fs/cgroup/memory.max': String(64 * GiB) }), total), total, 'never more than RAM');
    assert.equal(memoryLimitBytes(cgroup({}), total), total);
    assert.ok(memoryLimitBytes() > 0, 'this machine answers something');
  });

  it('is an eighth of that limit, between 64 MiB and 4 GiB', () => {
    assert.equal(serverCacheBytes({}, () => 24 * GiB), 3 * GiB);
    assert.equal(serverCacheBytes({}, () => 2 * GiB), 256 * MiB);
    assert.equal(serverCacheBytes({}, () => 256 * MiB), MIN_SERVER_CACHE, 'a small pod still gets the library default');
    assert.equal(serverCacheBytes({}, () => 512 * GiB), MAX_SERVER_CACHE);
    assert.equal(serverCacheBytes({}, () => 3 * GiB + 5) % MiB, 0, 'whole MiB');
  });

  it('SPACE_CACHE_BYTES overrides it; a malformed value is a clear error', () => {
    assert.equal(serverCacheBytes({ SPACE_CACHE_BYTES: '512MiB' }, () => 24 * GiB), 512 * MiB);
    assert.equal(serverCacheBytes({ SPACE_CACHE_BYTES: '1048576' }, () => 24 * GiB), MiB);
    assert.equal(serverCacheBytes({ SPACE_CACHE_BYTES: '' }, () => 24 * GiB), 3 * GiB, 'empty means unset');
    assert.throws(() => serverCacheBytes({ SPACE_CACHE_BYTES: 'lots' }), (e: unknown) => e instanceof SpaceError && e.code === 'INVALID_ARGUMENT' && /SPACE_CACHE_BYTES must be a size/.test(e.message));
  });

  it('spacectl serve refuses a malformed SPACE_CACHE_BYTES before it starts', async function () {
    this.timeout(60_000);
    const home = tmpDir();
    try {
      const r = await spacectl(['serve', '--listen', '127.0.0.1:0'], { SPACE_HOME: home, SPACE_CACHE_BYTES: 'two gigs' });
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /SPACE_CACHE_BYTES must be a size such as 512MiB or 2GiB \(got "two gigs"\)/);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'a message, not a stack trace');
    } finally {
      rmrf(home);
    }
  });
});
