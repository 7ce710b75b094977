/** Kubernetes resource quantities ("1Gi", "500M", "1048576") as byte counts. */
const SUFFIX: Record<string, number> = {
  '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50,
};

/** Whole bytes, or undefined for anything that is not a plain non-negative quantity. */
export function parseQuantity(q: unknown): number | undefined {
  if (typeof q === 'number') return Number.isSafeInteger(q) && q >= 0 ? q : undefined;
  if (typeof q !== 'string') return undefined;
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$/.exec(q.trim());
  if (!m) return undefined;
  const bytes = Math.ceil(Number(m[1]) * SUFFIX[m[2] ?? '']!);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}
