/**
 * Prompt reclamation of segments that lost their last reference.
 *
 * A filesystem frees a file's blocks when the file is truncated or removed; the store used to keep
 * unreferenced segments until someone ran `gc`. Overwriting a 1 GiB file therefore held 2 GiB
 * until then, and new segment files kept landing in fresh page-cache memory instead of the pages
 * the old ones just gave back. Here every segment whose extent row goes away (delete, truncate,
 * overwrite, punch, capsule removal) is noted by a connection-local trigger, and once the store is
 * quiet the noted segments that nothing references any more are deleted, rows and files, the same
 * way `gc` deletes them. `gc` stays the complete sweep (this only looks at what was noted since
 * the store opened).
 *
 * "Quiet" means no buffered writes and no segment encodes in flight: an encode may be about to
 * reference a segment with the same content (dedup), and a buffered write may still merge with a
 * committed segment it has not loaded yet. Segments being loaded or pinned by an uncommitted
 * write are skipped and looked at again next time.
 */
import type Database from 'better-sqlite3';

/** How soon to look again when the store was busy writing. */
const RETRY_MS = 100;
/**
 * Segments looked at per run. The unlinks are synchronous (see run()); deleting a large capsule
 * frees many thousands of segments, and one run for all of them would stall every view served
 * from this event loop. The rest follows in the next turns.
 */
const BATCH = 256;

export interface ReclaimHost {
  /** No buffered writes and no encodes in flight: nothing can pick up an unreferenced segment. */
  quiet(): boolean;
  /** Pinned by an uncommitted write, or being loaded by a reader. */
  busy(id: string): boolean;
  /** Delete the segment's file (and any cached plaintext); returns the bytes freed. */
  removeFile(id: string): number;
}

export interface ReclaimReport {
  segmentsRemoved: number;
  bytesFreed: number;
}

export class SegmentReclaimer {
  private scheduled = false;
  private running = false;
  private readonly noted: Database.Statement;
  private readonly anyNoted: Database.Statement;
  private readonly forget: Database.Statement;
  private readonly referenced: Database.Statement;
  private readonly deleteRow: Database.Statement;

  constructor(private readonly db: Database.Database, private readonly host: ReclaimHost, private readonly onReclaimed: (r: ReclaimReport) => void) {
    // TEMP: per connection, never persisted, so no schema change. A crash loses the notes; the
    // segments then wait for `gc`, which is what happened before.
    db.exec(`
      CREATE TEMP TABLE IF NOT EXISTS freed_segments (seg TEXT PRIMARY KEY) WITHOUT ROWID;
      CREATE TEMP TRIGGER IF NOT EXISTS note_freed_on_delete AFTER DELETE ON main.extents
        BEGIN INSERT OR IGNORE INTO freed_segments (seg) VALUES (old.seg); END;
      CREATE TEMP TRIGGER IF NOT EXISTS note_freed_on_update AFTER UPDATE OF seg ON main.extents WHEN old.seg <> new.seg
        BEGIN INSERT OR IGNORE INTO freed_segments (seg) VALUES (old.seg); END;
    `);
    this.noted = db.prepare(`SELECT seg FROM temp.freed_segments LIMIT ${BATCH}`).pluck();
    this.anyNoted = db.prepare('SELECT 1 FROM temp.freed_segments LIMIT 1').pluck();
    this.forget = db.prepare('DELETE FROM temp.freed_segments WHERE seg = ?');
    this.referenced = db.prepare('SELECT 1 FROM main.extents WHERE seg = ? LIMIT 1').pluck();
    this.deleteRow = db.prepare('DELETE FROM main.segments WHERE id = ?');
  }

  /** After a metadata change: look at the noted segments soon (once per event-loop turn). */
  schedule(): void {
    if (this.scheduled || this.running) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.run();
    });
  }

  private retrying = false;

  private retryLater(): void {
    if (this.retrying) return;
    this.retrying = true;
    setTimeout(() => {
      this.retrying = false;
      this.schedule();
    }, RETRY_MS).unref();
  }

  /**
   * Delete the noted segments nothing references. Synchronous from the row deletes to the
   * unlinks, like `gc`: no put can see a row gone while its file is still there.
   */
  run(): ReclaimReport {
    return this.runBatch().report;
  }

  /** Every batch, until nothing noted can be settled now (store.reclaim(), close()). */
  runAll(): ReclaimReport {
    const total = { segmentsRemoved: 0, bytesFreed: 0 };
    for (;;) {
      const { report, settled } = this.runBatch();
      total.segmentsRemoved += report.segmentsRemoved;
      total.bytesFreed += report.bytesFreed;
      if (settled === 0) return total;
    }
  }

  /** One batch; `settled`: noted segments dealt with (deleted, or found still referenced). */
  private runBatch(): { report: ReclaimReport; settled: number } {
    const none = { report: { segmentsRemoved: 0, bytesFreed: 0 }, settled: 0 };
    if (this.running || !this.db.open || !this.anyNoted.get()) return none;
    if (!this.host.quiet()) {
      this.retryLater(); // writes in progress: the store may go quiet without another change
      return none;
    }
    this.running = true;
    let more = false;
    try {
      const ids = this.noted.all() as string[];
      if (!ids.length) return none;
      const victims: string[] = [];
      let settled = 0;
      this.db.transaction(() => {
        for (const id of ids) {
          if (this.host.busy(id)) continue; // still noted: next time
          this.forget.run(id);
          settled++;
          if (this.referenced.get(id)) continue; // shared with a snapshot, a clone or another file
          this.deleteRow.run(id);
          victims.push(id);
        }
      })();
      let bytesFreed = 0;
      for (const id of victims) bytesFreed += this.host.removeFile(id);
      const r = { segmentsRemoved: victims.length, bytesFreed };
      if (victims.length) this.onReclaimed(r);
      // A full batch: more may be noted (next turn). Nothing settled: all busy (retry later).
      if (settled === 0) this.retryLater();
      else more = ids.length === BATCH;
      return { report: r, settled };
    } finally {
      this.running = false;
      if (more) this.schedule();
    }
  }
}
