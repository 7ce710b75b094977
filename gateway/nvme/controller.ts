/**
 * One controller: the state a host builds with Connect on the admin queue and then shares with
 * its I/O queues (properties CC/CSTS, features, keep-alive, asynchronous events), and the admin
 * command set. Transport-independent: a queue hands it commands and gets completions back.
 */
import type { Logger } from '../../capsule/log.js';
import { AdminOpcode, Cns, Feature, LogPage, Property, Sc, type Status } from './constants.js';
import type { Command } from './command.js';
import {
  AERL, MAX_TRANSFER, MQES, activeNamespaceList, changedNamespaceLog, discoveryLog, errorLog, firmwareSlotLog,
  identifyController, identifyNamespace, namespaceDescriptors, smartLog, type DiscoveryEntry,
} from './identify.js';
import type { BlockNamespace } from './namespace.js';

export interface Result {
  status: Status;
  dw0?: number;
  dw1?: number;
  /** Controller-to-host data. */
  data?: Buffer;
  /** Borrowed data: called once it is written to the host or dropped. */
  release?: () => void;
}

export const ok = (dw0 = 0, data?: Buffer): Result => ({ status: Sc.Success, dw0, data });
export const fail = (status: Status, dw0 = 0): Result => ({ status, dw0 });

/** What a controller needs from the queue (connection) that carries its admin commands. */
export interface QueueLink {
  /** Complete a command that was left pending (an Asynchronous Event Request). */
  completeLater(cid: number, r: Result): void;
  /** End the association (keep-alive expiry, subsystem removed). */
  terminate(reason: string): void;
}

/** The subsystem a controller belongs to (an NVM subsystem with one namespace, or discovery). */
export interface ControllerHost {
  nqn: string;
  discovery: boolean;
  serial: string;
  namespace?: BlockNamespace;
  /** Discovery log entries as seen by a host that reached us at `local` (its traddr and port). */
  discoveryEntries?(local: { address: string; port: number; family: 4 | 6 }): DiscoveryEntry[];
  discoveryGeneration?(): bigint;
}

export const MAX_IO_QUEUES = 64;
const CC_EN = 1;
const CSTS_RDY = 1;
const SHN_SHIFT = 14;
const SHST_COMPLETE = 2 << 2;
const FIRMWARE = '0.1.0';
/** Grace on top of KATO before a silent host's controller is torn down (transport latency). */
const KATO_GRACE_MS = 5000;

export class Controller {
  cc = 0;
  csts = 0;
  /** I/O queues granted by Set Features (Number of Queues); 0 until the host asks. */
  ioQueues = 0;
  private readonly features = new Map<number, number>([
    [Feature.Arbitration, 0],
    [Feature.PowerManagement, 0],
    [Feature.TemperatureThreshold, 0x0157], // 343 K
    [Feature.VolatileWriteCache, 1],
    [Feature.InterruptCoalescing, 0],
    [Feature.WriteAtomicity, 0],
    [Feature.AsyncEventConfig, 0],
  ]);
  private readonly aers: number[] = [];
  private readonly changedNs = new Set<number>();
  private noticePending = false;
  private katoTimer?: NodeJS.Timeout;
  private readonly started = Date.now();
  readonly ioLinks = new Map<number, QueueLink>();

  constructor(
    readonly cntlid: number,
    readonly host: ControllerHost,
    readonly hostNqn: string,
    readonly hostId: Buffer,
    private kato: number,
    readonly admin: QueueLink,
    private readonly log: Logger,
    /** Where the host reached us: discovery entries carry this address. */
    readonly local: { address: string; port: number; family: 4 | 6 },
  ) {
    this.armKeepAlive();
  }

  get enabled(): boolean {
    return (this.csts & CSTS_RDY) !== 0;
  }

  /** Volatile write cache enabled: writes complete when buffered; off = every write is durable. */
  get writeCache(): boolean {
    return (this.features.get(Feature.VolatileWriteCache)! & 1) === 1;
  }

  /** Any command on any of the controller's queues counts as host activity. */
  touch(): void {
    this.armKeepAlive();
  }

  private armKeepAlive(): void {
    if (this.katoTimer) clearTimeout(this.katoTimer);
    this.katoTimer = undefined;
    if (this.kato <= 0) return;
    // KATO is 32 bits of milliseconds; setTimeout takes at most 2^31 - 1 (24.8 days) and fires at once beyond.
    this.katoTimer = setTimeout(() => {
      this.log.warn('nvme.keepalive_expired', { cntlid: this.cntlid, subnqn: this.host.nqn, hostnqn: this.hostNqn, katoMs: this.kato });
      this.shutdown('keep-alive timeout expired');
    }, Math.min(this.kato + KATO_GRACE_MS, 0x7fffffff));
    this.katoTimer.unref();
  }

  /** End the association: every queue's connection is closed. */
  shutdown(reason: string): void {
    this.stopTimers();
    for (const q of this.ioLinks.values()) q.terminate(reason);
    this.ioLinks.clear();
    this.admin.terminate(reason);
  }

  stopTimers(): void {
    if (this.katoTimer) clearTimeout(this.katoTimer);
    this.katoTimer = undefined;
  }

  // ---------------------------------------------------------------- properties

  propertyGet(offset: number, size8: boolean): Result {
    const cap = this.capabilities();
    switch (offset) {
      case Property.CAP:
        return size8 ? { status: Sc.Success, dw0: Number(cap & 0xffffffffn), dw1: Number(cap >> 32n) } : fail(Sc.InvalidField);
      case Property.VS:
        return size8 ? fail(Sc.InvalidField) : ok(0x00010400);
      case Property.CC:
        return size8 ? fail(Sc.InvalidField) : ok(this.cc);
      case Property.CSTS:
        return size8 ? fail(Sc.InvalidField) : ok(this.csts);
      default:
        return fail(Sc.InvalidField);
    }
  }

  propertySet(offset: number, size8: boolean, value: bigint): Result {
    if (offset !== Property.CC || size8) return fail(Sc.InvalidField);
    const cc = Number(value & 0xffffffffn);
    const wasEnabled = (this.cc & CC_EN) !== 0;
    this.cc = cc;
    if ((cc & CC_EN) && !wasEnabled) {
      // IOSQES/IOCQES must be 64/16 bytes on an I/O controller (discovery controllers have no I/O queues).
      const iosqes = (cc >> 16) & 0xf;
      const iocqes = (cc >> 20) & 0xf;
      if (!this.host.discovery && (iosqes !== 6 || iocqes !== 4)) this.csts |= 2; // CFS: controller fatal status
      else this.csts = (this.csts & ~0xc) | CSTS_RDY;
    } else if (!(cc & CC_EN) && wasEnabled) {
      this.csts &= ~CSTS_RDY;
    }
    if ((cc >> SHN_SHIFT) & 3) {
      // Shutdown notification: buffered writes become durable, then report shutdown complete.
      const ns = this.host.namespace;
      const done = () => { this.csts = (this.csts & ~0xc) | SHST_COMPLETE; };
      if (ns) ns.flush().then(done, (e: unknown) => { this.log.error('nvme.shutdown_flush_failed', { cntlid: this.cntlid, err: e }); done(); });
      else done();
    }
    return ok();
  }

  private capabilities(): bigint {
    const mqes = BigInt(MQES);
    const cqr = 1n << 16n; // contiguous queues required
    const to = 20n << 24n; // ready timeout: 20 * 500 ms
    const css = 1n << 37n; // NVM command set
    return mqes | cqr | to | css; // MPSMIN = MPSMAX = 0: 4 KiB pages
  }

  // ---------------------------------------------------------------- admin commands

  /** Returns undefined when the command completes later (Asynchronous Event Request). */
  adminCommand(cmd: Command): Result | Promise<Result> | undefined {
    if (!this.enabled) return fail(Sc.CommandSequenceError);
    switch (cmd.opcode) {
      case AdminOpcode.Identify: return this.identify(cmd);
      case AdminOpcode.GetLogPage: return this.getLogPage(cmd);
      case AdminOpcode.SetFeatures: return this.setFeatures(cmd);
      case AdminOpcode.GetFeatures: return this.getFeatures(cmd);
      case AdminOpcode.KeepAlive: return ok();
      case AdminOpcode.Abort: return ok(1); // bit 0 set: the command was not aborted
      case AdminOpcode.AsyncEventRequest: return this.asyncEventRequest(cmd);
      default: return fail(Sc.InvalidOpcode);
    }
  }

  private identify(cmd: Command): Result {
    const cns = cmd.cdw(10) & 0xff;
    const ns = this.host.namespace;
    switch (cns) {
      case Cns.Controller:
        return ok(0, identifyController({
          cntlid: this.cntlid, subnqn: this.host.nqn, serial: this.host.serial, model: this.host.discovery ? 'Space discovery' : 'Space capsule',
          firmware: FIRMWARE, discovery: this.host.discovery, namespaces: ns ? 1 : 0, maxCmd: MQES + 1, kas: 1,
        }));
      case Cns.Namespace:
        if (!ns || cmd.nsid !== 1) return fail(Sc.InvalidNamespace);
        return ok(0, identifyNamespace(ns));
      case Cns.ActiveNamespaces:
        if (cmd.nsid >= 0xfffffffe) return fail(Sc.InvalidNamespace);
        return ok(0, activeNamespaceList(ns ? [1] : [], cmd.nsid));
      case Cns.NamespaceDescriptors:
        if (!ns || cmd.nsid !== 1) return fail(Sc.InvalidNamespace);
        return ok(0, namespaceDescriptors(ns));
      default:
        return fail(Sc.InvalidField);
    }
  }

  private getLogPage(cmd: Command): Result {
    const lid = cmd.cdw(10) & 0xff;
    const rae = (cmd.cdw(10) >> 15) & 1;
    // NUMDU:NUMDL is 32 bits (unsigned: a shift would go negative); the buffer is host-sized, so
    // it is bounded by the largest transfer (MDTS; discovery logs fit in it too).
    const numd = (cmd.cdw(11) & 0xffff) * 0x10000 + (cmd.cdw(10) >>> 16) + 1;
    const offset = Number((BigInt(cmd.cdw(13)) << 32n) | BigInt(cmd.cdw(12)));
    if (offset % 4 !== 0 || numd * 4 > MAX_TRANSFER) return fail(Sc.InvalidField);
    let page: Buffer;
    if (this.host.discovery) {
      if (lid !== LogPage.Discovery) return fail(Sc.InvalidLogPage);
      page = discoveryLog(this.host.discoveryGeneration!(), this.host.discoveryEntries!(this.local));
    } else {
      const ns = this.host.namespace!;
      switch (lid) {
        case LogPage.Error: page = errorLog(); break;
        case LogPage.Smart:
          page = smartLog({ ...ns.counters, powerOnHours: Math.floor((Date.now() - this.started) / 3_600_000) });
          break;
        case LogPage.FirmwareSlot: page = firmwareSlotLog(FIRMWARE); break;
        case LogPage.ChangedNamespaces:
          page = changedNamespaceLog([...this.changedNs]);
          if (!rae) {
            this.changedNs.clear();
            this.noticePending = false; // reading the log re-arms the notice
          }
          break;
        default: return fail(Sc.InvalidLogPage);
      }
    }
    if (offset > page.length) return fail(Sc.InvalidField);
    const out = Buffer.alloc(numd * 4);
    page.copy(out, 0, offset, Math.min(page.length, offset + out.length));
    return ok(0, out);
  }

  private setFeatures(cmd: Command): Result | Promise<Result> {
    const fid = cmd.cdw(10) & 0xff;
    if (cmd.cdw(10) >>> 31) return fail(Sc.FeatureNotSaveable);
    const v = cmd.cdw(11);
    switch (fid) {
      case Feature.NumberOfQueues: {
        const nsqr = v & 0xffff;
        const ncqr = v >>> 16;
        if (nsqr === 0xffff || ncqr === 0xffff) return fail(Sc.InvalidField);
        if (this.ioQueues === 0) this.ioQueues = Math.min(MAX_IO_QUEUES, Math.min(nsqr, ncqr) + 1);
        const granted = this.ioQueues - 1;
        return ok((granted << 16) | granted);
      }
      case Feature.KeepAliveTimer:
        this.kato = v;
        this.armKeepAlive();
        return ok();
      case Feature.AsyncEventConfig:
      case Feature.VolatileWriteCache:
      case Feature.Arbitration:
      case Feature.PowerManagement:
      case Feature.TemperatureThreshold:
      case Feature.InterruptCoalescing:
      case Feature.WriteAtomicity:
        if (this.host.discovery && fid !== Feature.AsyncEventConfig) return fail(Sc.InvalidField);
        this.features.set(fid, v);
        if (fid === Feature.VolatileWriteCache && !(v & 1) && this.host.namespace) {
          // Turning the cache off: what it holds must be durable before the command completes.
          return this.host.namespace.flush().then(() => ok());
        }
        return ok();
      default:
        return fail(Sc.InvalidField);
    }
  }

  private getFeatures(cmd: Command): Result {
    const fid = cmd.cdw(10) & 0xff;
    const sel = (cmd.cdw(10) >> 8) & 7;
    if (sel === 3) {
      // Supported capabilities: changeable, not saveable, not namespace specific.
      return this.features.has(fid) || fid === Feature.NumberOfQueues || fid === Feature.KeepAliveTimer ? ok(1 << 2) : fail(Sc.InvalidField);
    }
    if (sel > 3) return fail(Sc.InvalidField);
    switch (fid) {
      case Feature.NumberOfQueues: {
        const n = Math.max(this.ioQueues, 1) - 1;
        return ok((n << 16) | n);
      }
      case Feature.KeepAliveTimer:
        return ok(this.kato);
      default: {
        const v = this.features.get(fid);
        return v === undefined ? fail(Sc.InvalidField) : ok(v);
      }
    }
  }

  private asyncEventRequest(cmd: Command): Result | undefined {
    if (this.aers.length > AERL) return fail(Sc.AsyncEventLimitExceeded);
    this.aers.push(cmd.cid);
    this.deliverEvents();
    return undefined;
  }

  /** A namespace's size or attributes changed: post a Namespace Attribute Changed notice. */
  namespaceChanged(nsid: number): void {
    this.changedNs.add(nsid);
    // Notices are sent only when enabled in Async Event Configuration (bit 8).
    if (!((this.features.get(Feature.AsyncEventConfig) ?? 0) & (1 << 8))) return;
    this.noticePending = true;
    this.deliverEvents();
  }

  private deliverEvents(): void {
    if (!this.noticePending || this.aers.length === 0) return;
    const cid = this.aers.shift()!;
    this.noticePending = false;
    // Event type 2 (notice), information 0 (namespace attribute changed), log page 04h.
    this.admin.completeLater(cid, ok(0x02 | (0x00 << 8) | (LogPage.ChangedNamespaces << 16)));
  }
}
