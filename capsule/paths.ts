/** Capsule-relative POSIX paths: "" is the root; components are validated once, here. */
import { invalid } from './errors.js';

export const MAX_NAME_BYTES = 255;

/** Split a user path into validated components ("/a//b/" -> ["a","b"]). */
export function splitPath(p: string): string[] {
  if (typeof p !== 'string') throw invalid('path must be a string');
  if (p.includes('\0')) throw invalid(`path ${JSON.stringify(p)} contains a NUL byte`);
  const parts = p.split('/').filter((c) => c.length > 0);
  for (const c of parts) {
    if (c === '.' || c === '..') throw invalid(`path ${JSON.stringify(p)} must not contain "." or ".." components`);
    if (Buffer.byteLength(c) > MAX_NAME_BYTES) throw invalid(`path component ${JSON.stringify(c.slice(0, 32))}... is longer than ${MAX_NAME_BYTES} bytes`);
  }
  return parts;
}

export function normPath(p: string): string {
  return splitPath(p).join('/');
}

export function parentAndName(p: string): { parent: string[]; name: string } {
  const parts = splitPath(p);
  const name = parts.pop();
  if (name === undefined) throw invalid('the capsule root has no name (path is empty)');
  return { parent: parts, name };
}
