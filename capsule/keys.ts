/**
 * Key handling. A key-encryption key (KEK) wraps each capsule's data key and each encryption
 * domain's hash key. In standalone mode a KEK is a 32-byte file readable only by its owner
 * (0600), like an ssh private key; in a cluster the same bytes come from a Kubernetes Secret.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { SpaceError, invalid } from './errors.js';

export const KEY_BYTES = 32;

export interface KekProvider {
  /** The KEK named `ref`; created on first use when the provider allows it. */
  kek(ref: string): Buffer;
}

/** KEKs as files `<dir>/<ref>.kek` (mode 0600; looser permissions are refused). */
export class FileKekProvider implements KekProvider {
  private readonly cache = new Map<string, Buffer>();
  constructor(readonly dir: string, private readonly createMissing = true) {}

  kek(ref: string): Buffer {
    const hit = this.cache.get(ref);
    if (hit) return hit;
    if (!/^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$/.test(ref)) throw invalid(`bad key reference ${JSON.stringify(ref)}`);
    const file = path.join(this.dir, `${ref}.kek`);
    let key: Buffer;
    if (!fs.existsSync(file)) {
      if (!this.createMissing) throw new SpaceError('FAILED_PRECONDITION', `key-encryption key ${file} does not exist`);
      fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      key = crypto.randomBytes(KEY_BYTES);
      try {
        fs.writeFileSync(file, key, { mode: 0o600, flag: 'wx' });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
    }
    const st = fs.statSync(file);
    if ((st.mode & 0o077) !== 0) {
      throw new SpaceError('PERMISSION_DENIED', `key-encryption key ${file} has permissions ${(st.mode & 0o777).toString(8).padStart(4, '0')}; it must be 0600 (chmod 600 ${file})`);
    }
    key = fs.readFileSync(file);
    if (key.length !== KEY_BYTES) throw new SpaceError('FAILED_PRECONDITION', `key-encryption key ${file} must hold exactly ${KEY_BYTES} bytes (has ${key.length})`);
    this.cache.set(ref, key);
    return key;
  }
}

/** Wrap a key with AES-256-GCM under the KEK: nonce(12) | ciphertext(32) | tag(16). */
export function wrapKey(kek: Buffer, key: Buffer, label: string): Buffer {
  const nonce = crypto.randomBytes(12);
  const c = crypto.createCipheriv('aes-256-gcm', kek, nonce);
  c.setAAD(Buffer.from(label));
  const ct = Buffer.concat([c.update(key), c.final()]);
  return Buffer.concat([nonce, ct, c.getAuthTag()]);
}

export function unwrapKey(kek: Buffer, wrapped: Buffer, label: string): Buffer {
  try {
    const d = crypto.createDecipheriv('aes-256-gcm', kek, wrapped.subarray(0, 12));
    d.setAAD(Buffer.from(label));
    d.setAuthTag(wrapped.subarray(wrapped.length - 16));
    return Buffer.concat([d.update(wrapped.subarray(12, wrapped.length - 16)), d.final()]);
  } catch (e) {
    throw new SpaceError('PERMISSION_DENIED', `cannot unwrap ${label}: wrong key-encryption key or damaged key record`, { cause: e });
  }
}
