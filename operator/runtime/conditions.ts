/**
 * status.conditions helpers with the apimachinery conventions (meta.SetStatusCondition):
 * one condition per type; lastTransitionTime moves only when the status flips, so it says
 * since when a capsule has been Ready, not when the reconciler last looked; observedGeneration
 * says which spec the condition describes.
 */

export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface Condition {
  type: string;
  status: ConditionStatus;
  reason: string;
  message: string;
  /** RFC 3339, seconds precision (as metav1.Time serializes). */
  lastTransitionTime: string;
  observedGeneration?: number;
}

export interface ConditionInput {
  type: string;
  status: ConditionStatus;
  reason: string;
  message?: string;
}

export const rfc3339 = (d: Date): string => d.toISOString().replace(/\.\d+Z$/, 'Z');

/**
 * Set (add or update) a condition in place. Returns true when anything changed, so a reconciler
 * can skip a status write that would change nothing.
 */
export function setCondition(conditions: Condition[], c: ConditionInput, observedGeneration?: number, now: Date = new Date()): boolean {
  const message = c.message ?? '';
  const existing = conditions.find((x) => x.type === c.type);
  if (!existing) {
    conditions.push({
      type: c.type, status: c.status, reason: c.reason, message, lastTransitionTime: rfc3339(now),
      ...(observedGeneration !== undefined ? { observedGeneration } : {}),
    });
    return true;
  }
  let changed = false;
  if (existing.status !== c.status) {
    existing.status = c.status;
    existing.lastTransitionTime = rfc3339(now);
    changed = true;
  }
  if (existing.reason !== c.reason) {
    existing.reason = c.reason;
    changed = true;
  }
  if (existing.message !== message) {
    existing.message = message;
    changed = true;
  }
  if (observedGeneration !== undefined && existing.observedGeneration !== observedGeneration) {
    existing.observedGeneration = observedGeneration;
    changed = true;
  }
  return changed;
}

/** Remove the condition of `type`; true if there was one. */
export function removeCondition(conditions: Condition[], type: string): boolean {
  const i = conditions.findIndex((x) => x.type === type);
  if (i < 0) return false;
  conditions.splice(i, 1);
  return true;
}

export function findCondition(conditions: readonly Condition[] | undefined, type: string): Condition | undefined {
  return conditions?.find((x) => x.type === type);
}

export function isTrue(conditions: readonly Condition[] | undefined, type: string): boolean {
  return findCondition(conditions, type)?.status === 'True';
}

export function isFalse(conditions: readonly Condition[] | undefined, type: string): boolean {
  return findCondition(conditions, type)?.status === 'False';
}
