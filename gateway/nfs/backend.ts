/**
 * What the NFS view needs from the store. `Store` (capsule/store.ts) satisfies it; the narrower
 * type keeps the protocol modules testable and says which store features the view relies on.
 */
import type { EventEmitter } from 'node:events';
import type { CapsuleApi } from '../../capsule/api.js';
import type { BufferedWriteOptions, FileAttr } from '../../capsule/types.js';
import type { HeldBytes } from '../../capsule/segment-pool.js';

export type NfsStore = Pick<
  CapsuleApi,
  'get' | 'getattr' | 'readdir' | 'read' | 'truncate' | 'mkdir' | 'createFile' | 'unlink' | 'rmdir' | 'rename' | 'setattr'
> & {
  /**
   * Write into the store's dirty-segment buffer; durable only after flush. WRITE adopts its data
   * (a view of a record received for that call alone) and passes the record's release when
   * its memory is reusable (RpcCall.recycleRecord).
   */
  writeBuffered(ref: string, path: string, offset: number, data: Uint8Array, opts?: BufferedWriteOptions): Promise<number>;
  flush(ref: string, path?: string): Promise<void>;
  /**
   * READ's bytes, borrowed: released once the reply carrying them is written, so the store may
   * reuse the memory under them (capsule/segment-pool.ts).
   */
  readHeld(ref: string, path: string, offset: number, length: number): Promise<HeldBytes>;
  /** getattr, or undefined for a path that does not exist (optional: else getattr's NOENT is caught). */
  getattrIfExists?(ref: string, path: string): Promise<FileAttr | undefined>;
  /** The same when the bytes are already in memory, without a promise (undefined: use readHeld). */
  tryReadSyncHeld?(ref: string, path: string, offset: number, length: number): HeldBytes | undefined;
  /**
   * Deallocate a range (reads as zeros, size unchanged): NFSv4.2 DEALLOCATE. Optional: without
   * it DEALLOCATE answers NOTSUPP.
   */
  punchHole?(ref: string, path: string, offset: number, length: number): Promise<void>;
  /** 'change' events (ChangeEvent): how the view learns of renames and deletes by other front ends. */
  readonly events?: EventEmitter;
  /** The data dir, whose free space FSSTAT reports. */
  readonly dir?: string;
  /**
   * Optional: the live path of an inode ("" for the root), or undefined when it does not exist.
   * The store does not offer this yet; with it, a handle unknown to the view (first use after a
   * restart) resolves in one lookup instead of a walk of the capsule's tree.
   */
  inodePath?(ref: string, ino: number): string | undefined;
};
