/** ls, stat, fsck, gc: looking at capsules and keeping the store healthy. */
import type { Command } from '../command.js';
import { human, out, table } from '../command.js';
import { withTarget } from '../target.js';

export const ls: Command = {
  name: 'ls',
  summary: 'list capsules, or the files of one capsule',
  usage: 'spacectl ls [--id ID [--path DIR] [--version N]] [--json]',
  booleans: ['json'],
  async run(f) {
    const ref = f.ref(false);
    const json = f.bool('json');
    const dir = f.str('path') ?? f.positionals[0] ?? '';
    const version = f.int('version');
    return withTarget(f, async (api) => {
      if (!ref) {
        const list = await api.list();
        if (json) return out(JSON.stringify(list, null, 2));
        const rows = [['ID', 'NAME', 'VERSIONS', 'COMPRESSION', 'ENCRYPTED']];
        for (const c of list) rows.push([c.id, c.name, String(c.versions.length), c.policy.compression, c.policy.encryption.enabled ? 'yes' : 'no']);
        return out(list.length ? table(rows) : 'no capsules');
      }
      const entries = await api.readdir(ref, dir, version);
      if (json) return out(JSON.stringify(entries, null, 2));
      for (const e of entries) {
        const a = e.attr;
        const mode = (a.type === 'dir' ? 'd' : '-') + rwx(a.mode);
        out(`${mode} ${String(a.size).padStart(12)} ${new Date(a.mtimeMs).toISOString()} ${e.name}${a.type === 'dir' ? '/' : ''}`);
      }
    });
  },
};

function rwx(mode: number): string {
  let s = '';
  for (let shift = 6; shift >= 0; shift -= 3) {
    const b = (mode >> shift) & 7;
    s += (b & 4 ? 'r' : '-') + (b & 2 ? 'w' : '-') + (b & 1 ? 'x' : '-');
  }
  return s;
}

export const stat: Command = {
  name: 'stat',
  summary: 'sizes, dedup ratio, versions and digest of a capsule (or of the whole store)',
  usage: 'spacectl stat [--id ID] [--json]',
  booleans: ['json'],
  async run(f) {
    const ref = f.ref(false);
    const json = f.bool('json');
    return withTarget(f, async (api) => {
      if (!ref) {
        const s = await api.storeStat();
        if (json) return out(JSON.stringify(s, null, 2));
        return out(`capsules: ${s.capsules}\nsegments: ${s.segments}\nstored:   ${human(s.storedBytes)}\nreferenced: ${human(s.referencedBytes)}\ndedup:    ${s.dedupRatio.toFixed(2)}x`);
      }
      const [info, s] = await Promise.all([api.get(ref), api.stat(ref)]);
      if (json) return out(JSON.stringify({ ...info, stat: s }, null, 2));
      out([
        `id:           ${s.id}`,
        `name:         ${s.name}`,
        `files:        ${s.files} (${s.dirs} directories)`,
        `logical size: ${human(s.logicalSize)} (${s.logicalSize} bytes)`,
        `stored size:  ${human(s.storedSize)}`,
        `dedup ratio:  ${s.dedupRatio.toFixed(2)}x over ${s.segments} segments`,
        `versions:     ${s.versions.length ? s.versions.join(', ') : 'none (head only)'}`,
        `digest:       ${s.digest ?? '-'}`,
        `policy:       compression=${info.policy.compression} encryption=${info.policy.encryption.enabled ? info.policy.encryption.keyRef : 'off'} segmentSize=${human(info.policy.segmentSize)}`,
        ...(info.origin ? [`cloned from:  ${info.origin.capsule}${info.origin.version ? `@${info.origin.version}` : ''}`] : []),
      ].join('\n'));
    });
  },
};

export const fsck: Command = {
  name: 'fsck',
  summary: 'verify every segment and reference of the store (exit 1 on damage)',
  usage: 'spacectl fsck [--json]',
  booleans: ['json'],
  async run(f) {
    const json = f.bool('json');
    return withTarget(f, async (api) => {
      const r = await api.fsck();
      if (json) out(JSON.stringify(r, null, 2));
      else {
        for (const p of r.problems) {
          const where = p.capsule ? `capsule ${p.capsule}${p.version ? `@${p.version}` : ''}, file ${p.file ?? '?'}${p.offset !== undefined ? ` at offset ${p.offset}` : ''}` : `segment ${p.segment}`;
          out(`DAMAGED ${where}: ${p.problem}`);
        }
        out(`checked ${r.capsules} capsules, ${r.files} files, ${r.segmentsChecked} segments: ${r.problems.length ? `${r.problems.length} problems` : 'clean'}${r.orphanSegments ? ` (${r.orphanSegments} unreferenced segment files)` : ''}`);
      }
      return r.problems.length ? 1 : 0;
    });
  },
};

export const gc: Command = {
  name: 'gc',
  summary: 'remove segments no capsule version references',
  usage: 'spacectl gc',
  async run(f) {
    return withTarget(f, async (api) => {
      const r = await api.gc();
      out(`removed ${r.segmentsRemoved} segments, freed ${human(r.bytesFreed)}`);
    });
  },
};
