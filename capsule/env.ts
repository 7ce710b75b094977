/**
 * Settings read from the environment (SPACE_*): one way to parse them, and one error that names
 * the variable and what it takes.
 */
import { SpaceError } from './errors.js';

/** An integer setting from `min` to `max`; undefined when unset or empty. */
export function envInteger(env: NodeJS.ProcessEnv, name: string, min: number, max: number): number | undefined {
  const raw = env[name]?.trim();
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new SpaceError('INVALID_ARGUMENT', `${name} must be an integer from ${min} to ${max}, got "${raw}"`);
  }
  return n;
}
