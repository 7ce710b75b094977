/** rm, snapshot, clone: capsule lifecycle. */
import type { Command } from '../command.js';
import { human, out } from '../command.js';
import { withTarget } from '../target.js';
import { invalid } from '../../capsule/errors.js';

export const rm: Command = {
  name: 'rm',
  summary: 'delete a capsule (and collect its segments), or one file/empty directory of it',
  usage: 'spacectl rm --id ID [--path P]',
  async run(f) {
    const ref = f.ref()!;
    const p = f.str('path') ?? f.positionals[0];
    return withTarget(f, async (api) => {
      if (p) {
        const a = await api.getattr(ref, p);
        if (a.type === 'dir') await api.rmdir(ref, p);
        else await api.unlink(ref, p);
        return out(`removed ${p} from capsule ${ref}`);
      }
      await api.delete(ref);
      const r = await api.gc();
      out(`deleted capsule ${ref}; freed ${human(r.bytesFreed)} (${r.segmentsRemoved} segments)`);
    });
  },
};

export const snapshot: Command = {
  name: 'snapshot',
  summary: 'freeze the live head of a capsule as an immutable version',
  usage: 'spacectl snapshot --id ID',
  async run(f) {
    const ref = f.ref()!;
    return withTarget(f, async (api) => {
      const v = await api.snapshot(ref);
      out(`capsule ${ref}: version ${v}`);
    });
  },
};

export const clone: Command = {
  name: 'clone',
  summary: 'make a new capsule sharing the segments of another (zero copy)',
  usage: 'spacectl clone --id SRC --to NEW_ID [--new-name NAME] [--version N]',
  async run(f) {
    const ref = f.ref()!;
    const to = f.str('to') ?? f.positionals[0];
    if (!to) throw invalid('clone needs --to NEW_ID');
    const name = f.str('new-name');
    const version = f.int('version');
    return withTarget(f, async (api) => {
      const c = await api.clone(ref, { id: to, name, version });
      out(`cloned ${ref}${version ? `@${version}` : ''} into capsule ${c.id}${c.name !== c.id ? ` (${c.name})` : ''}`);
    });
  },
};
