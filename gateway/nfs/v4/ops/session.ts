/**
 * Client and session operations: EXCHANGE_ID, CREATE_SESSION, DESTROY_SESSION,
 * DESTROY_CLIENTID, BIND_CONN_TO_SESSION, BACKCHANNEL_CTL, RECLAIM_COMPLETE (4.1), and the 4.0
 * ones: SETCLIENTID, SETCLIENTID_CONFIRM, RENEW, RELEASE_LOCKOWNER. SEQUENCE itself is part of
 * the COMPOUND loop (compound.ts), since it decides whether the rest runs at all.
 *
 * The server offers no back channel: it grants no delegations and no layouts, so it never has
 * anything to call back about, and CREATE_SESSION says so by not setting CONN_BACK_CHAN.
 */
import { NfsError } from '../../status.js';
import { XdrWriter, type XdrReader } from '../../xdr.js';
import { readBitmap } from '../attrs4.js';
import type { OpDef, OpResult } from '../compound.js';
import {
  ChannelDir, ChannelDirRes, ExchgIdFlag, NFS4_OPAQUE_LIMIT, NFS4_SESSIONID_SIZE, Op, StateProtect, Status4,
} from '../constants.js';
import type { ChannelAttrs } from '../state.js';

const OK: OpResult = { status: Status4.OK };

function readChannelAttrs(r: XdrReader): ChannelAttrs {
  return {
    headerPadSize: r.uint32(),
    maxRequestSize: r.uint32(),
    maxResponseSize: r.uint32(),
    maxResponseSizeCached: r.uint32(),
    maxOperations: r.uint32(),
    maxRequests: r.uint32(),
    rdmaIrd: r.array((x) => x.uint32(), 1),
  };
}

function writeChannelAttrs(w: XdrWriter, a: ChannelAttrs): void {
  w.uint32(a.headerPadSize).uint32(a.maxRequestSize).uint32(a.maxResponseSize).uint32(a.maxResponseSizeCached);
  w.uint32(a.maxOperations).uint32(a.maxRequests);
  w.array(a.rdmaIrd, (x, v) => x.uint32(v), 1);
}

/** callback_sec_parms4 (decoded only to be skipped: there are no callbacks). */
function skipCallbackSec(r: XdrReader): void {
  const flavor = r.uint32();
  if (flavor === 0) return; // AUTH_NONE
  if (flavor === 1) {
    r.uint32(); // stamp
    r.string(255); // machine name
    r.uint32();
    r.uint32();
    r.array((x) => x.uint32(), 16);
    return;
  }
  if (flavor === 6) {
    r.uint32(); // service
    r.opaque(NFS4_OPAQUE_LIMIT);
    r.opaque(NFS4_OPAQUE_LIMIT);
    return;
  }
  throw new NfsError(Status4.INVAL, `callback security flavor ${flavor} is not known`);
}

const MIN_REQUEST = 1024;

export function sessionOps(): Map<number, OpDef> {
  const ops = new Map<number, OpDef>();

  ops.set(Op.EXCHANGE_ID, {
    handler: (c, r) => {
      const verifier = r.fixedOpaque(8);
      const ownerId = r.opaque(NFS4_OPAQUE_LIMIT);
      const flags = r.uint32();
      const how = r.enum([StateProtect.NONE, StateProtect.MACH_CRED, StateProtect.SSV]);
      if (how === StateProtect.MACH_CRED) {
        readBitmap(r);
        readBitmap(r);
      } else if (how === StateProtect.SSV) {
        readBitmap(r);
        readBitmap(r);
        r.array((x) => x.opaque(NFS4_OPAQUE_LIMIT), 64);
        r.array((x) => x.opaque(NFS4_OPAQUE_LIMIT), 64);
        r.uint32();
        r.uint32();
      }
      r.array((x) => {
        x.string(NFS4_OPAQUE_LIMIT);
        x.string(NFS4_OPAQUE_LIMIT);
        x.hyper();
        x.uint32();
      }, 1);
      if (how === StateProtect.SSV) return { status: Status4.ENCR_ALG_UNSUPP };
      if (ownerId.length === 0) return { status: Status4.INVAL };
      // Undefined flag bits are the client's error (RFC 8881 section 18.35.3).
      const known = ExchgIdFlag.SUPP_MOVED_REFER | ExchgIdFlag.SUPP_MOVED_MIGR | ExchgIdFlag.BIND_PRINC_STATEID | ExchgIdFlag.MASK_PNFS | ExchgIdFlag.UPD_CONFIRMED_REC_A;
      if ((flags & ~known) !== 0) return { status: Status4.INVAL };
      const client = c.state.exchangeId(ownerId, verifier, (flags & ExchgIdFlag.UPD_CONFIRMED_REC_A) !== 0, c.minor);
      const rflags = (ExchgIdFlag.USE_NON_PNFS | (client.confirmed ? ExchgIdFlag.CONFIRMED_R : 0)) >>> 0;
      const owner = c.state.serverOwner;
      c.ctx.log.debug('nfs4.exchange_id', { client: client.clientid.toString(16), confirmed: client.confirmed, peer: c.address });
      return {
        status: Status4.OK,
        body: (w) => {
          w.uint64(client.clientid).uint32((client.csSeq + 1) >>> 0).uint32(rflags);
          w.uint32(StateProtect.NONE);
          w.uint64(0).opaque(owner); // server_owner4: one server, however many addresses
          w.opaque(owner); // server_scope
          w.uint32(1).string('space').string('space-nfs').hyper(0).uint32(0);
        },
      };
    },
  });

  ops.set(Op.CREATE_SESSION, {
    handler: (c, r) => {
      const clientid = r.uint64n();
      const seq = r.uint32();
      const flags = r.uint32();
      const fore = readChannelAttrs(r);
      const back = readChannelAttrs(r);
      r.uint32(); // cb_program
      r.array((x) => skipCallbackSec(x), 16);
      const client = c.state.client(clientid);
      if (client.confirmed && seq === client.csSeq && client.csReply) {
        const cached = client.csReply;
        return { status: Status4.OK, body: (w) => w.raw(cached) };
      }
      if (seq !== ((client.csSeq + 1) >>> 0)) return { status: Status4.SEQ_MISORDERED };
      const lim = c.env.limits;
      if (fore.maxRequestSize < MIN_REQUEST || fore.maxResponseSize < MIN_REQUEST || fore.maxRequests === 0) return { status: Status4.TOOSMALL };
      const f: ChannelAttrs = {
        headerPadSize: 0,
        maxRequestSize: Math.min(fore.maxRequestSize, lim.maxRequest),
        maxResponseSize: Math.min(fore.maxResponseSize, lim.maxResponse),
        maxResponseSizeCached: Math.min(fore.maxResponseSizeCached, lim.replyCacheBytes),
        maxOperations: Math.min(Math.max(fore.maxOperations, 2), lim.maxOps),
        maxRequests: Math.min(fore.maxRequests, c.state.maxSlots),
        rdmaIrd: [],
      };
      const b: ChannelAttrs = {
        headerPadSize: 0,
        maxRequestSize: Math.min(back.maxRequestSize, lim.maxRequest),
        maxResponseSize: Math.min(back.maxResponseSize, lim.maxResponse),
        maxResponseSizeCached: Math.min(back.maxResponseSizeCached, lim.replyCacheBytes),
        maxOperations: Math.min(back.maxOperations, lim.maxOps),
        maxRequests: Math.max(1, Math.min(back.maxRequests, 16)),
        rdmaIrd: [],
      };
      void flags; // neither persistent reply caches, RDMA nor a back channel are offered
      c.state.confirm(client);
      client.csSeq = seq;
      const s = c.state.createSession(client, f, b, 0);
      c.ctx.log.info('nfs4.session.created', { client: client.clientid.toString(16), session: s.key, slots: f.maxRequests, peer: c.address });
      const body = new XdrWriter(128);
      body.fixedOpaque(s.id).uint32(seq).uint32(0);
      writeChannelAttrs(body, f);
      writeChannelAttrs(body, b);
      const encoded = body.toBuffer();
      client.csReply = encoded;
      return { status: Status4.OK, body: (w) => w.raw(encoded) };
    },
  });

  ops.set(Op.DESTROY_SESSION, {
    handler: (c, r) => {
      const id = r.fixedOpaque(NFS4_SESSIONID_SIZE);
      const s = c.state.session(id);
      c.state.destroySession(s);
      return OK;
    },
  });

  ops.set(Op.DESTROY_CLIENTID, {
    handler: (c, r) => {
      const id = r.uint64n();
      const client = c.state.client(id);
      // The session carrying this very request does not count (RFC 8881 section 18.50.3).
      const others = [...client.sessions.values()].filter((s) => s !== c.session);
      if (others.length > 0 || client.opens.size > 0) return { status: Status4.CLIENTID_BUSY };
      c.state.destroyClient(client);
      return OK;
    },
  });

  ops.set(Op.BIND_CONN_TO_SESSION, {
    handler: (c, r) => {
      const id = r.fixedOpaque(NFS4_SESSIONID_SIZE);
      const dir = r.enum([ChannelDir.FORE, ChannelDir.BACK, ChannelDir.FORE_OR_BOTH, ChannelDir.BACK_OR_BOTH]);
      r.bool();
      const s = c.state.session(id);
      // Connections are not bound to sessions here (any connection may carry any session), so
      // binding always succeeds for the fore channel; there is no back channel to bind.
      if (dir === ChannelDir.BACK) return { status: Status4.INVAL };
      c.state.renew(s.client);
      return { status: Status4.OK, body: (w) => w.fixedOpaque(s.id).uint32(ChannelDirRes.FORE).bool(false) };
    },
  });

  ops.set(Op.BACKCHANNEL_CTL, {
    handler: (_c, r) => {
      r.uint32();
      r.array((x) => skipCallbackSec(x), 16);
      return OK;
    },
  });

  ops.set(Op.RECLAIM_COMPLETE, {
    handler: (c, r) => {
      const oneFs = r.bool();
      const client = c.client;
      if (!client) return { status: Status4.OP_NOT_IN_SESSION };
      if (oneFs) return OK; // per-file-system reclaims: nothing kept, nothing to finish
      if (client.reclaimComplete) return { status: Status4.COMPLETE_ALREADY };
      client.reclaimComplete = true;
      return OK;
    },
  });

  // ---------------------------------------------------------------- 4.0

  ops.set(Op.SETCLIENTID, {
    handler: (c, r) => {
      const verifier = r.fixedOpaque(8);
      const id = r.opaque(NFS4_OPAQUE_LIMIT);
      r.uint32(); // cb_program
      r.string(NFS4_OPAQUE_LIMIT); // r_netid
      r.string(NFS4_OPAQUE_LIMIT); // r_addr
      r.uint32(); // callback_ident
      if (id.length === 0) return { status: Status4.INVAL };
      const client = c.state.setClientId(id, verifier);
      const confirm = client.confirmVerifier!;
      return { status: Status4.OK, body: (w) => w.uint64(client.clientid).fixedOpaque(confirm) };
    },
  });

  ops.set(Op.SETCLIENTID_CONFIRM, {
    handler: (c, r) => {
      const id = r.uint64n();
      const verf = r.fixedOpaque(8);
      c.client = c.state.setClientIdConfirm(id, verf);
      return OK;
    },
  });

  ops.set(Op.RENEW, {
    handler: (c, r) => {
      const id = r.uint64n();
      const client = c.state.client(id);
      if (c.state.expired(client)) {
        c.state.destroyClient(client);
        return { status: Status4.EXPIRED };
      }
      c.state.renew(client);
      return OK;
    },
  });

  ops.set(Op.RELEASE_LOCKOWNER, {
    handler: (c, r) => {
      const id = r.uint64n();
      const owner = r.opaque(NFS4_OPAQUE_LIMIT);
      const client = c.state.client(id);
      c.state.renew(client);
      const lo = client.lockOwners.get(owner.toString('hex'));
      if (!lo) return OK;
      for (const l of lo.states) if (l.ranges.length > 0) return { status: Status4.LOCKS_HELD };
      for (const l of [...lo.states]) c.state.dropLock(l);
      return OK;
    },
  });

  return ops;
}
