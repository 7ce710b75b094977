import type { Flags } from './args.js';

export interface Command {
  name: string;
  summary: string;
  usage: string;
  /** Flags that take no value. */
  booleans?: string[];
  run(flags: Flags): Promise<number | void>;
}

export const out = (s: string): void => void process.stdout.write(s.endsWith('\n') ? s : s + '\n');

export function human(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ')).join('\n');
}
