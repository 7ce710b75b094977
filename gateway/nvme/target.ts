/**
 * The NVMe/TCP target: a TCP listener, the NVM subsystems it exports (one per capsule view, each
 * with one namespace), the discovery subsystem that lists them, and the controllers hosts create
 * with Connect. The gateway owns one target; `spacectl project nvme` runs one standalone.
 */
import crypto from 'node:crypto';
import net from 'node:net';
import { SpaceError } from '../../capsule/errors.js';
import { silentLogger, type Logger } from '../../capsule/log.js';
import type { Store } from '../../capsule/store.js';
import { DISCOVERY_NQN, DYNAMIC_CNTLID, MAX_CNTLID, Sc } from './constants.js';
import { Connection, type ConnectOutcome, type ConnectRequest, type ControllerRegistry } from './connection.js';
import { Controller, fail, type ControllerHost, type QueueLink } from './controller.js';
import type { DiscoveryEntry } from './identify.js';
import { MQES } from './identify.js';
import { BlockNamespace } from './namespace.js';

export interface NvmeTargetOptions {
  store: Store;
  /** Listen address (default 127.0.0.1) and port (default 4420; 0 = any free port). */
  host?: string;
  port?: number;
  logger?: Logger;
}

export interface SubsystemSpec {
  ref: string;
  /** Default: nqn.2024-11.io.space:capsule:<capsule id>[:ro]. */
  nqn?: string;
  file?: string;
  readOnly?: boolean;
  /** Host NQNs allowed to connect; empty or absent = any host. */
  allowedHosts?: string[];
  /** 512 (default) or 4096. */
  blockSize?: number;
}

export interface SubsystemInfo {
  nqn: string;
  capsuleId: string;
  file: string;
  readOnly: boolean;
  blockSize: number;
  blocks: number;
  allowedHosts: string[];
  controllers: number;
  /** Write, flush and deallocate commands still running (also those of queues already closed). */
  changesInFlight: number;
}

const NQN_MAX = 223;
const NQN_PATTERN = /^nqn\.\d{4}-\d{2}\.[a-z0-9.-]+(:.+)?$/i;

class Subsystem implements ControllerHost {
  readonly discovery = false;
  readonly controllers = new Map<number, Controller>();
  private nextCntlid = 1;
  constructor(readonly nqn: string, readonly namespace: BlockNamespace, readonly allowedHosts: string[], readonly serial: string) {}

  allocCntlid(): number | undefined {
    for (let i = 0; i < MAX_CNTLID; i++) {
      const id = this.nextCntlid;
      this.nextCntlid = id >= MAX_CNTLID ? 1 : id + 1;
      if (!this.controllers.has(id)) return id;
    }
    return undefined;
  }

  info(): SubsystemInfo {
    const ns = this.namespace;
    return { nqn: this.nqn, capsuleId: ns.capsuleId, file: ns.file, readOnly: ns.readOnly, blockSize: ns.blockSize, blocks: ns.blocks, allowedHosts: [...this.allowedHosts], controllers: this.controllers.size, changesInFlight: ns.changesInFlight };
  }
}

export class NvmeTarget implements ControllerRegistry {
  private readonly subsystems = new Map<string, Subsystem>();
  private readonly discoveryControllers = new Map<number, Controller>();
  private nextDiscoveryCntlid = 1;
  private generation = 1n;
  private readonly connections = new Set<Connection>();
  private readonly sockets = new Set<net.Socket>();
  private readonly log: Logger;
  private readonly discoveryHost: ControllerHost;

  private constructor(private readonly store: Store, private readonly server: net.Server, logger: Logger) {
    this.log = logger;
    this.discoveryHost = {
      nqn: DISCOVERY_NQN,
      discovery: true,
      serial: 'space-discovery',
      discoveryEntries: (local) => this.discoveryEntries(local),
      discoveryGeneration: () => this.generation,
    };
  }

  static async listen(opts: NvmeTargetOptions): Promise<NvmeTarget> {
    const server = net.createServer();
    const target = new NvmeTarget(opts.store, server, opts.logger ?? silentLogger);
    server.on('connection', (s) => target.accept(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port ?? 4420, opts.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (e) => target.log.error('nvme.listener_error', { err: e }));
    const a = target.address();
    target.log.info('nvme.listening', { address: a.host, port: a.port });
    return target;
  }

  address(): { host: string; port: number } {
    const a = this.server.address() as net.AddressInfo;
    return { host: a.address, port: a.port };
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    const conn = new Connection(socket, this, this.log);
    this.connections.add(conn);
    socket.on('close', () => {
      this.sockets.delete(socket);
      this.connections.delete(conn);
    });
  }

  // ---------------------------------------------------------------- subsystems

  async addSubsystem(spec: SubsystemSpec): Promise<SubsystemInfo> {
    const capsuleId = this.store.resolveId(spec.ref);
    const readOnly = spec.readOnly ?? false;
    const nqn = spec.nqn ?? `nqn.2024-11.io.space:capsule:${capsuleId}${readOnly ? ':ro' : ''}`;
    if (nqn.length > NQN_MAX || !NQN_PATTERN.test(nqn) || nqn === DISCOVERY_NQN) {
      throw new SpaceError('INVALID_ARGUMENT', `"${nqn}" is not a valid subsystem NQN (nqn.yyyy-mm.reverse.domain:name, at most ${NQN_MAX} bytes)`);
    }
    if (this.subsystems.has(nqn)) throw new SpaceError('ALREADY_EXISTS', `subsystem ${nqn} is already exported`);
    const blockSize = spec.blockSize ?? 512;
    if (blockSize !== 512 && blockSize !== 4096) throw new SpaceError('INVALID_ARGUMENT', `block size ${blockSize} must be 512 or 4096`);
    let sub: Subsystem | undefined;
    const ns = await BlockNamespace.open(this.store, { ref: capsuleId, file: spec.file, readOnly, lbaShift: blockSize === 4096 ? 12 : 9 }, () => {
      if (!sub) return;
      this.log.info('nvme.namespace_resized', { subnqn: sub.nqn, capsule: capsuleId, blocks: sub.namespace.blocks });
      for (const c of sub.controllers.values()) c.namespaceChanged(1);
    });
    if (this.subsystems.has(nqn)) {
      ns.close();
      throw new SpaceError('ALREADY_EXISTS', `subsystem ${nqn} is already exported`);
    }
    const serial = crypto.createHash('sha256').update(nqn).digest('hex').slice(0, 20);
    sub = new Subsystem(nqn, ns, spec.allowedHosts ?? [], serial);
    this.subsystems.set(nqn, sub);
    this.generation++;
    this.log.info('nvme.subsystem_added', { subnqn: nqn, capsule: capsuleId, file: ns.file, readOnly, blocks: ns.blocks, blockSize });
    return sub.info();
  }

  async removeSubsystem(nqn: string): Promise<void> {
    const sub = this.subsystems.get(nqn);
    if (!sub) throw new SpaceError('NOT_FOUND', `subsystem ${nqn} is not exported`);
    this.subsystems.delete(nqn);
    this.generation++;
    for (const c of [...sub.controllers.values()]) c.shutdown('subsystem removed');
    sub.controllers.clear();
    try {
      // Commands of the closed queues finish first, so the flush covers every write they made.
      await sub.namespace.idle();
      await sub.namespace.flush();
    } finally {
      sub.namespace.close();
    }
    this.log.info('nvme.subsystem_removed', { subnqn: nqn, capsule: sub.namespace.capsuleId });
  }

  list(): SubsystemInfo[] {
    return [...this.subsystems.values()].map((s) => s.info());
  }

  private discoveryEntries(local: { address: string; port: number; family: 4 | 6 }): DiscoveryEntry[] {
    // The address the host reached us on is the one that works for it (matters on 0.0.0.0).
    const traddr = local.address.replace(/^::ffff:/, '');
    const family = traddr.includes(':') ? 6 : 4;
    const port = String(this.address().port);
    const entries: DiscoveryEntry[] = [];
    for (const s of this.subsystems.values()) entries.push({ subnqn: s.nqn, traddr, trsvcid: port, family, portId: 1, subtype: 2 });
    return entries;
  }

  // ---------------------------------------------------------------- ControllerRegistry

  connect(req: ConnectRequest, link: QueueLink, local: { address: string; port: number; family: 4 | 6 }): ConnectOutcome {
    // Invalid parameter in the connect data: IATTR 1, IPO = the field's byte offset.
    const badData = (offset: number) => ({ result: fail(Sc.ConnectInvalidParameters, offset | (1 << 16)) });
    const badCmd = (offset: number) => ({ result: fail(Sc.ConnectInvalidParameters, offset) });
    const discovery = req.subnqn === DISCOVERY_NQN;
    const sub = discovery ? undefined : this.subsystems.get(req.subnqn);
    if (!discovery && !sub) {
      this.log.warn('nvme.connect_rejected', { subnqn: req.subnqn, hostnqn: req.hostnqn, reason: 'unknown subsystem' });
      return badData(256);
    }
    if (sub && sub.allowedHosts.length > 0 && !sub.allowedHosts.includes(req.hostnqn)) {
      this.log.warn('nvme.connect_rejected', { subnqn: req.subnqn, hostnqn: req.hostnqn, reason: 'host not allowed' });
      return { result: fail(Sc.ConnectInvalidHost) };
    }
    if (req.sqsize < 1 || req.sqsize > MQES) return badCmd(44);
    if (req.qid === 0) {
      if (req.cntlid !== DYNAMIC_CNTLID) return badData(16);
      const cntlid = discovery ? this.allocDiscoveryCntlid() : sub!.allocCntlid();
      if (cntlid === undefined) return { result: fail(Sc.ConnectControllerBusy) };
      const host = discovery ? this.discoveryHost : sub!;
      const log = this.log.child({ subnqn: req.subnqn, cntlid, ...(sub ? { capsule: sub.namespace.capsuleId } : {}) });
      const c = new Controller(cntlid, host, req.hostnqn, req.hostId, req.kato, link, log, local);
      (discovery ? this.discoveryControllers : sub!.controllers).set(cntlid, c);
      log.info('nvme.controller_created', { hostnqn: req.hostnqn, katoMs: req.kato });
      return { controller: c };
    }
    if (discovery) return badCmd(42);
    const c = sub!.controllers.get(req.cntlid);
    if (!c || c.hostNqn !== req.hostnqn || !c.hostId.equals(req.hostId)) return badData(16);
    if (!c.enabled) return { result: fail(Sc.CommandSequenceError) };
    if (req.qid > c.ioQueues || c.ioLinks.has(req.qid)) return badCmd(42);
    c.ioLinks.set(req.qid, link);
    return { controller: c };
  }

  private allocDiscoveryCntlid(): number | undefined {
    for (let i = 0; i < MAX_CNTLID; i++) {
      const id = this.nextDiscoveryCntlid;
      this.nextDiscoveryCntlid = id >= MAX_CNTLID ? 1 : id + 1;
      if (!this.discoveryControllers.has(id)) return id;
    }
    return undefined;
  }

  released(c: Controller): void {
    c.stopTimers();
    if (c.host.discovery) {
      if (this.discoveryControllers.get(c.cntlid) === c) this.discoveryControllers.delete(c.cntlid);
      return;
    }
    const sub = this.subsystems.get(c.host.nqn);
    if (sub?.controllers.get(c.cntlid) === c) sub.controllers.delete(c.cntlid);
    this.log.info('nvme.controller_released', { subnqn: c.host.nqn, cntlid: c.cntlid, hostnqn: c.hostNqn });
    // What the host wrote is made durable when it goes away (it may not have sent a Flush).
    void c.host.namespace?.flush().catch((e: unknown) => this.log.error('nvme.flush_failed', { subnqn: c.host.nqn, err: e }));
  }

  /** Stop listening, drop every connection, make buffered writes durable. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sockets) s.destroy();
    });
    for (const nqn of [...this.subsystems.keys()]) await this.removeSubsystem(nqn);
  }
}
