/**
 * NVMe/TCP attach for block and filesystem volumes, through nvme-cli.
 *
 * test/csi-nvme-kernel.test.ts runs this class for real: every command it issues executes in a
 * QEMU guest's Linux kernel against the gateway's NVMe/TCP target (connect, device discovery
 * from list-subsys/list JSON, blkid, mkfs, mount, online resize after the namespace grows).
 * test/csi-node.test.ts covers the error paths with recorded outputs in test/fixtures/csi/.
 */
import fsp from 'node:fs/promises';
import { CommandError, runChecked, type CommandRunner } from './exec.js';

export interface NvmeTarget {
  address: string;
  port: string;
  nqn: string;
  hostNqn?: string;
}

export function connectArgs(t: NvmeTarget): string[] {
  const args = ['connect', '-t', 'tcp', '-a', t.address, '-s', t.port, '-n', t.nqn];
  if (t.hostNqn) args.push('--hostnqn', t.hostNqn);
  return args;
}

export function disconnectArgs(nqn: string): string[] {
  return ['disconnect', '-n', nqn];
}

export interface NvmeSubsystem {
  /** "nvme-subsys0" */
  name: string;
  nqn: string;
  /** Controllers, e.g. [{ name: "nvme0", transport: "tcp", address: "traddr=...,trsvcid=4420", state: "live" }]. */
  paths: { name: string; transport: string; address: string; state: string }[];
}

type Json = Record<string, unknown>;
const arr = (v: unknown): Json[] => (Array.isArray(v) ? (v as Json[]) : []);
const str = (v: unknown): string => (typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v));

/**
 * `nvme list-subsys -o json`. nvme-cli 2.x prints an array of hosts, each with "Subsystems";
 * 1.x printed one object with "Subsystems". Both are accepted.
 */
export function parseListSubsys(text: string): NvmeSubsystem[] {
  if (!text.trim()) return [];
  const doc = JSON.parse(text) as unknown;
  const hosts = Array.isArray(doc) ? (doc as Json[]) : [doc as Json];
  const out: NvmeSubsystem[] = [];
  for (const h of hosts) {
    for (const s of arr(h.Subsystems)) {
      out.push({
        name: str(s.Name),
        nqn: str(s.NQN),
        paths: arr(s.Paths).map((p) => ({ name: str(p.Name), transport: str(p.Transport), address: str(p.Address), state: str(p.State) })),
      });
    }
  }
  return out;
}

export interface NvmeDevice {
  devicePath: string;
  namespace: number;
  sizeBytes: number;
  modelNumber: string;
  serialNumber: string;
}

/** `nvme list -o json`: {"Devices": [{"DevicePath": "/dev/nvme0n1", "NameSpace": 1, "PhysicalSize": ...}]}. */
export function parseList(text: string): NvmeDevice[] {
  if (!text.trim()) return [];
  const doc = JSON.parse(text) as Json;
  return arr(doc.Devices).map((d) => ({
    devicePath: str(d.DevicePath),
    namespace: Number(d.NameSpace ?? d.NSID ?? 0),
    sizeBytes: Number(d.PhysicalSize ?? 0),
    modelNumber: str(d.ModelNumber),
    serialNumber: str(d.SerialNumber),
  }));
}

/**
 * The block device of `nqn`. With native NVMe multipath (nvme_core multipath=Y, the default in
 * current kernels) the namespace head is named after the subsystem instance: nvme-subsys3 →
 * /dev/nvme3nN. Without it the namespace hangs off the controller: nvme5 → /dev/nvme5nN.
 * The lowest namespace id wins (a Space volume exports exactly one namespace).
 */
export function findDevice(subsystems: NvmeSubsystem[], devices: NvmeDevice[], nqn: string, multipath: boolean): string | undefined {
  const sub = subsystems.find((s) => s.nqn === nqn);
  if (!sub) return undefined;
  const instances = multipath
    ? [sub.name.replace(/^nvme-subsys/, '')]
    : sub.paths.map((p) => p.name.replace(/^nvme/, ''));
  const candidates = devices
    .map((d) => ({ d, m: /^\/dev\/nvme(\d+)n(\d+)$/.exec(d.devicePath) }))
    .filter((x) => x.m && instances.includes(x.m[1]!))
    .sort((a, b) => Number(a.m![2]) - Number(b.m![2]));
  return candidates[0]?.d.devicePath;
}

/** blkid -p -o export: exit 2 means "nothing found" (no filesystem, no partition table). */
export function parseBlkid(code: number, stdout: string): { type?: string; ptType?: string } {
  if (code === 2) return {};
  const kv = Object.fromEntries(stdout.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  return { type: kv.TYPE, ptType: kv.PTTYPE };
}

export interface NvmeMounterOptions {
  run: CommandRunner;
  /** Whether nvme_core native multipath is on (device naming); read from sysfs by default. */
  multipath?: () => Promise<boolean>;
  /** How long to wait for the namespace's device node after connecting. */
  deviceWaitMs?: number;
  sleep?: (ms: number) => Promise<void>;
}

export class NvmeMounter {
  private readonly run: CommandRunner;
  constructor(private readonly o: NvmeMounterOptions) {
    this.run = o.run;
  }

  async subsystems(): Promise<NvmeSubsystem[]> {
    const r = await this.run('nvme', ['list-subsys', '-o', 'json']);
    // With no NVMe subsystem at all nvme-cli exits non-zero ("Failed to scan topology").
    if (r.code !== 0) return [];
    return parseListSubsys(r.stdout);
  }

  async devices(): Promise<NvmeDevice[]> {
    const r = await this.run('nvme', ['list', '-o', 'json']);
    if (r.code !== 0) return [];
    return parseList(r.stdout);
  }

  private async multipath(): Promise<boolean> {
    if (this.o.multipath) return this.o.multipath();
    try {
      return (await fsp.readFile('/sys/module/nvme_core/parameters/multipath', 'utf8')).trim() === 'Y';
    } catch {
      return true;
    }
  }

  /** Connect (unless already connected: connect is not idempotent in nvme-cli) and return the device. */
  async connect(t: NvmeTarget): Promise<string> {
    if (!(await this.subsystems()).some((s) => s.nqn === t.nqn)) {
      await runChecked(this.run, 'nvme', connectArgs(t));
    }
    const deadline = Date.now() + (this.o.deviceWaitMs ?? 10_000);
    const sleep = this.o.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
    const mp = await this.multipath();
    for (;;) {
      // udev creates the namespace node asynchronously after the controller is live.
      const dev = findDevice(await this.subsystems(), await this.devices(), t.nqn, mp);
      if (dev) return dev;
      if (Date.now() >= deadline) throw new Error(`connected to ${t.nqn} but no namespace device appeared`);
      await sleep(200);
    }
  }

  async disconnect(nqn: string): Promise<void> {
    if (!(await this.subsystems()).some((s) => s.nqn === nqn)) return;
    await runChecked(this.run, 'nvme', disconnectArgs(nqn));
  }

  /** Make a filesystem when the device has none; refuses to format over a partition table. */
  async ensureFilesystem(device: string, fsType: string): Promise<'existing' | 'created'> {
    const r = await this.run('blkid', ['-p', '-o', 'export', device]);
    if (r.code !== 0 && r.code !== 2) throw new CommandError('blkid', ['-p', '-o', 'export', device], r);
    const found = parseBlkid(r.code, r.stdout);
    if (found.type) {
      if (found.type !== fsType) throw new Error(`${device} already holds a ${found.type} filesystem, not ${fsType}`);
      return 'existing';
    }
    if (found.ptType) throw new Error(`${device} holds a ${found.ptType} partition table; refusing to format it`);
    await runChecked(this.run, `mkfs.${fsType}`, mkfsArgs(fsType, device), { timeoutMs: 600_000 });
    return 'created';
  }

  async mount(device: string, target: string, fsType: string, flags: string[], readonly: boolean): Promise<void> {
    await runChecked(this.run, 'mount', mountArgs(device, target, fsType, flags, readonly));
  }

  /** Grow the filesystem to the device's (already grown) size, online. */
  async expand(device: string, mountPath: string, fsType: string): Promise<void> {
    if (fsType === 'xfs') await runChecked(this.run, 'xfs_growfs', [mountPath]);
    else await runChecked(this.run, 'resize2fs', [device]);
  }
}

export function mkfsArgs(fsType: string, device: string): string[] {
  // ext4: no root-reserved blocks (a data volume, not a system disk); quiet output.
  return fsType.startsWith('ext') ? ['-q', '-m', '0', device] : ['-q', device];
}

export function mountArgs(device: string, target: string, fsType: string, flags: string[], readonly: boolean): string[] {
  const opts = [...(readonly ? ['ro'] : []), ...flags];
  return ['-t', fsType, ...(opts.length ? ['-o', opts.join(',')] : []), device, target];
}
