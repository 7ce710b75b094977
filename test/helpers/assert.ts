import assert from 'node:assert/strict';
import { SpaceError } from '../../capsule/errors.js';

/** Await `p` and require a SpaceError with this code (and a message matching `re`). */
export async function rejectsWith(p: Promise<unknown>, code: string, re?: RegExp): Promise<SpaceError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof SpaceError, `expected SpaceError, got ${e}`);
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    return e;
  }
  assert.fail(`expected ${code}`);
}
