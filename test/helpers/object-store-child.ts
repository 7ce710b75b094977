/**
 * A second process on the same object store, for the cross-process and kill -9 tests.
 *   write DIR N PREFIX  create N ConfigMaps PREFIX-0..N-1, print "done", exit
 *   loop DIR            mutate forever; print one JSON line per committed write (after the commit)
 */
import { CONFIGMAPS, CAPSULES, isNotFound } from '../../operator/runtime/object-api.js';
import type { KubeObject } from '../../operator/runtime/object-api.js';
import { ObjectStore } from '../../operator/standalone/object-store.js';

const [mode, dir, ...rest] = process.argv.slice(2) as [string, string, ...string[]];
const store = ObjectStore.open(dir);
const say = (o: unknown) => process.stdout.write(JSON.stringify(o) + '\n');

if (mode === 'write') {
  const n = Number(rest[0]);
  const prefix = rest[1] ?? 'cm';
  for (let i = 0; i < n; i++) {
    await store.create(CONFIGMAPS, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: `${prefix}-${i}` }, data: { i: String(i) } });
  }
  await store.close();
  process.stdout.write('done\n');
} else if (mode === 'loop') {
  // Ten long-lived capsules whose spec.counter only grows, plus short-lived ConfigMaps created and deleted.
  const names = Array.from({ length: 10 }, (_, i) => `keep-${i}`);
  for (const name of names) {
    try {
      await store.get(CAPSULES, name);
    } catch (e) {
      if (!isNotFound(e)) throw e;
      await store.create(CAPSULES, { apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name }, spec: { counter: 0 } });
    }
  }
  say({ ready: true });
  for (let n = 0; ; n++) {
    const name = names[n % names.length]!;
    const cur = await store.get(CAPSULES, name);
    const counter = (cur.spec as { counter: number }).counter + 1;
    const next: KubeObject = await store.replace(CAPSULES, { ...cur, spec: { counter, pad: 'x'.repeat(n % 2000) } });
    say({ op: 'replace', name, counter, rv: next.metadata.resourceVersion });
    const st = await store.replaceStatus(CAPSULES, { ...next, status: { observed: counter } });
    say({ op: 'status', name, counter, rv: st.metadata.resourceVersion });
    const tmp = `tmp-${process.pid}-${n}`;
    await store.create(CONFIGMAPS, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: tmp }, data: { n: String(n) } });
    say({ op: 'create', name: tmp });
    await store.delete(CONFIGMAPS, tmp);
    say({ op: 'delete', name: tmp });
  }
}
