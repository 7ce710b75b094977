/**
 * The CapsuleService handlers: each RPC validates its request, calls the CapsuleApi and maps
 * the result (or SpaceError) onto the wire. Every call is counted and timed in the metrics.
 */
import * as grpc from '@grpc/grpc-js';
import type { CapsuleApi, PutOptions } from '../capsule/api.js';
import { invalid, SpaceError } from '../capsule/errors.js';
import type { Logger } from '../capsule/log.js';
import type { ExportManager, ExportSpec, ViewManager } from './views-api.js';
import type { GatewayMetrics } from './metrics.js';
import { CHUNK } from './proto.js';
import { toStatus, type StatusError } from './status.js';
import * as v from './validate.js';
import * as w from './wire.js';

export interface CapsuleServiceDeps {
  store: CapsuleApi;
  views?: ViewManager;
  /** NVMe/TCP and NFS exports (absent: Export answers FAILED_PRECONDITION). */
  exports?: ExportManager;
  metrics?: GatewayMetrics;
  logger: Logger;
}

export interface CapsuleService {
  implementation: grpc.UntypedServiceImplementation;
  /** End open Watch streams with UNAVAILABLE, so a graceful shutdown need not wait for them. */
  endStreams(): void;
}

/** A status that is not a SpaceError (UNIMPLEMENTED, CANCELLED). */
class RawStatus extends Error {
  constructor(readonly code: grpc.status, message: string) {
    super(message);
  }
}

/** The client went away; not an error worth a status or a log line. */
class Cancelled extends Error {}

export function createCapsuleService(deps: CapsuleServiceDeps): CapsuleService {
  const { store, views, exports, metrics, logger } = deps;
  const streams = new Set<AbortController>();

  const statusOf = (op: string, err: unknown): StatusError => {
    if (err instanceof RawStatus) return { code: err.code, details: err.message, metadata: new grpc.Metadata() };
    const st = toStatus(err);
    if (!(err instanceof SpaceError)) logger.error('gateway.internal_error', { op, err, stack: (err as Error)?.stack });
    else if (err.code === 'DATA_LOSS') logger.warn('gateway.integrity_failure', { op, msg: err.message, ...err.details });
    else if (err.code === 'INTERNAL') logger.error('gateway.internal_error', { op, err });
    return st;
  };

  const timer = (op: string) => {
    const t0 = process.hrtime.bigint();
    return (code: string) => metrics?.observe(op, code, Number(process.hrtime.bigint() - t0) / 1e9);
  };

  /** Unary RPC: `fn` gets the request, its resolved value becomes the response. */
  function unary<Req, Res>(op: string, fn: (req: Req) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      const done = timer(op);
      Promise.resolve()
        .then(() => fn(call.request))
        .then(
          (res) => { done('OK'); callback(null, res); },
          (err: unknown) => {
            const st = statusOf(op, err);
            done(grpc.status[st.code]);
            callback(st);
          },
        );
    };
  }

  /** Server-streaming RPC: `fn` writes with `send` (which waits for the client to drain). */
  function serverStream<Req, Res>(
    op: string,
    fn: (req: Req, send: (msg: Res) => Promise<void>, signal: AbortSignal, call: grpc.ServerWritableStream<Req, Res>) => Promise<void>,
  ): grpc.handleServerStreamingCall<Req, Res> {
    return (call) => {
      const done = timer(op);
      const ac = new AbortController();
      call.on('cancelled', () => ac.abort(new Cancelled('client cancelled')));
      const send = (msg: Res) => writeDrained(call, msg, ac.signal);
      Promise.resolve()
        .then(() => fn(call.request, send, ac.signal, call))
        .then(
          () => {
            if (ac.signal.aborted) return done('CANCELLED');
            done('OK');
            call.end();
          },
          (err: unknown) => {
            if (err instanceof Cancelled || call.cancelled) return done('CANCELLED');
            const st = statusOf(op, err);
            done(grpc.status[st.code]);
            call.emit('error', st);
          },
        );
    };
  }

  const needExports = (): ExportManager => {
    if (!exports) throw new RawStatus(grpc.status.FAILED_PRECONDITION, 'this gateway serves no network exports (started without NVMe/TCP or NFS)');
    return exports;
  };

  const needViews = (): ViewManager => {
    if (!views) throw new RawStatus(grpc.status.UNIMPLEMENTED, 'this gateway serves no views (started without a view manager)');
    return views;
  };

  const implementation: grpc.UntypedServiceImplementation = {
    Create: unary('Create', async (req: w.WCreateRequest) => w.infoToWire(await store.create(v.createFromWire(req, 'request')))),
    Get: unary('Get', async (req: { ref: string }) => w.infoToWire(await store.get(v.required(req.ref, 'ref')))),
    List: unary('List', async () => ({ capsules: (await store.list()).map(w.infoToWire) })),
    Delete: unary('Delete', async (req: { ref: string }) => {
      await store.delete(v.required(req.ref, 'ref'));
      return {};
    }),

    Put: putHandler(),

    Read: serverStream('Read', async (req: w.WReadRequest, send: (m: w.WReadChunk) => Promise<void>, signal) => {
      const ref = v.required(req.ref, 'ref');
      const path = v.required(req.path, 'path');
      const offset = v.nonNegative(req.offset ?? 0, 'offset');
      const length = v.optNonNegative(req.length, 'length');
      const version = v.optNonNegative(req.version, 'version');
      let pos = offset;
      // A store piece is one segment (up to 64 MiB by policy); the wire carries at most 1 MiB.
      for await (const piece of store.readStream(ref, path, { offset, length, version })) {
        for (let i = 0; i < piece.length; i += CHUNK) {
          if (signal.aborted) return;
          const data = piece.subarray(i, i + CHUNK);
          await send({ offset: pos, data });
          metrics?.bytesOut.inc(data.length);
          pos += data.length;
        }
      }
    }),

    Write: unary('Write', async (req: w.WWriteRequest) => {
      const ref = v.required(req.ref, 'ref');
      const path = v.required(req.path, 'path');
      const offset = v.nonNegative(req.offset ?? 0, 'offset');
      const data = v.bytes(req.data, 'data');
      metrics?.bytesIn.inc(data.length);
      return { written: await store.write(ref, path, offset, data) };
    }),
    Truncate: unary('Truncate', async (req: { ref: string; path: string; size: number }) => {
      await store.truncate(v.required(req.ref, 'ref'), v.required(req.path, 'path'), v.nonNegative(req.size, 'size'));
      return {};
    }),

    // proto3 cannot tell an absent string from "", and "" is the capsule root: where the root is
    // a valid target (stat, list, chmod), an empty path means the root rather than "missing".
    GetAttr: unary('GetAttr', async (req: w.WPathRequest) =>
      w.attrToWire(await store.getattr(v.required(req.ref, 'ref'), v.pathOrRoot(req.path), v.optNonNegative(req.version, 'version')))),
    ReadDir: unary('ReadDir', async (req: w.WPathRequest) => ({
      entries: (await store.readdir(v.required(req.ref, 'ref'), v.pathOrRoot(req.path), v.optNonNegative(req.version, 'version')))
        .map(w.direntToWire),
    })),
    Mkdir: unary('Mkdir', async (req: w.WModeRequest) =>
      w.attrToWire(await store.mkdir(v.required(req.ref, 'ref'), v.required(req.path, 'path'), v.optMode(req.mode)))),
    CreateFile: unary('CreateFile', async (req: w.WModeRequest) =>
      w.attrToWire(await store.createFile(v.required(req.ref, 'ref'), v.required(req.path, 'path'), v.optMode(req.mode)))),
    Unlink: unary('Unlink', async (req: w.WPathRequest) => {
      await store.unlink(v.required(req.ref, 'ref'), v.required(req.path, 'path'));
      return {};
    }),
    Rmdir: unary('Rmdir', async (req: w.WPathRequest) => {
      await store.rmdir(v.required(req.ref, 'ref'), v.required(req.path, 'path'));
      return {};
    }),
    Rename: unary('Rename', async (req: { ref: string; from: string; to: string }) => {
      await store.rename(v.required(req.ref, 'ref'), v.required(req.from, 'from'), v.required(req.to, 'to'));
      return {};
    }),
    SetAttr: unary('SetAttr', async (req: { ref: string; path: string; attr?: w.WSetAttr }) => {
      const a = w.setAttrFromWire(req.attr);
      v.optMode(a.mode, 'attr.mode');
      v.optNonNegative(a.uid, 'attr.uid');
      v.optNonNegative(a.gid, 'attr.gid');
      v.optNonNegative(a.size, 'attr.size');
      for (const k of ['atimeMs', 'mtimeMs'] as const) {
        if (a[k] !== undefined && !Number.isFinite(a[k])) throw invalid(`attr.${k} must be a finite number`);
      }
      return w.attrToWire(await store.setattr(v.required(req.ref, 'ref'), v.pathOrRoot(req.path), a));
    }),

    Snapshot: unary('Snapshot', async (req: { ref: string }) => ({ version: await store.snapshot(v.required(req.ref, 'ref')) })),
    Clone: unary('Clone', async (req: w.WCloneRequest) => {
      const ref = v.required(req.ref, 'ref');
      const id = v.optString(req.id, 'id');
      const name = v.optString(req.name, 'name');
      const version = v.optNonNegative(req.version, 'version');
      return w.infoToWire(await store.clone(ref, {
        ...(id !== undefined ? { id } : {}), ...(name !== undefined ? { name } : {}), ...(version !== undefined ? { version } : {}),
      }));
    }),
    Stat: unary('Stat', async (req: { ref: string }) => w.statToWire(await store.stat(v.required(req.ref, 'ref')))),
    StoreStat: unary('StoreStat', async () => w.storeStatToWire(await store.storeStat())),
    Gc: unary('Gc', async () => w.gcToWire(await store.gc())),
    Fsck: unary('Fsck', async () => w.fsckToWire(await store.fsck())),

    Watch: serverStream('Watch', async (_req: unknown, send: (m: w.WChangeEvent) => Promise<void>, signal, call) => {
      const ac = new AbortController();
      const stop = () => ac.abort(signal.reason);
      signal.addEventListener('abort', stop, { once: true });
      streams.add(ac);
      try {
        const it = store.watch(ac.signal)[Symbol.asyncIterator]();
        // Start the store's iterator (it subscribes on first pull), then send the response
        // headers: a client that waits for them knows no later change will be missed.
        const first = it.next();
        call.sendMetadata(new grpc.Metadata());
        for (let r = await first; !r.done; r = await it.next()) {
          await send(w.changeToWire(r.value));
        }
        // The store ends the feed when ac aborts; endStreams() aborts with a RawStatus.
        if (ac.signal.reason instanceof RawStatus) throw ac.signal.reason;
      } finally {
        signal.removeEventListener('abort', stop);
        streams.delete(ac);
      }
    }),

    Mount: unary('Mount', async (req: { ref: string; target: string; rw: boolean }) =>
      w.mountToWire(await needViews().mount({ ref: v.required(req.ref, 'ref'), target: v.required(req.target, 'target'), rw: !!req.rw }))),
    Unmount: unary('Unmount', async (req: { target: string }) => {
      await needViews().unmount(v.required(req.target, 'target'));
      return {};
    }),
    ListMounts: unary('ListMounts', async () => ({ mounts: needViews().list().map(w.mountToWire) })),

    Export: unary('Export', async (req: w.WExportRequest) => {
      const protocol = v.required(req.protocol, 'protocol');
      if (protocol !== 'nvme' && protocol !== 'nfs') throw new RawStatus(grpc.status.INVALID_ARGUMENT, `protocol must be nvme or nfs, got ${JSON.stringify(protocol)}`);
      const spec: ExportSpec = {
        protocol, ref: v.required(req.ref, 'ref'), readOnly: !!req.read_only, allowed: req.allowed ?? [],
        ...(req.name ? { name: req.name } : {}), ...(req.listen ? { listen: req.listen } : {}),
        ...(req.block_size ? { blockSize: req.block_size } : {}), ...(req.file ? { file: req.file } : {}),
      };
      return w.exportToWire(await needExports().export(spec));
    }),
    Unexport: unary('Unexport', async (req: { protocol: string; name: string }) => {
      const protocol = v.required(req.protocol, 'protocol');
      if (protocol !== 'nvme' && protocol !== 'nfs') throw new RawStatus(grpc.status.INVALID_ARGUMENT, `protocol must be nvme or nfs, got ${JSON.stringify(protocol)}`);
      await needExports().unexport(protocol, v.required(req.name, 'name'));
      return {};
    }),
    ListExports: unary('ListExports', async () => ({ exports: needExports().list().map(w.exportToWire) })),
  };

  /**
   * Put: the header names the file, then data chunks are handed to store.put as an async
   * iterable. The iterable pulls one message at a time from the call; grpc-js only reads from
   * the HTTP/2 stream when the Readable asks for more, so while the store is busy the client
   * is held back by flow control and memory stays bounded (a few chunks per call).
   */
  function putHandler(): grpc.handleClientStreamingCall<w.WPutRequest, w.WFileAttr> {
    return (call, callback) => {
      const done = timer('Put');
      const it = call[Symbol.asyncIterator]() as AsyncIterator<w.WPutRequest>;
      const run = async () => {
        const first = await it.next();
        if (first.done || !first.value.header) throw invalid('Put: the first message must be a header');
        const h = first.value.header;
        const ref = v.required(h.ref, 'header.ref');
        const path = v.required(h.path, 'header.path');
        const opts: PutOptions = {};
        const mode = v.optMode(h.mode, 'header.mode');
        if (mode !== undefined) opts.mode = mode;
        if (h.create) opts.createWith = v.createFromWire(h.create, 'header.create');
        async function* data(): AsyncGenerator<Uint8Array> {
          for (;;) {
            let n: IteratorResult<w.WPutRequest>;
            try {
              n = await it.next();
            } catch (err) {
              throw call.cancelled ? new Cancelled('client cancelled the upload') : err;
            }
            // A cancelled call ends its Readable; that is an aborted upload, not end-of-file.
            if (call.cancelled) throw new Cancelled('client cancelled the upload');
            if (n.done) return;
            if (n.value.msg !== 'data' || !Buffer.isBuffer(n.value.data)) throw invalid('Put: only data messages may follow the header');
            metrics?.bytesIn.inc(n.value.data.length);
            yield n.value.data;
          }
        }
        return w.attrToWire(await store.put(ref, path, data(), opts));
      };
      run().then(
        (attr) => { done('OK'); callback(null, attr); },
        (err: unknown) => {
          if (err instanceof Cancelled || call.cancelled) return done('CANCELLED');
          const st = statusOf('Put', err);
          done(grpc.status[st.code]);
          callback(st);
        },
      );
    };
  }

  return {
    implementation,
    endStreams() {
      for (const ac of streams) ac.abort(new RawStatus(grpc.status.UNAVAILABLE, 'gateway is shutting down'));
    },
  };
}

/** Write one message; if the client is slow, wait for 'drain' (or cancellation). */
function writeDrained<T>(call: grpc.ServerWritableStream<unknown, T>, msg: T, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(new Cancelled('client cancelled'));
  if (call.write(msg)) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const onDrain = () => { signal.removeEventListener('abort', onAbort); resolve(); };
    const onAbort = () => { call.off('drain', onDrain); reject(new Cancelled('client cancelled')); };
    call.once('drain', onDrain);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
