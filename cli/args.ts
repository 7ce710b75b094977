/** A small argv parser: positionals, `--flag value`, `--flag=value`, boolean flags, `-o` aliases. */
import { invalid } from '../capsule/errors.js';

export interface Parsed {
  positionals: string[];
  flags: Map<string, string | true>;
}

const ALIASES: Record<string, string> = { o: 'output', f: 'filename', h: 'help', v: 'version' };

export function parseArgs(argv: string[], booleans: ReadonlySet<string>): Parsed {
  const positionals: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('--') || (a.startsWith('-') && a.length === 2 && a !== '-')) {
      let name = a.startsWith('--') ? a.slice(2) : ALIASES[a.slice(1)] ?? a.slice(1);
      let value: string | true | undefined;
      const eq = name.indexOf('=');
      if (eq >= 0) {
        value = name.slice(eq + 1);
        name = name.slice(0, eq);
      } else if (booleans.has(name)) {
        value = true;
      } else {
        const next = argv[i + 1];
        if (next === undefined) throw invalid(`--${name} needs a value`);
        value = next;
        i++;
      }
      flags.set(name, value);
    } else positionals.push(a);
  }
  return { positionals, flags };
}

export class Flags {
  private readonly used = new Set<string>();
  constructor(private readonly parsed: Parsed) {}

  get positionals(): string[] {
    return this.parsed.positionals;
  }

  str(name: string): string | undefined {
    this.used.add(name);
    const v = this.parsed.flags.get(name);
    if (v === true) throw invalid(`--${name} needs a value`);
    return v;
  }

  bool(name: string): boolean {
    this.used.add(name);
    const v = this.parsed.flags.get(name);
    return v === true || v === 'true';
  }

  int(name: string): number | undefined {
    const v = this.str(name);
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v)) throw invalid(`--${name} must be a non-negative integer (got ${JSON.stringify(v)})`);
    return Number(v);
  }

  /** The capsule reference: --id or --name (the same thing to every command). */
  ref(required = true): string | undefined {
    const id = this.str('id');
    const name = this.str('name');
    if (id && name && id !== name) throw invalid('give --id or --name, not both');
    const r = id ?? name;
    if (!r && required) throw invalid('--id (or --name) is required');
    return r;
  }

  /** Fail on flags no command asked about (typos should not be silently ignored). */
  rejectUnknown(): void {
    for (const k of this.parsed.flags.keys()) if (!this.used.has(k)) throw invalid(`unknown option --${k}`);
  }
}
