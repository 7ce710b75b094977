/**
 * Admission for Space objects without an API server: what kube-apiserver does to a custom
 * resource on create and update, driven by the same schemas the CRDs carry (./schemas.ts).
 *
 * In order: null values of non-nullable fields are dropped, unknown fields are removed and
 * reported (as kubectl's default strict field validation would), defaults are filled in, then
 * the OpenAPI value validations and the CEL rules run. Messages follow the API server's field
 * errors ("spec.protocol: Unsupported value: ...", "spec.capsuleRef.name: Required value") so a
 * user sees the same text in standalone mode and in a cluster.
 *
 * CEL is not interpreted: each rule string used in the schemas has a hand-written equivalent in
 * RULES below, and a schema with any other rule is a programming error (generate-crds refuses it).
 */
import { ApiError, SPACE_GROUP, type KubeObject, type ResourceType } from '../runtime/object-api.js';
import { schemaFor, DNS_SUBDOMAIN_PATTERN, type JSONSchemaProps } from './schemas.js';
import { SPACE_API_VERSION, SPACE_KINDS, type SpaceKind } from './types.js';

/** One rejected field: `path` as the API server prints it (spec.a.b[0].c), `message` after it. */
export interface Issue {
  path: string;
  message: string;
}

export interface ValidationResult<T = KubeObject> {
  /** A copy of the input with nulls and unknown fields dropped and defaults applied. */
  object: T;
  /** Empty when the object is admissible. */
  issues: Issue[];
}

export const formatIssue = (i: Issue): string => (i.path ? `${i.path}: ${i.message}` : i.message);

// ---------------------------------------------------------------------------------------------
// CEL rules, by exact text

interface RuleImpl {
  /** Uses oldSelf: evaluated only on update, and only where the old object has the field. */
  transition: boolean;
  holds(self: unknown, oldSelf: unknown): boolean;
}

const has = (o: unknown, k: string): boolean => isObject(o) && o[k] !== undefined;

const RULES: Record<string, RuleImpl> = {
  'self == oldSelf': { transition: true, holds: (self, oldSelf) => deepEqual(self, oldSelf) },
  '(has(self.policy) && has(self.policy.encryption)) == (has(oldSelf.policy) && has(oldSelf.policy.encryption))': {
    transition: true,
    holds: (self, oldSelf) => has((self as Record<string, unknown>).policy, 'encryption') === has((oldSelf as Record<string, unknown>).policy, 'encryption'),
  },
};

export const IMPLEMENTED_RULES: readonly string[] = Object.keys(RULES);

/** Every x-kubernetes-validations rule in a schema, with the path of the node carrying it. */
export function rulesIn(schema: JSONSchemaProps, path = ''): { path: string; rule: string; message: string }[] {
  const out: { path: string; rule: string; message: string }[] = [];
  for (const r of schema['x-kubernetes-validations'] ?? []) out.push({ path: path || '<root>', rule: r.rule, message: r.message });
  for (const [k, child] of Object.entries(schema.properties ?? {})) out.push(...rulesIn(child, path ? `${path}.${k}` : k));
  if (schema.items) out.push(...rulesIn(schema.items, `${path}[]`));
  if (schema.additionalProperties) out.push(...rulesIn(schema.additionalProperties, `${path}[*]`));
  for (const s of [...(schema.oneOf ?? []), ...(schema.anyOf ?? [])]) out.push(...rulesIn(s, path));
  return out;
}

/** Throws when a schema uses a CEL rule this validator cannot enforce. */
export function assertRulesImplemented(schema: JSONSchemaProps, what = 'schema'): void {
  const unknown = rulesIn(schema).filter((r) => !(r.rule in RULES));
  if (unknown.length) {
    throw new Error(`${what}: x-kubernetes-validations rules without an implementation in operator/api/validate.ts: ${unknown.map((r) => `${r.path}: ${r.rule}`).join('; ')}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Value helpers

type Obj = Record<string, unknown>;
export type FieldPath = (string | number)[];

function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a).filter((k) => a[k] !== undefined);
    const kb = Object.keys(b).filter((k) => b[k] !== undefined);
    return ka.length === kb.length && ka.every((k) => deepEqual(a[k], b[k]));
  }
  return false;
}

const pathString = (p: FieldPath): string =>
  p.reduce<string>((s, seg) => (typeof seg === 'number' ? `${s}[${seg}]` : s ? `${s}.${seg}` : seg), '');

/** JSON type name as the API server reports it in type errors. */
function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

/** A value as Go's %#v-style printing in field errors shows it: strings quoted, numbers bare. */
function show(v: unknown): string {
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v) ?? String(v);
}

const regexCache = new Map<string, RegExp>();
function regex(pattern: string): RegExp {
  let re = regexCache.get(pattern);
  if (!re) regexCache.set(pattern, (re = new RegExp(pattern, 'u')));
  return re;
}

const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$/;
function isDateTime(s: string): boolean {
  const m = DATE_TIME.exec(s);
  if (!m) return false;
  const [y, mo, d, h, mi, sec] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const daysInMonth = new Date(Date.UTC(y, mo, 0)).getUTCDate();
  const tzOk = m[9] === undefined || (Number(m[9]) < 24 && Number(m[10]) < 60);
  return mo >= 1 && mo <= 12 && d >= 1 && d <= daysInMonth && h < 24 && mi < 60 && sec <= 60 && tzOk;
}

const charLength = (s: string): number => [...s].length;

// ---------------------------------------------------------------------------------------------
// Pruning and defaulting (the API server does both while decoding, before validation)

function prune(schema: JSONSchemaProps, value: unknown, path: FieldPath, issues: Issue[]): unknown {
  if (Array.isArray(value) && schema.type === 'array' && schema.items) {
    return value.map((item, i) => prune(schema.items!, item, [...path, i], issues));
  }
  if (!isObject(value) || schema.type !== 'object') return value;
  // The API server owns metadata; the schema only says it is an object.
  if (path.length === 1 && path[0] === 'metadata') return value;

  const props = schema.properties ?? {};
  for (const key of Object.keys(value)) {
    const child = props[key] ?? schema.additionalProperties;
    if (!child) {
      if (schema['x-kubernetes-preserve-unknown-fields']) continue;
      issues.push({ path: pathString([...path, key]), message: `unknown field "${pathString([...path, key])}"` });
      delete value[key];
      continue;
    }
    if (value[key] === null && !child.nullable) {
      delete value[key];
      continue;
    }
    value[key] = prune(child, value[key], [...path, key], issues);
  }
  for (const [key, child] of Object.entries(props)) {
    if (value[key] === undefined && child.default !== undefined) {
      // Defaults may contain objects that have defaults of their own.
      value[key] = prune(child, structuredClone(child.default), [...path, key], issues);
    }
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Validation

interface Ctx {
  issues: Issue[];
}

function validateNode(schema: JSONSchemaProps, value: unknown, path: FieldPath, old: unknown, hasOld: boolean, ctx: Ctx): void {
  const p = pathString(path);
  const at = p || '<root>';
  const bad = (message: string) => ctx.issues.push({ path: p, message });
  const invalid = (v: unknown, detail: string) => bad(`Invalid value: ${show(v)}: ${detail}`);

  // Type first: nothing else is meaningful on a value of the wrong type.
  if (schema['x-kubernetes-int-or-string']) {
    const t = typeName(value);
    if (t !== 'integer' && t !== 'string') {
      invalid(t, `${at} in body must be of type integer or string: ${show(t)}`);
      return;
    }
  } else if (schema.type) {
    const t = typeName(value);
    if (t !== schema.type && !(schema.type === 'number' && t === 'integer')) {
      invalid(t, `${at} in body must be of type ${schema.type}: ${show(t)}`);
      return;
    }
  }

  if (schema.enum && !schema.enum.some((e) => deepEqual(e, value))) {
    bad(`Unsupported value: ${show(value)}: supported values: ${schema.enum.map(show).join(', ')}`);
  }

  if (typeof value === 'string') {
    const n = charLength(value);
    if (schema.maxLength !== undefined && n > schema.maxLength) bad(`Too long: may not be more than ${schema.maxLength} bytes`);
    if (schema.minLength !== undefined && n < schema.minLength) invalid(value, `${at} in body should be at least ${schema.minLength} chars long`);
    if (schema.pattern !== undefined && !regex(schema.pattern).test(value)) invalid(value, `${at} in body should match '${schema.pattern}'`);
    if (schema.format === 'date-time' && !isDateTime(value)) invalid(value, `${at} in body must be of type date-time: ${show(value)}`);
  }

  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) invalid(value, `${at} in body should be greater than or equal to ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum) invalid(value, `${at} in body should be less than or equal to ${schema.maximum}`);
  }

  if (Array.isArray(value)) validateArray(schema, value, path, old, hasOld, ctx);

  if (isObject(value)) {
    for (const r of schema.required ?? []) {
      if (value[r] === undefined) ctx.issues.push({ path: pathString([...path, r]), message: 'Required value' });
    }
    const oldObj = hasOld && isObject(old) ? old : undefined;
    for (const [key, child] of Object.entries(value)) {
      const s = schema.properties?.[key] ?? schema.additionalProperties;
      if (!s || child === undefined) continue; // unknown fields were reported and removed by prune()
      validateNode(s, child, [...path, key], oldObj?.[key], oldObj !== undefined && oldObj[key] !== undefined, ctx);
    }
  }

  if (schema.oneOf) {
    const matching = schema.oneOf.filter((s) => matches(s, value, path));
    if (matching.length !== 1) {
      // The common form, a oneOf of single `required` lists, gets a message naming the fields.
      const names = schema.oneOf.map((s) => (s.required?.length === 1 && Object.keys(s).length === 1 ? s.required[0]! : undefined));
      let hint = '';
      if (names.every((n) => n !== undefined) && isObject(value)) {
        const found = names.filter((n) => value[n!] !== undefined);
        hint = `: set exactly one of ${names.join(', ')} (found ${found.length ? found.join(', ') : 'none'})`;
      }
      invalid(typeName(value), `${at} in body must validate one and only one schema (oneOf)${hint}`);
    }
  }

  // anyOf on an int-or-string node is the type union checked above, not a value validation.
  if (schema.anyOf && !schema['x-kubernetes-int-or-string'] && !schema.anyOf.some((s) => matches(s, value, path))) {
    invalid(typeName(value), `${at} in body must validate at least one schema (anyOf)`);
  }

  for (const r of schema['x-kubernetes-validations'] ?? []) {
    const impl = RULES[r.rule];
    if (!impl) throw new Error(`${at}: x-kubernetes-validations rule has no implementation in operator/api/validate.ts: ${r.rule}`);
    if (impl.transition && !hasOld) continue;
    if (!impl.holds(value, old)) invalid(typeName(value), r.message);
  }
}

function matches(schema: JSONSchemaProps, value: unknown, path: FieldPath): boolean {
  const probe: Ctx = { issues: [] };
  validateNode(schema, value, path, undefined, false, probe);
  return probe.issues.length === 0;
}

function validateArray(schema: JSONSchemaProps, value: unknown[], path: FieldPath, old: unknown, hasOld: boolean, ctx: Ctx): void {
  const p = pathString(path);
  const at = p || '<root>';
  if (schema.maxItems !== undefined && value.length > schema.maxItems) ctx.issues.push({ path: p, message: `Too many: ${value.length}: must have at most ${schema.maxItems} items` });
  if (schema.minItems !== undefined && value.length < schema.minItems) {
    ctx.issues.push({ path: p, message: `Invalid value: ${value.length}: ${at} in body should have at least ${schema.minItems} items` });
  }

  const listType = schema['x-kubernetes-list-type'];
  const mapKeys = schema['x-kubernetes-list-map-keys'] ?? [];
  const keyOf = (item: unknown): string | undefined =>
    isObject(item) ? JSON.stringify(Object.fromEntries(mapKeys.map((k) => [k, item[k]]))) : undefined;
  // Items of a map list keep their identity across updates (by key), so transition rules inside
  // them compare with the old item of the same key; items of other lists have no old value.
  const oldByKey = new Map<string, unknown>();
  if (listType === 'map' && hasOld && Array.isArray(old)) for (const o of old) { const k = keyOf(o); if (k !== undefined) oldByKey.set(k, o); }

  const seen = new Set<string>();
  value.forEach((item, i) => {
    const ip = [...path, i];
    if (listType === 'map' || listType === 'set') {
      const k = listType === 'map' ? keyOf(item) : JSON.stringify(item);
      if (k !== undefined) {
        if (seen.has(k)) ctx.issues.push({ path: pathString(ip), message: `Duplicate value: ${k}` });
        seen.add(k);
      }
    }
    if (!schema.items) return;
    const k = listType === 'map' ? keyOf(item) : undefined;
    const oldItem = k !== undefined ? oldByKey.get(k) : undefined;
    validateNode(schema.items, item, ip, oldItem, oldItem !== undefined, ctx);
  });
}

// ---------------------------------------------------------------------------------------------
// Objects

const NAME_MESSAGE =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

/** Checks the API server makes outside the schema: apiVersion, kind and the object's name. */
function validateEnvelope(kind: SpaceKind, obj: Obj, issues: Issue[]): void {
  if (obj.apiVersion === undefined) issues.push({ path: 'apiVersion', message: 'Required value' });
  else if (obj.apiVersion !== SPACE_API_VERSION) issues.push({ path: 'apiVersion', message: `Invalid value: ${show(obj.apiVersion)}: must be ${SPACE_API_VERSION}` });
  if (obj.kind === undefined) issues.push({ path: 'kind', message: 'Required value' });
  else if (obj.kind !== kind) issues.push({ path: 'kind', message: `Invalid value: ${show(obj.kind)}: must be ${kind}` });

  const md = obj.metadata;
  if (!isObject(md)) {
    issues.push({ path: 'metadata', message: md === undefined ? 'Required value' : `Invalid value: ${show(typeName(md))}: metadata in body must be of type object: ${show(typeName(md))}` });
    return;
  }
  if (md.name === undefined || md.name === '') {
    // generateName is resolved by the store before admission sees the object.
    if (typeof md.generateName !== 'string' || !md.generateName) issues.push({ path: 'metadata.name', message: 'Required value: name or generateName is required' });
  } else if (typeof md.name !== 'string' || md.name.length > 253 || !regex(DNS_SUBDOMAIN_PATTERN).test(md.name)) {
    issues.push({
      path: 'metadata.name',
      message: `Invalid value: ${show(md.name)}: ${NAME_MESSAGE} (e.g. 'example.com', regex used for validation is '${DNS_SUBDOMAIN_PATTERN.slice(1, -1)}')`,
    });
  }
}

/**
 * Prune, default and validate any value against a schema node (paths start at `path`). Used for
 * whole objects by validateObject and by tests that check a schema's own defaults.
 */
export function validateAgainstSchema(schema: JSONSchemaProps, value: unknown, old?: unknown, path: FieldPath = []): { value: unknown; issues: Issue[] } {
  const issues: Issue[] = [];
  const pruned = prune(schema, structuredClone(value), path, issues);
  const oldPruned = old === undefined ? undefined : prune(schema, structuredClone(old), path, []);
  validateNode(schema, pruned, path, oldPruned, oldPruned !== undefined, { issues });
  return { value: pruned, issues };
}

/**
 * Admit `obj` as a create (no `old`) or as an update of `old`. Never throws for bad input: the
 * issues say what is wrong, and `object` is the defaulted copy to store when there are none.
 */
export function validateObject<T extends KubeObject = KubeObject>(kind: SpaceKind, obj: unknown, old?: unknown): ValidationResult<T> {
  const schema = schemaFor(kind);
  const issues: Issue[] = [];
  if (!isObject(obj)) {
    issues.push({ path: '', message: `Invalid value: ${show(typeName(obj))}: a ${kind} must be an object` });
    return { object: obj as T, issues };
  }
  validateEnvelope(kind, obj, issues);
  // The stored object went through the same defaulting when it was written; validateAgainstSchema
  // defaults it again, so objects stored before a default was added compare equal in transition rules.
  const r = validateAgainstSchema(schema, obj, isObject(old) ? old : undefined);
  issues.push(...r.issues);
  const object = r.value;
  return { object: object as T, issues };
}

/** Admission as a store uses it: returns the object to persist or throws 422 Invalid. */
export type Admission = <T extends KubeObject>(obj: T, old?: KubeObject) => T;

/** The API server's summary line for rejected objects: Kind.group "name" is invalid: [...]. */
export function invalidError(kind: string, name: string, issues: Issue[]): ApiError {
  const list = issues.map(formatIssue);
  const detail = list.length === 1 ? list[0] : `[${list.join(', ')}]`;
  return new ApiError(422, 'Invalid', `${kind}.${SPACE_GROUP} "${name}" is invalid: ${detail}`);
}

export function admissionFor(kind: SpaceKind): Admission {
  return <T extends KubeObject>(obj: T, old?: KubeObject): T => {
    const { object, issues } = validateObject<T>(kind, obj, old);
    if (issues.length) throw invalidError(kind, String(obj?.metadata?.name ?? ''), issues);
    return object;
  };
}

/** Admission for a resource type when it is one of Space's kinds; undefined for anything else. */
export function admissionForType(type: ResourceType): Admission | undefined {
  if (type.group !== SPACE_GROUP || !(SPACE_KINDS as readonly string[]).includes(type.kind)) return undefined;
  return admissionFor(type.kind as SpaceKind);
}
