/**
 * The API server's checks on object metadata (names, labels, finalizers, owner references),
 * with its wording, so a manifest rejected here is rejected in a cluster for the same reason.
 */
import type { KubeObject, ResourceType } from '../runtime/object-api.js';

export interface Issue {
  /** Field path, e.g. "spec.protocol" ("" for the whole object). */
  path: string;
  /** What is wrong, e.g. 'Unsupported value: "x": supported values: "fuse", "nfs"'. */
  message: string;
}

const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

export const SUBDOMAIN_MAX = 253;
export const TOTAL_ANNOTATION_BYTES = 256 * 1024;

export function subdomainIssue(value: string, path: string): Issue | undefined {
  if (value.length > SUBDOMAIN_MAX) return { path, message: `Invalid value: ${JSON.stringify(value)}: must be no more than 253 characters` };
  if (!SUBDOMAIN.test(value)) {
    return {
      path,
      message:
        `Invalid value: ${JSON.stringify(value)}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', ` +
        `and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`,
    };
  }
  return undefined;
}

export function labelIssue(value: string, path: string): Issue | undefined {
  if (value.length > 63) return { path, message: `Invalid value: ${JSON.stringify(value)}: must be no more than 63 characters` };
  if (!LABEL.test(value)) {
    return {
      path,
      message:
        `Invalid value: ${JSON.stringify(value)}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', ` +
        `and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`,
    };
  }
  return undefined;
}

/** A label key, annotation key or finalizer: [prefix/]name, prefix a DNS subdomain. */
function qualifiedNameIssues(key: string, path: string): Issue[] {
  const slash = key.lastIndexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  const out: Issue[] = [];
  if (prefix !== undefined) {
    if (!prefix) out.push({ path, message: `Invalid value: ${JSON.stringify(key)}: prefix part must be non-empty` });
    else if (subdomainIssue(prefix, path)) out.push({ path, message: `Invalid value: ${JSON.stringify(key)}: prefix part must be a lowercase RFC 1123 subdomain` });
  }
  if (!name) out.push({ path, message: `Invalid value: ${JSON.stringify(key)}: name part must be non-empty` });
  else if (name.length > 63) out.push({ path, message: `Invalid value: ${JSON.stringify(key)}: name part must be no more than 63 characters` });
  else if (!QUALIFIED_NAME.test(name)) {
    out.push({
      path,
      message:
        `Invalid value: ${JSON.stringify(key)}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character ` +
        `(e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`,
    });
  }
  return out;
}

/** Metadata checks beyond the JSON shape (the shape itself is a 400, checked before this). */
export function validateMetadata(type: ResourceType, obj: KubeObject): Issue[] {
  const m = obj.metadata;
  const issues: Issue[] = [];
  const nameIssue = subdomainIssue(m.name, 'metadata.name');
  if (nameIssue) issues.push(nameIssue);
  if (type.namespaced && m.namespace !== undefined) {
    const nsIssue = labelIssue(m.namespace, 'metadata.namespace');
    if (nsIssue) issues.push(nsIssue);
  }
  for (const [k, v] of Object.entries(m.labels ?? {})) {
    issues.push(...qualifiedNameIssues(k, 'metadata.labels'));
    if (v.length > 63) issues.push({ path: 'metadata.labels', message: `Invalid value: ${JSON.stringify(v)}: must be no more than 63 characters` });
    else if (!LABEL_VALUE.test(v)) {
      issues.push({
        path: 'metadata.labels',
        message:
          `Invalid value: ${JSON.stringify(v)}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', ` +
          `and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`,
      });
    }
  }
  let annotationBytes = 0;
  for (const [k, v] of Object.entries(m.annotations ?? {})) {
    issues.push(...qualifiedNameIssues(k.toLowerCase(), 'metadata.annotations'));
    annotationBytes += Buffer.byteLength(k) + Buffer.byteLength(v);
  }
  if (annotationBytes > TOTAL_ANNOTATION_BYTES) {
    issues.push({ path: 'metadata.annotations', message: `Too long: must have at most ${TOTAL_ANNOTATION_BYTES} bytes` });
  }
  (m.finalizers ?? []).forEach((f, i) => issues.push(...qualifiedNameIssues(f, `metadata.finalizers[${i}]`)));
  (m.ownerReferences ?? []).forEach((r, i) => {
    for (const field of ['apiVersion', 'kind', 'name', 'uid'] as const) {
      if (!r[field]) issues.push({ path: `metadata.ownerReferences[${i}].${field}`, message: 'Required value' });
    }
  });
  if ((m.ownerReferences ?? []).filter((r) => r.controller).length > 1) {
    issues.push({ path: 'metadata.ownerReferences', message: 'Invalid value: only one reference can have Controller set to true' });
  }
  return issues;
}
