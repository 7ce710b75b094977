/**
 * GatewayClient: the CapsuleApi over gRPC, so spacectl, CSI and FUSE work the same against a
 * local Store or a remote gateway. Errors come back as the SpaceError the gateway raised
 * (code from the status, errno and details from trailing metadata).
 */
import * as grpc from '@grpc/grpc-js';
import type { CapsuleApi, CloneOptions, CreateOptions, PutOptions } from '../capsule/api.js';
import type {
  CapsuleInfo, CapsuleStat, ChangeEvent, DirEntry, FileAttr, FsckReport, GcReport, SetAttr, StoreStat, VersionSel,
} from '../capsule/types.js';
import type { ExportInfo, ExportProtocol, ExportSpec, MountInfo, MountSpec } from './views-api.js';
import { CHUNK, loadCapsuleProto, MAX_MESSAGE_BYTES, WRITE_PIECE } from './proto.js';
import { SpaceError } from '../capsule/errors.js';
import { fromStatus } from './status.js';
import * as w from './wire.js';

export interface GatewayClientOptions {
  /** TLS for a TCP address: `ca` to verify the gateway, `cert` + `key` for mTLS. */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer; serverName?: string };
  /** Deadline for unary calls, in ms (streams have none). Default: none. */
  timeoutMs?: number;
  /** Extra gRPC channel options (e.g. reconnect backoff for a long-lived mount process). */
  channelOptions?: grpc.ChannelOptions;
}

/** A change feed that can also tell when the gateway has subscribed (no later change is missed). */
export interface WatchStream extends AsyncIterable<ChangeEvent> {
  ready: Promise<void>;
}

type Callback<T> = (err: grpc.ServiceError | null, res?: T) => void;
type RawClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

export class GatewayClient implements CapsuleApi {
  private readonly raw: RawClient;

  /** `address`: "host:port" or "unix:///absolute/path.sock". */
  constructor(readonly address: string, private readonly opts: GatewayClientOptions = {}) {
    const { Client } = loadCapsuleProto();
    const tls = opts.tls;
    const creds = tls && !address.startsWith('unix:')
      ? grpc.credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null)
      : grpc.credentials.createInsecure();
    const options: grpc.ChannelOptions = {
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
      ...(tls?.serverName ? { 'grpc.ssl_target_name_override': tls.serverName, 'grpc.default_authority': tls.serverName } : {}),
      ...(opts.channelOptions ?? {}),
    };
    this.raw = new Client(address, creds, options) as unknown as RawClient;
  }

  close(): void {
    this.raw.close();
  }

  /** One unary call; rejects with the SpaceError the gateway sent. */
  private unary<Res>(method: string, req: object): Promise<Res> {
    const callOpts: grpc.CallOptions = this.opts.timeoutMs ? { deadline: Date.now() + this.opts.timeoutMs } : {};
    return new Promise<Res>((resolve, reject) => {
      const cb: Callback<Res> = (err, res) => (err ? reject(fromStatus(err)) : resolve(res as Res));
      this.raw[method]!.call(this.raw, req, new grpc.Metadata(), callOpts, cb);
    });
  }

  // ---- capsules ----------------------------------------------------------------------------

  async create(opts: CreateOptions): Promise<CapsuleInfo> {
    return w.infoFromWire(await this.unary<w.WCapsuleInfo>('Create', w.createToWire(opts)));
  }

  async get(ref: string): Promise<CapsuleInfo> {
    return w.infoFromWire(await this.unary<w.WCapsuleInfo>('Get', { ref }));
  }

  async list(): Promise<CapsuleInfo[]> {
    return (await this.unary<{ capsules: w.WCapsuleInfo[] }>('List', {})).capsules.map(w.infoFromWire);
  }

  async delete(ref: string): Promise<void> {
    await this.unary('Delete', { ref });
  }

  // ---- file data ---------------------------------------------------------------------------

  /**
   * Stream `source` as a Put: a header, then chunks of at most 1 MiB; a slow gateway slows
   * the reading of `source` instead of growing a buffer here.
   */
  put(ref: string, path: string, source: AsyncIterable<Uint8Array>, opts: PutOptions = {}): Promise<FileAttr> {
    let call!: grpc.ClientWritableStream<w.WPutRequest>;
    const result = new Promise<w.WFileAttr>((resolve, reject) => {
      call = (this.raw.Put as (cb: Callback<w.WFileAttr>) => grpc.ClientWritableStream<w.WPutRequest>).call(
        this.raw, (err, res) => (err ? reject(fromStatus(err)) : resolve(res!)));
    });
    let settled = false;
    const finished = result.then(() => { settled = true; }, () => { settled = true; });
    // Wait until each message is handed to HTTP/2 (which honours the gateway's flow-control
    // window) before pulling more from `source`: at most one chunk is buffered here. Stop
    // waiting when the gateway has already answered (an early error).
    const send = (msg: w.WPutRequest) => Promise.race([new Promise<void>((r) => call.write(msg, () => r())), finished]);
    const pump = async () => {
      const header: w.WPutHeader = { ref, path };
      if (opts.mode !== undefined) header.mode = opts.mode;
      if (opts.createWith) header.create = w.createToWire(opts.createWith);
      await send({ header });
      for await (const buf of source) {
        for (let i = 0; i < buf.length && !settled; i += CHUNK) {
          await send({ data: Buffer.from(buf.buffer, buf.byteOffset + i, Math.min(CHUNK, buf.length - i)) });
        }
        if (settled) break; // the gateway answered early (an error); the result says why
      }
      call.end();
    };
    return pump().then(
      async () => w.attrFromWire(await result),
      (err: unknown) => {
        // The source failed: cancel so the gateway discards the partial upload.
        call.cancel();
        result.catch(() => {});
        throw err;
      },
    );
  }

  async read(ref: string, path: string, offset: number, length: number, version?: VersionSel): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const b of this.readStream(ref, path, { offset, length, version })) parts.push(b);
    return Buffer.concat(parts);
  }

  async *readStream(ref: string, path: string, opts: { offset?: number; length?: number; version?: VersionSel } = {}): AsyncIterable<Buffer> {
    const req: w.WReadRequest = { ref, path, offset: opts.offset ?? 0 };
    if (opts.length !== undefined) req.length = opts.length;
    if (opts.version !== undefined) req.version = opts.version;
    const call = this.raw.Read!.call(this.raw, req) as grpc.ClientReadableStream<w.WReadChunk>;
    try {
      for await (const chunk of messages(call)) yield chunk.data;
    } finally {
      call.cancel(); // no-op when the stream ended; stops the gateway when the reader quit early
    }
  }

  /** Large writes go out as several Write calls of WRITE_PIECE bytes (message-size limit). */
  async write(ref: string, path: string, offset: number, data: Uint8Array): Promise<number> {
    const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    let written = 0;
    do {
      const piece = buf.subarray(written, written + WRITE_PIECE);
      const r = await this.unary<{ written: number }>('Write', { ref, path, offset: offset + written, data: piece });
      written += r.written;
      if (r.written < piece.length) break;
    } while (written < buf.length);
    return written;
  }

  async truncate(ref: string, path: string, size: number): Promise<void> {
    await this.unary('Truncate', { ref, path, size });
  }

  // ---- tree --------------------------------------------------------------------------------

  async getattr(ref: string, path: string, version?: VersionSel): Promise<FileAttr> {
    return w.attrFromWire(await this.unary<w.WFileAttr>('GetAttr', withVersion({ ref, path }, version)));
  }

  async readdir(ref: string, path: string, version?: VersionSel): Promise<DirEntry[]> {
    return (await this.unary<{ entries: w.WDirEntry[] }>('ReadDir', withVersion({ ref, path }, version))).entries.map(w.direntFromWire);
  }

  async mkdir(ref: string, path: string, mode?: number): Promise<FileAttr> {
    return w.attrFromWire(await this.unary<w.WFileAttr>('Mkdir', mode === undefined ? { ref, path } : { ref, path, mode }));
  }

  async createFile(ref: string, path: string, mode?: number): Promise<FileAttr> {
    return w.attrFromWire(await this.unary<w.WFileAttr>('CreateFile', mode === undefined ? { ref, path } : { ref, path, mode }));
  }

  async unlink(ref: string, path: string): Promise<void> {
    await this.unary('Unlink', { ref, path });
  }

  async rmdir(ref: string, path: string): Promise<void> {
    await this.unary('Rmdir', { ref, path });
  }

  async rename(ref: string, from: string, to: string): Promise<void> {
    await this.unary('Rename', { ref, from, to });
  }

  async setattr(ref: string, path: string, attr: SetAttr): Promise<FileAttr> {
    return w.attrFromWire(await this.unary<w.WFileAttr>('SetAttr', { ref, path, attr: w.setAttrToWire(attr) }));
  }

  // ---- versions and store --------------------------------------------------------------------

  async snapshot(ref: string): Promise<number> {
    return (await this.unary<{ version: number }>('Snapshot', { ref })).version;
  }

  async clone(ref: string, opts?: CloneOptions): Promise<CapsuleInfo> {
    return w.infoFromWire(await this.unary<w.WCapsuleInfo>('Clone', w.cloneToWire(ref, opts)));
  }

  async stat(ref: string): Promise<CapsuleStat> {
    return w.statFromWire(await this.unary<w.WCapsuleStat>('Stat', { ref }));
  }

  async storeStat(): Promise<StoreStat> {
    return w.storeStatFromWire(await this.unary<w.WStoreStat>('StoreStat', {}));
  }

  async gc(): Promise<GcReport> {
    return w.gcFromWire(await this.unary<w.WGcReport>('Gc', {}));
  }

  async fsck(): Promise<FsckReport> {
    return w.fsckFromWire(await this.unary<w.WFsckReport>('Fsck', {}));
  }

  /**
   * The change feed. The call starts now (not at the first pull), and `ready` resolves when
   * the gateway has subscribed. Aborting `signal` ends the iteration normally.
   */
  watch(signal: AbortSignal): WatchStream {
    const call = this.raw.Watch!.call(this.raw, {}) as grpc.ClientReadableStream<w.WChangeEvent>;
    const msgs = messages(call); // attaches the error listener now, before any status can arrive
    const ready = new Promise<void>((resolve, reject) => {
      call.once('metadata', () => resolve());
      call.once('status', (st: grpc.StatusObject) => (st.code === grpc.status.OK ? resolve() : reject(fromStatus(st))));
    });
    ready.catch(() => {}); // the iterator reports the same error
    const onAbort = () => call.cancel();
    if (signal.aborted) call.cancel();
    else signal.addEventListener('abort', onAbort, { once: true });
    async function* events(): AsyncGenerator<ChangeEvent> {
      try {
        for await (const ev of msgs) yield w.changeFromWire(ev);
      } catch (err) {
        if (signal.aborted && err instanceof SpaceError && (err.cause as grpc.ServiceError)?.code === grpc.status.CANCELLED) return;
        throw err;
      } finally {
        signal.removeEventListener('abort', onAbort);
        call.cancel();
      }
    }
    const it = events();
    return { ready, [Symbol.asyncIterator]: () => it };
  }

  // ---- views -------------------------------------------------------------------------------

  async mount(spec: MountSpec): Promise<MountInfo> {
    return w.mountFromWire(await this.unary<w.WMountInfo>('Mount', { ref: spec.ref, target: spec.target, rw: spec.rw }));
  }

  async unmount(target: string): Promise<void> {
    await this.unary('Unmount', { target });
  }

  async listMounts(): Promise<MountInfo[]> {
    return (await this.unary<{ mounts: w.WMountInfo[] }>('ListMounts', {})).mounts.map(w.mountFromWire);
  }

  // ---- network exports (NVMe/TCP, NFS) -----------------------------------------------------

  async export(spec: ExportSpec): Promise<ExportInfo> {
    return w.exportFromWire(await this.unary<w.WExportInfo>('Export', w.exportSpecToWire(spec)));
  }

  async unexport(protocol: ExportProtocol, name: string): Promise<void> {
    await this.unary('Unexport', { protocol, name });
  }

  async listExports(): Promise<ExportInfo[]> {
    return ((await this.unary<{ exports?: w.WExportInfo[] }>('ListExports', {})).exports ?? []).map(w.exportFromWire);
  }
}

/**
 * The messages of a server stream; throws the SpaceError of a non-OK status. grpc-js pushes
 * end-of-stream and then emits 'error', so the error is captured by a listener attached at
 * once rather than trusting the Readable iterator to see it (it may start late, e.g. watch()).
 */
function messages<T>(call: grpc.ClientReadableStream<T>): AsyncGenerator<T> {
  let failure: unknown;
  call.on('error', (err) => { failure ??= err; });
  return (async function* () {
    try {
      for await (const m of call) yield m as T;
    } catch (err) {
      throw fromStatus(failure ?? err);
    }
    if (failure !== undefined) throw fromStatus(failure);
  })();
}

function withVersion<T extends object>(req: T, version: VersionSel): T & { version?: number } {
  return version === undefined ? req : { ...req, version };
}
