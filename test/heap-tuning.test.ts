import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { DEFAULT_HEAP_GROWING_PERCENT, heapGrowingPercent } from '../gateway/heap-tuning.js';

describe('gateway: V8 heap tuning of serving processes', () => {
  it('defaults to a fixed growing percentage; 0 leaves V8 its heuristics; other values are taken as given', () => {
    assert.equal(heapGrowingPercent({}), DEFAULT_HEAP_GROWING_PERCENT);
    assert.equal(heapGrowingPercent({ SPACE_HEAP_GROWING_PERCENT: '' }), DEFAULT_HEAP_GROWING_PERCENT);
    assert.equal(heapGrowingPercent({ SPACE_HEAP_GROWING_PERCENT: '0' }), null);
    assert.equal(heapGrowingPercent({ SPACE_HEAP_GROWING_PERCENT: ' 300 ' }), 300);
  });

  it('rejects what is not a percentage, naming the variable', () => {
    for (const bad of ['-1', '1.5', 'lots', '100000']) {
      assert.throws(() => heapGrowingPercent({ SPACE_HEAP_GROWING_PERCENT: bad }), /SPACE_HEAP_GROWING_PERCENT must be an integer from 0 to 10000/);
    }
  });

  it('applies to the running V8 (a flag V8 accepts at run time)', () => {
    // In a child, so this test process keeps V8's defaults. V8 prints "unrecognized flag" to
    // stderr for a flag it does not know.
    const mod = fileURLToPath(new URL('../gateway/heap-tuning.js', import.meta.url));
    const r = spawnSync(process.execPath, ['--input-type=module', '-e',
      `import { tuneHeapForServing } from ${JSON.stringify(mod)}; const p = tuneHeapForServing(); if (p !== 1000) process.exit(2);`], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr.trim(), '', 'V8 accepted the flag without complaint');
  });
});
