#!/usr/bin/env node
/** spacectl: one binary for the whole system. Each subcommand lives in cli/commands/. */
import { Flags, parseArgs } from './args.js';
import type { Command } from './command.js';
import { SpaceError } from '../capsule/errors.js';
import { cat, put } from './commands/data.js';
import { apply, get, del } from './commands/objects.js';
import { fsck, gc, ls, stat } from './commands/inspect.js';
import { clone, rm, snapshot } from './commands/manage.js';
import { serve } from './commands/serve.js';
import { project } from './commands/project.js';
import { operator } from './commands/operator.js';
import { csi } from './commands/csi.js';
import { csiMounter } from './commands/csi-mounter.js';

const COMMANDS: Command[] = [put, get, cat, ls, stat, rm, snapshot, clone, fsck, gc, serve, project, apply, del, operator, csi, csiMounter];
const GLOBAL = '--data-dir D (or SPACE_HOME; default ~/.space) | --gateway HOST:PORT [--tls-ca F --tls-cert F --tls-key F]';

function help(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'spacectl: store data once as a capsule, project it anywhere.',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`),
    '',
    `Every command works on a local data dir or a gateway: ${GLOBAL}`,
    'A capsule is named by --id or --name. `spacectl COMMAND --help` shows its usage.',
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const name = argv[0];
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help() + '\n');
    return name ? 0 : 2;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    process.stderr.write(`spacectl: unknown command ${JSON.stringify(name)}\n\n${help()}\n`);
    return 2;
  }
  const booleans = new Set(['help', ...(cmd.booleans ?? [])]);
  const flags = new Flags(parseArgs(argv.slice(1), booleans));
  if (flags.bool('help')) {
    process.stdout.write(`usage: ${cmd.usage}\n\n${cmd.summary}\nglobal: ${GLOBAL}\n`);
    return 0;
  }
  const code = await cmd.run(flags);
  return typeof code === 'number' ? code : 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof SpaceError) {
      process.stderr.write(`spacectl: ${err.message}\n`);
      process.exitCode = err.code === 'INVALID_ARGUMENT' ? 2 : 1;
    } else {
      process.stderr.write(`spacectl: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exitCode = 1;
    }
  },
);
