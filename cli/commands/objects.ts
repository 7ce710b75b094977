/**
 * apply, get, delete: kubectl's verbs on standalone mode's embedded object store
 * (`<data dir>/objects`), so manifests written for a cluster work on one machine. The store is
 * shared with a running `spacectl serve` (its operator sees these writes through its watches).
 */
import path from 'node:path';
import YAML from 'yaml';
import type { Command } from '../command.js';
import { out, table } from '../command.js';
import type { Flags } from '../args.js';
import { dataDirOf } from '../target.js';
import { SpaceError, invalid } from '../../capsule/errors.js';
import { ApiError, apiVersionOf, isNotFound } from '../../operator/runtime/object-api.js';
import type { KubeObject, ResourceType } from '../../operator/runtime/object-api.js';
import { ObjectStore, type ObjectStoreOptions } from '../../operator/standalone/object-store.js';
import { KINDS, age, displayName, kindOf, knownKindsHelp, resolveKinds, type KindInfo } from '../../operator/standalone/kinds.js';
import { ManifestError, applyObject, readManifests, type Manifest } from '../../operator/standalone/manifests.js';
import { get as capsuleGet } from './data.js';
import { spaceAdmission } from '../../operator/standalone/run.js';
import { ensureStandaloneServer } from '../background-serve.js';
import { SPACE_GROUP } from '../../operator/runtime/object-api.js';

/** Where the CLI's object store lives inside a data dir. */
export const objectsDir = (dataDir: string): string => path.join(dataDir, 'objects');

const err = (s: string): void => void process.stderr.write(s.endsWith('\n') ? s : s + '\n');

/** API errors as the CLI reports them: one line, the server's message, a fitting exit code. */
export function cliError(e: unknown, context?: string): unknown {
  const prefix = context ? `${context}: ` : '';
  if (e instanceof ApiError) {
    const code = e.code === 404 ? 'NOT_FOUND' : e.code === 409 && e.reason === 'AlreadyExists' ? 'ALREADY_EXISTS' : e.code === 409 ? 'FAILED_PRECONDITION' : e.code === 400 || e.code === 422 ? 'INVALID_ARGUMENT' : e.code === 503 ? 'UNAVAILABLE' : 'INTERNAL';
    return new SpaceError(code, `${prefix}${e.message}`, { cause: e });
  }
  if (e instanceof ManifestError) return invalid(e.message);
  if (e instanceof SpaceError && context) return new SpaceError(e.code, `${prefix}${e.message}`, { cause: e });
  return e;
}

function namespaceFlag(f: Flags): string | undefined {
  const short = f.str('n');
  const long = f.str('namespace');
  if (short && long && short !== long) throw invalid('give -n or --namespace, not both');
  return short ?? long;
}

/** -f values: comma-separated lists (as kubectl's -f a.yaml,b.yaml), plus any extra positionals. */
function fileArgs(f: Flags, extra: string[]): string[] {
  const v = f.str('filename');
  return [...(v ? v.split(',').filter(Boolean) : []), ...extra];
}

interface Options {
  /** Store options (admission, ...) for the CLI's store; read when a command runs. */
  storeOptions?: () => ObjectStoreOptions;
}

async function withStore<T>(f: Flags, opts: Options, fn: (store: ObjectStore) => Promise<T>): Promise<T> {
  const dir = objectsDir(dataDirOf(f));
  // Commands read all their flags before opening the store: anything left over is a typo.
  f.rejectUnknown();
  let store: ObjectStore;
  try {
    store = ObjectStore.open(dir, opts.storeOptions?.() ?? {});
  } catch (e) {
    throw cliError(e);
  }
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** Fit a manifest to the kind's scope: default/forced namespace for namespaced kinds, none for cluster-scoped. */
function placeManifest(m: Manifest, kind: KindInfo, ns: string | undefined): KubeObject {
  const obj = JSON.parse(JSON.stringify(m.object)) as KubeObject;
  const meta = obj.metadata;
  if (!kind.type.namespaced) {
    delete meta.namespace;
    return obj;
  }
  if (ns && meta.namespace && meta.namespace !== ns) {
    throw new ManifestError(
      m.source,
      m.line,
      `the namespace from the provided object "${meta.namespace}" does not match the namespace "${ns}"; pass --namespace=${meta.namespace} or remove it from the manifest`,
    );
  }
  meta.namespace = meta.namespace || ns || 'default';
  return obj;
}

function kindOfManifest(m: Manifest): KindInfo {
  const k = kindOf(m.object.apiVersion, m.object.kind);
  if (!k) throw new ManifestError(m.source, m.line, `unknown kind "${m.object.kind}" in version "${m.object.apiVersion}" (known: ${KINDS.map((x) => `${apiVersionOf(x.type)} ${x.type.kind}`).join(', ')})`);
  return k;
}

const ref = (k: KindInfo, name: string): string => `${displayName(k)}/${name}`;
const quoted = (k: KindInfo, name: string): string => `${displayName(k)} "${name}"`;

export function objectCommands(opts: Options = {}): { apply: Command; get: Command; del: Command } {
  const apply: Command = {
    name: 'apply',
    summary: 'create or update objects (Capsule, CapsuleView, FederationZone, ConfigMap, ...) from YAML/JSON manifests',
    usage: [
      'spacectl apply -f FILE|DIR|- [-f a.yaml,b.yaml] [FILE...] [-n NAMESPACE] [--wait [--timeout SECONDS]] [--no-start]',
      'Starts the standalone server (gateway + operator) in the background when none runs on the data dir',
      '(--no-start: only store the objects). --wait: until every applied Capsule, CapsuleView and',
      'FederationZone is Ready (or Failed), printing each one\'s phase.',
    ].join('\n'),
    booleans: ['wait', 'no-start'],
    async run(f) {
      const wait = f.bool('wait');
      const noStart = f.bool('no-start');
      const timeoutS = f.int('timeout') ?? 60;
      const dataDir = dataDirOf(f);
      const files = fileArgs(f, f.positionals);
      if (!files.length) throw invalid('apply needs -f FILE, DIR or - (stdin)');
      const ns = namespaceFlag(f);
      let manifests: Manifest[];
      try {
        manifests = readManifests(files, { onSkip: (file, why) => err(`spacectl: skipping ${file}: ${why}`) });
      } catch (e) {
        throw cliError(e);
      }
      // Check every document before writing any: a typo in the last file must not leave half an apply.
      const planned = manifests.map((m) => {
        try {
          const kind = kindOfManifest(m);
          return { m, kind, obj: placeManifest(m, kind, ns) };
        } catch (e) {
          throw cliError(e);
        }
      });
      return withStore(f, opts, async (store) => {
        let failed = 0;
        const applied: { kind: KindInfo; obj: KubeObject }[] = [];
        for (const { m, kind, obj } of planned) {
          try {
            const r = await applyObject(store, kind.type, obj);
            out(`${ref(kind, r.object.metadata.name)} ${r.outcome}`);
            applied.push({ kind, obj: r.object });
          } catch (e) {
            failed++;
            err(`spacectl: ${m.source}:${m.line}: ${(cliError(e) as Error).message}`);
          }
        }
        const space = applied.filter((a) => a.kind.type.group === SPACE_GROUP);
        if (space.length && !noStart) {
          const state = await ensureStandaloneServer(dataDir);
          if (state.running && state.started) err(`spacectl: started the standalone server (pid ${state.pid}, log ${state.log}) to reconcile them`);
          if (!state.running) err(`spacectl: note: ${state.why}`);
          if (wait && state.running && !(await waitReady(store, space, timeoutS))) failed++;
        }
        return failed ? 1 : 0;
      });
    },
  };

  const get: Command = {
    name: 'get',
    summary: 'list or show objects (`get space` for all space.io kinds); with --id, copy a file out of a capsule',
    usage: 'spacectl get KIND[,KIND] [NAME...] [-n NS | -A] [-l key=value] [-o wide|yaml|json|name]  |  spacectl get --id ID [--path content] [-o FILE]',
    booleans: ['A', 'all-namespaces'],
    async run(f) {
      // `get --id` is the capsule-data command of the same name: keep it working.
      if (f.str('id') !== undefined || f.str('name') !== undefined) return capsuleGet.run(f);
      const [what, ...names] = f.positionals;
      if (!what) throw invalid(`get needs a KIND (${knownKindsHelp()}) or --id ID to copy a file out of a capsule`);
      const kinds = [...new Set(what.split(',').flatMap((w) => {
        const k = resolveKinds(w);
        if (!k.length) throw invalid(`unknown kind ${JSON.stringify(w)}; known: ${knownKindsHelp()}`);
        return k;
      }))];
      const output = f.str('output') ?? '';
      if (!['', 'wide', 'yaml', 'json', 'name'].includes(output)) throw invalid(`-o must be wide, yaml, json or name (got ${JSON.stringify(output)})`);
      const all = f.bool('A') || f.bool('all-namespaces');
      const ns = namespaceFlag(f);
      if (all && ns) throw invalid('give -n or -A, not both');
      if (all && names.length) throw invalid('a name cannot be combined with -A');
      const selector = parseSelector(f.str('l') ?? f.str('selector'));
      return withStore(f, opts, async (store) => {
        const found: { kind: KindInfo; items: KubeObject[] }[] = [];
        let failed = 0;
        for (const kind of kinds) {
          const items: KubeObject[] = [];
          if (names.length) {
            for (const name of names) {
              try {
                items.push(await store.get(kind.type, name, ns));
              } catch (e) {
                if (!isNotFound(e) || kinds.length === 1) {
                  failed++;
                  err(`spacectl: ${(cliError(e) as Error).message}`);
                }
              }
            }
          } else {
            const l = await store.list(kind.type, all ? undefined : ns ?? 'default');
            items.push(...l.items.filter((o) => selector(o.metadata.labels ?? {})));
          }
          found.push({ kind, items });
        }
        const objects = found.flatMap((x) => x.items);
        if (output === 'yaml' || output === 'json') {
          const single = names.length === 1 && kinds.length === 1 && objects.length === 1;
          const doc = single ? objects[0] : { apiVersion: 'v1', kind: 'List', items: objects, metadata: { resourceVersion: '' } };
          out(output === 'json' ? JSON.stringify(doc, null, 2) : YAML.stringify(doc));
        } else if (output === 'name') {
          for (const { kind, items } of found) for (const o of items) out(ref(kind, o.metadata.name));
        } else if (!objects.length) {
          const namespaced = kinds.some((k) => k.type.namespaced);
          if (!failed) err(all || !namespaced ? 'No resources found' : `No resources found in ${ns ?? 'default'} namespace.`);
        } else {
          const multi = found.filter((x) => x.items.length).length > 1 || kinds.length > 1;
          const tables = found.filter((x) => x.items.length).map(({ kind, items }) => printTable(kind, items, { wide: output === 'wide', namespaces: all && kind.type.namespaced, prefix: multi }));
          out(tables.join('\n\n'));
        }
        return failed ? 1 : 0;
      });
    },
  };

  const del: Command = {
    name: 'delete',
    summary: 'delete objects by kind and name or by manifest (finalizers run first; --wait waits for them)',
    usage: 'spacectl delete KIND NAME... [-n NS] | -f FILE|DIR [--ignore-not-found] [--wait [--timeout SECONDS]]',
    booleans: ['ignore-not-found', 'wait'],
    async run(f) {
      const files = fileArgs(f, []);
      const ns = namespaceFlag(f);
      const ignore = f.bool('ignore-not-found');
      const wait = f.bool('wait');
      const timeout = f.int('timeout') ?? 60;
      const targets: { kind: KindInfo; name: string; ns: string | undefined; where?: string }[] = [];
      if (files.length) {
        if (f.positionals.length) throw invalid('give KIND NAME or -f FILE, not both');
        try {
          for (const m of readManifests(files, { onSkip: (file, why) => err(`spacectl: skipping ${file}: ${why}`) })) {
            const kind = kindOfManifest(m);
            const obj = placeManifest(m, kind, ns);
            targets.push({ kind, name: obj.metadata.name, ns: obj.metadata.namespace, where: `${m.source}:${m.line}` });
          }
        } catch (e) {
          throw cliError(e);
        }
      } else {
        const [what, ...names] = f.positionals;
        if (!what || !names.length) throw invalid('delete needs KIND NAME... or -f FILE');
        const kinds = resolveKinds(what);
        if (kinds.length !== 1) throw invalid(kinds.length ? `${JSON.stringify(what)} names several kinds; name one` : `unknown kind ${JSON.stringify(what)}; known: ${knownKindsHelp()}`);
        for (const name of names) targets.push({ kind: kinds[0]!, name, ns });
      }
      return withStore(f, opts, async (store) => {
        let failed = 0;
        for (const t of targets) {
          try {
            await store.delete(t.kind.type, t.name, t.ns);
          } catch (e) {
            if (ignore && isNotFound(e)) continue;
            failed++;
            err(`spacectl: ${(cliError(e, t.where) as Error).message}`);
            continue;
          }
          let left: KubeObject | undefined;
          try {
            left = await store.get(t.kind.type, t.name, t.ns);
          } catch (e) {
            if (!isNotFound(e)) throw cliError(e);
          }
          if (left && wait) {
            try {
              await waitGone(store, t.kind.type, t.name, t.ns, timeout);
            } catch (e) {
              failed++;
              err(`spacectl: ${(cliError(e) as Error).message}`);
              continue;
            }
            left = undefined;
          }
          if (left) out(`${quoted(t.kind, t.name)} marked for deletion; waiting for finalizers: ${(left.metadata.finalizers ?? []).join(', ')}`);
          else out(`${quoted(t.kind, t.name)} deleted`);
        }
        return failed ? 1 : 0;
      });
    },
  };

  return { apply, get, del };
}

/** Resolve once the object is gone (its finalizers removed by whoever owns them). */
/** Poll until every object is Ready (or Failed); print each as it settles. False on timeout or failure. */
async function waitReady(store: ObjectStore, items: { kind: KindInfo; obj: KubeObject }[], seconds: number): Promise<boolean> {
  const deadline = Date.now() + seconds * 1000;
  const left = new Map(items.map((i) => [ref(i.kind, i.obj.metadata.name), i]));
  let ok = true;
  while (left.size && Date.now() < deadline) {
    for (const [name, { kind, obj }] of left) {
      const cur = await store.get(kind.type, obj.metadata.name, obj.metadata.namespace).catch(() => undefined);
      const st = (cur?.status ?? {}) as { phase?: string; conditions?: { type: string; status: string; reason?: string; message?: string }[] };
      const ready = st.conditions?.find((c) => c.type === 'Ready');
      if (ready?.status === 'True') {
        out(`${name} ready`);
        left.delete(name);
      } else if (ready?.reason === 'ProtocolUnavailable' || ready?.reason === 'ListenFailed') {
        // Settled for now: the protocol is not served, or its port is taken by something else
        // (retried in the background); waiting here changes nothing.
        err(`spacectl: ${name} not served: ${ready.message}`);
        left.delete(name);
      } else if (kind.type.kind === 'FederationZone' && ready) {
        // A zone's readiness is its peer's; once probed, report it rather than wait on it.
        out(`${name} probed: ${ready.message}`);
        left.delete(name);
      } else if (st.phase === 'Failed') {
        err(`spacectl: ${name} failed: ${ready?.message ?? 'see its conditions'}`);
        left.delete(name);
        ok = false;
      }
    }
    if (left.size) await new Promise((r) => setTimeout(r, 100));
  }
  for (const [name, { kind, obj }] of left) {
    const cur = await store.get(kind.type, obj.metadata.name, obj.metadata.namespace).catch(() => undefined);
    const ready = ((cur?.status ?? {}) as { conditions?: { type: string; reason?: string; message?: string }[] }).conditions?.find((c) => c.type === 'Ready');
    err(`spacectl: ${name} not ready after ${seconds} s${ready ? `: ${ready.reason}: ${ready.message}` : ''}`);
    ok = false;
  }
  return ok;
}

async function waitGone(store: ObjectStore, type: ResourceType, name: string, ns: string | undefined, seconds: number): Promise<void> {
  const l = await store.list(type, ns);
  if (!l.items.some((o) => o.metadata.name === name)) return;
  let finish!: () => void;
  const gone = new Promise<void>((resolve) => (finish = resolve));
  const w = await store.watch(type, { namespace: ns, resourceVersion: l.resourceVersion }, (ev, o) => {
    if (ev === 'DELETED' && o.metadata.name === name) finish();
  });
  // The store's poll timer is unref'd: this timer is what keeps the process waiting.
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_r, reject) => {
    timer = setTimeout(() => reject(new SpaceError('UNAVAILABLE', `timed out after ${seconds}s waiting for ${type.plural} "${name}" to be deleted (its finalizers are still pending)`)), seconds * 1000);
  });
  try {
    await Promise.race([gone, w.done.then(() => {
      throw new SpaceError('UNAVAILABLE', `the watch on ${type.plural} ended while waiting for "${name}" to be deleted`);
    }), timedOut]);
  } finally {
    clearTimeout(timer);
    w.stop();
  }
}

/** Equality-based label selectors: `a=b,c!=d,e,!f` (what kubectl's -l accepts, minus set syntax). */
export function parseSelector(s: string | undefined): (labels: Record<string, string>) => boolean {
  if (!s) return () => true;
  const tests = s.split(',').map((term) => {
    const t = term.trim();
    let m: RegExpExecArray | null;
    if ((m = /^([^!=]+)!=(.*)$/.exec(t))) return (l: Record<string, string>) => l[m![1]!.trim()] !== m![2]!.trim();
    if ((m = /^([^!=]+)==?(.*)$/.exec(t))) return (l: Record<string, string>) => l[m![1]!.trim()] === m![2]!.trim();
    if ((m = /^!([^!=]+)$/.exec(t))) return (l: Record<string, string>) => !(m![1]!.trim() in l);
    if (/^[^!=]+$/.test(t)) return (l: Record<string, string>) => t in l;
    throw invalid(`bad label selector ${JSON.stringify(s)}`);
  });
  return (labels) => tests.every((fn) => fn(labels));
}

/** A kubectl-style table: [NAMESPACE] NAME <kind columns> AGE. */
export function printTable(kind: KindInfo, items: KubeObject[], o: { wide?: boolean; namespaces?: boolean; prefix?: boolean; now?: Date }): string {
  const now = o.now ?? new Date();
  const cols = kind.columns.filter((c) => o.wide || !c.wide);
  const header = [...(o.namespaces ? ['NAMESPACE'] : []), 'NAME', ...cols.map((c) => c.header), ...(kind.noAge ? [] : ['AGE'])];
  const rows = items.map((it) => [
    ...(o.namespaces ? [it.metadata.namespace ?? ''] : []),
    o.prefix ? ref(kind, it.metadata.name) : it.metadata.name,
    ...cols.map((c) => c.value(it, now) || '<none>'),
    ...(kind.noAge ? [] : [age(it.metadata.creationTimestamp, now)]),
  ]);
  return table([header, ...rows]);
}

// The CLI applies the same admission (CRD schemas) the operator's store and an API server do.
export const { apply, get, del } = objectCommands({ storeOptions: () => ({ admission: spaceAdmission() }) });
