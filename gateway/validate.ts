/**
 * Input checks for the gRPC handlers. The store validates paths and semantics itself; these
 * catch what only a wire peer can send (missing fields, negative or non-integer numbers, bad
 * JSON) and turn it into INVALID_ARGUMENT naming the field.
 */
import type { CreateOptions } from '../capsule/api.js';
import { invalid } from '../capsule/errors.js';
import { validatePolicy, type Policy } from '../capsule/policy.js';
import type { WCreateRequest } from './wire.js';

export function required(v: unknown, field: string): string {
  if (typeof v !== 'string' || v.length === 0) throw invalid(`${field} is required`, { field });
  return v;
}

/** A path where "" (the root) is meaningful; only a non-string is an error. */
export function pathOrRoot(v: unknown, field = 'path'): string {
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw invalid(`${field} must be a string`, { field });
  return v;
}

export function nonNegative(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw invalid(`${field} must be a non-negative integer (got ${JSON.stringify(v)})`, { field });
  }
  return v;
}

export function optNonNegative(v: unknown, field: string): number | undefined {
  return v === undefined || v === null ? undefined : nonNegative(v, field);
}

export function optMode(v: unknown, field = 'mode'): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0o7777) {
    throw invalid(`${field} must be permission bits between 0 and 0o7777 (got ${JSON.stringify(v)})`, { field });
  }
  return v;
}

export function optString(v: unknown, field: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v.length === 0) throw invalid(`${field} must be a non-empty string when given`, { field });
  return v;
}

export function bytes(v: unknown, field: string): Buffer {
  if (!Buffer.isBuffer(v)) throw invalid(`${field} must be bytes`, { field });
  return v;
}

/** policy_json -> Policy; empty means the default policy. Messages come from validatePolicy. */
export function policyFromJson(json: unknown): Policy | undefined {
  if (json === undefined || json === null || json === '') return undefined;
  if (typeof json !== 'string') throw invalid('policy_json must be a string', { field: 'policy_json' });
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    throw invalid(`policy_json is not valid JSON: ${(err as Error).message}`, { field: 'policy_json' });
  }
  return validatePolicy(raw, 'policy_json');
}

export function createFromWire(w: WCreateRequest | undefined, field = 'create'): CreateOptions {
  if (!w) return {};
  const opts: CreateOptions = {};
  const id = optString(w.id, `${field}.id`);
  const name = optString(w.name, `${field}.name`);
  const policy = policyFromJson(w.policy_json);
  const size = optNonNegative(w.size, `${field}.size`);
  if (id !== undefined) opts.id = id;
  if (name !== undefined) opts.name = name;
  if (policy !== undefined) opts.policy = policy;
  if (size !== undefined) opts.size = size;
  return opts;
}
