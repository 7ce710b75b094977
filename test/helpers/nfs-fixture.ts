import type { Store } from '../../capsule/store.js';
import type { NfsServer } from '../../gateway/nfs/server.js';
import { chunks } from './tmp.js';

/**
 * The capsule the NFS suites export: "photos" with readme.txt ("capsule over nfs\n"),
 * album/one.jpg (`photo`) and an empty directory.
 */
export async function seedPhotos(store: Store, photo: Buffer): Promise<void> {
  await store.create({ name: 'photos' });
  await store.put('photos', 'readme.txt', chunks(Buffer.from('capsule over nfs\n')));
  await store.put('photos', 'album/one.jpg', chunks(photo));
  await store.mkdir('photos', 'empty');
}

/** Export it twice: read-write as /photos, read-only as /archive/photos-ro. */
export async function exportPhotos(nfs: NfsServer): Promise<void> {
  await nfs.addExport({ ref: 'photos' });
  await nfs.addExport({ ref: 'photos', path: '/archive/photos-ro', readOnly: true });
}
