import type Database from 'better-sqlite3';
import type { Store } from '../../capsule/store.js';

/**
 * The store's own metadata connection, for tests that check what is committed. While a store is
 * open it holds meta.db exclusively (capsule/schema.ts): a second connection cannot read it.
 * Between awaits no transaction is open on it, so it shows exactly what is committed.
 */
export function storeDb(store: Store): Database.Database {
  return (store as unknown as { db: Database.Database }).db;
}
