/**
 * apply/get/delete as their own process, dispatched and reporting errors the way spacectl does,
 * for tests that need a separate CLI process (delete --wait against a controller in the parent).
 */
import { Flags, parseArgs } from '../../cli/args.js';
import { SpaceError } from '../../capsule/errors.js';
import { apply, del, get } from '../../cli/commands/objects.js';

const [name, ...args] = process.argv.slice(2);
const cmd = [apply, get, del].find((c) => c.name === name);
if (!cmd) {
  process.stderr.write(`unknown command ${name}\n`);
  process.exit(2);
}
// No background standalone server from these tests (the parent plays the controller).
if (cmd.name === 'apply') args.push('--no-start');
try {
  const code = await cmd.run(new Flags(parseArgs(args, new Set(['help', ...(cmd.booleans ?? [])]))));
  process.exitCode = typeof code === 'number' ? code : 0;
} catch (e) {
  process.stderr.write(`spacectl: ${(e as Error).message}\n`);
  process.exitCode = e instanceof SpaceError && e.code === 'INVALID_ARGUMENT' ? 2 : 1;
}
