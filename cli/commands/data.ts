/** put, get, cat: moving bytes in and out of capsules. */
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { parsePolicyYaml, type Policy } from '../../capsule/policy.js';
import { SpaceError, invalid } from '../../capsule/errors.js';
import type { Command } from '../command.js';
import { human, out } from '../command.js';
import { withTarget } from '../target.js';
import type { Flags } from '../args.js';

function readPolicy(file: string | undefined): Policy | undefined {
  if (!file) return undefined;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw invalid(`cannot read policy file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parsePolicyYaml(text, file);
}

/** Every regular file below `root`, as paths relative to it (sorted, so puts are reproducible). */
function walk(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...walk(root, r));
    else if (e.isFile()) out.push(r);
  }
  return out;
}

export const put: Command = {
  name: 'put',
  summary: 'store a file (or a directory tree, or - for stdin) in a capsule, creating it if needed',
  usage: 'spacectl put SOURCE --id ID [--path content] [--policy-file policy.yaml]',
  async run(f: Flags) {
    const src = f.positionals[0];
    if (!src) throw invalid('put needs a SOURCE file, directory or - (stdin)');
    const ref = f.ref()!;
    const policy = readPolicy(f.str('policy-file'));
    const dest = f.str('path');
    return withTarget(f, async (api) => {
      let exists = true;
      try {
        const info = await api.get(ref);
        if (policy && JSON.stringify(info.policy) !== JSON.stringify(policy)) {
          throw new SpaceError('FAILED_PRECONDITION', `capsule ${ref} already exists with a different policy; a policy is fixed when the capsule is created (clone into a new capsule to change it)`);
        }
      } catch (e) {
        if (!(e instanceof SpaceError && e.code === 'NOT_FOUND')) throw e;
        exists = false;
      }
      if (!exists) {
        const isId = f.str('id') !== undefined;
        const info = await api.create({ ...(isId ? { id: ref } : { name: ref }), policy });
        out(`created capsule ${info.id}${info.name !== info.id ? ` (${info.name})` : ''}`);
      }
      const jobs: { from: string; to: string }[] = [];
      if (src === '-') jobs.push({ from: '-', to: dest ?? 'content' });
      else {
        let st: fs.Stats;
        try {
          st = fs.statSync(src);
        } catch {
          throw invalid(`cannot read ${src}: no such file or directory`);
        }
        if (st.isDirectory()) for (const rel of walk(src)) jobs.push({ from: path.join(src, rel), to: dest ? `${dest}/${rel}` : rel });
        else jobs.push({ from: src, to: dest ?? 'content' });
      }
      let total = 0;
      for (const j of jobs) {
        const stream = j.from === '-' ? process.stdin : fs.createReadStream(j.from, { highWaterMark: 1 << 20 });
        const attr = await api.put(ref, j.to, stream as AsyncIterable<Buffer>);
        total += attr.size;
      }
      const st = await api.stat(ref);
      out(`stored ${jobs.length} file${jobs.length === 1 ? '' : 's'} (${human(total)}) in capsule ${st.id}: stored size ${human(st.storedSize)}, dedup ${st.dedupRatio.toFixed(2)}x`);
    });
  },
};

async function readTo(f: Flags, sink: NodeJS.WritableStream): Promise<void> {
  const ref = f.ref()!;
  const p = f.str('path') ?? f.positionals[0] ?? 'content';
  const version = f.int('version');
  return withTarget(f, async (api) => {
    await pipeline(Readable.from(api.readStream(ref, p, { version })), sink);
  });
}

export const get: Command = {
  name: 'get',
  summary: 'copy a file out of a capsule',
  usage: 'spacectl get --id ID [--path content] [--version N] [-o FILE]',
  async run(f) {
    const p = f.str('path') ?? f.positionals[0] ?? 'content';
    const dest = f.str('output') ?? path.basename(p);
    const tmp = `${dest}.part-${process.pid}`;
    try {
      await readTo(f, fs.createWriteStream(tmp));
      fs.renameSync(tmp, dest);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      throw e;
    }
    out(`wrote ${dest} (${human(fs.statSync(dest).size)})`);
  },
};

export const cat: Command = {
  name: 'cat',
  summary: 'write a file of a capsule to stdout',
  usage: 'spacectl cat --id ID [--path content] [--version N]',
  async run(f) {
    await readTo(f, process.stdout);
  },
};
