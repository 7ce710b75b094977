import fs from 'node:fs';
import path from 'node:path';

/** Whether this directory's filesystem enforces O_DIRECT alignment (ext4, xfs: yes). */
export function enforcesAlignment(dir: string): boolean {
  const f = path.join(dir, 'probe');
  const fd = fs.openSync(f, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_DIRECT, 0o600);
  try {
    fs.writeSync(fd, Buffer.from(new WebAssembly.Memory({ initial: 1 }).buffer).subarray(1, 1 + 4096), 0, 4096, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EINVAL';
  } finally {
    fs.closeSync(fd);
    fs.rmSync(f, { force: true });
  }
}
