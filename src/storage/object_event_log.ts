/**
 * An append-only, totally ordered log in an object store, safe for any
 * number of writers on a store whose only atomic conditional write is
 * create-if-absent (Ceph RGW 16.2; AWS S3, MinIO and R2 too).
 *
 * Event `N` is the object `<prefix>/events/<N, 16 digits>`, created with
 * `If-None-Match: *`. A writer lists the events after the last one it knows,
 * tries the next number, and on "exists" lists again and tries the next:
 * every event gets exactly one sequence number, no event overwrites another
 * and none is lost. A writer tries `N + 1` only after it saw `N`, so the log
 * has no holes except those pruning makes at its start (a reader reads
 * every number up to the highest listed by key, so a listing that lags
 * behind an object cannot make one).
 *
 * A snapshot `<prefix>/snapshots/<S>` holds the state after event `S`; a
 * reader loads the newest snapshot and the events after it. {@linkcode
 * ObjectEventLog.prune} deletes events at or below an older snapshot once
 * they are older than a grace period, always keeping the newest event, so a
 * writer never sees an empty log below the head; a reader that finds a hole
 * after its snapshot reloads the newest one. See docs/object_storage.md.
 *
 * @module
 */

import { ObjectExistsError, type ObjectStore } from "./object_store.ts";
import { mapLimited } from "../map_limited.ts";

/** One event of the log. */
export interface LogEvent<E> {
  /** Sequence number, from 1. */
  seq: number;
  /** Unique id given by the writer. */
  id: string;
  /** When the writer appended it (the writer's clock, ISO 8601). */
  time: string;
  /** The caller's payload. */
  payload: E;
}

/** The state after an event, as stored in a snapshot. */
export interface LogSnapshot<S> {
  /** The last event applied. */
  seq: number;
  /** The caller's state. */
  state: S;
}

/** Options for {@linkcode ObjectEventLog}. */
export interface ObjectEventLogOptions {
  /**
   * Events are only pruned once they are this old (ms, by the store's
   * LastModified against the local clock); a writer must finish an append
   * within it.
   * @default {3600000}
   */
  pruneGraceMs?: number;
  /**
   * Appends lost to other writers in a row before the append fails.
   * @default {1000}
   */
  maxConflicts?: number;
}

/** Thrown when an append lost `maxConflicts` races in a row. */
export class LogContentionError extends Error {
  constructor(prefix: string, conflicts: number) {
    super(`Cannot append to ${prefix}: lost ${conflicts} races in a row to other writers`);
    this.name = "LogContentionError";
  }
}

const SEQ_DIGITS = 16;

function seqName(seq: number): string {
  return String(seq).padStart(SEQ_DIGITS, "0");
}

function seqOf(key: string): number | undefined {
  const name = key.slice(key.lastIndexOf("/") + 1);
  return /^\d{16}$/.test(name) ? Number(name) : undefined;
}

/**
 * A log of JSON events `E` with snapshots of a JSON state `S`, under one key prefix.
 *
 * @example Usage
 * ```ts ignore
 * import { ObjectEventLog } from "./object_event_log.ts";
 * const log = new ObjectEventLog<{ add: string }, string[]>(store, ".index/linux-64");
 * const { seq } = await log.append({ add: "foo-1.0-0.conda" });
 * const { state } = await log.load([], (names, event) => [...names, event.payload.add]);
 * ```
 */
export class ObjectEventLog<E, S> {
  readonly #store: ObjectStore;
  readonly #prefix: string;
  readonly #pruneGraceMs: number;
  readonly #maxConflicts: number;
  /** The highest sequence number this instance knows to exist. */
  #knownHead = 0;

  constructor(store: ObjectStore, prefix: string, options: ObjectEventLogOptions = {}) {
    this.#store = store;
    this.#prefix = prefix.replace(/\/+$/, "");
    this.#pruneGraceMs = options.pruneGraceMs ?? 3_600_000;
    this.#maxConflicts = options.maxConflicts ?? 1000;
  }

  #eventKey(seq: number): string {
    return `${this.#prefix}/events/${seqName(seq)}`;
  }

  #snapshotKey(seq: number): string {
    return `${this.#prefix}/snapshots/${seqName(seq)}`;
  }

  /** Highest event number in the store (0 for an empty log). */
  async head(): Promise<number> {
    const options = this.#knownHead > 0 ? { startAfter: this.#eventKey(this.#knownHead) } : {};
    for await (const info of this.#store.list(`${this.#prefix}/events/`, options)) {
      const seq = seqOf(info.key);
      if (seq !== undefined && seq > this.#knownHead) this.#knownHead = seq;
    }
    return this.#knownHead;
  }

  /** Appends an event; returns its sequence number once it is durably in the log. */
  async append(payload: E): Promise<LogEvent<E>> {
    const event = { seq: 0, id: crypto.randomUUID(), time: new Date().toISOString(), payload };
    let conflicts = 0;
    let next = await this.head() + 1;
    while (true) {
      event.seq = next;
      try {
        await this.#store.put(
          this.#eventKey(next),
          new TextEncoder().encode(JSON.stringify(event)),
          { createOnly: true, contentType: "application/json" },
        );
        if (next > this.#knownHead) this.#knownHead = next;
        return event;
      } catch (error) {
        if (!(error instanceof ObjectExistsError)) throw error;
      }
      if (++conflicts >= this.#maxConflicts) {
        throw new LogContentionError(this.#prefix, conflicts);
      }
      if (next > this.#knownHead) this.#knownHead = next;
      // No growing backoff: a loser that waits longer after each loss falls
      // ever further behind the winners and starves (capture effect).
      next = await this.head() + 1;
    }
  }

  /**
   * The events after `afterSeq`, in order. Returns `hole: true` (and the
   * events after the hole) when events right after `afterSeq` were pruned:
   * the caller must start again from the newest snapshot.
   *
   * The listing only tells how far the log goes: every number from
   * `afterSeq + 1` to the highest listed is read by key, so an event whose
   * listing entry lags behind its object (RGW completes bucket-index
   * entries asynchronously) is still read, in order.
   */
  async eventsAfter(afterSeq: number): Promise<{ events: LogEvent<E>[]; hole: boolean }> {
    let last = afterSeq;
    const options = afterSeq > 0 ? { startAfter: this.#eventKey(afterSeq) } : {};
    for await (const info of this.#store.list(`${this.#prefix}/events/`, options)) {
      const seq = seqOf(info.key);
      if (seq !== undefined && seq > last) last = seq;
    }
    const seqs = Array.from({ length: last - afterSeq }, (_, index) => afterSeq + 1 + index);
    const events = await mapLimited(seqs, 8, async (seq) => {
      const got = await this.#store.getBytes(this.#eventKey(seq));
      if (got === undefined) return undefined; // pruned
      return JSON.parse(new TextDecoder().decode(got.bytes)) as LogEvent<E>;
    });
    const present = events.filter((event): event is LogEvent<E> => event !== undefined);
    if (last > this.#knownHead) this.#knownHead = last;
    return { events: present, hole: present.length !== seqs.length };
  }

  /** The newest snapshot, or undefined when there is none. */
  async latestSnapshot(): Promise<LogSnapshot<S> | undefined> {
    let newest: number | undefined;
    for await (const info of this.#store.list(`${this.#prefix}/snapshots/`)) {
      const seq = seqOf(info.key);
      if (seq !== undefined) newest = seq;
    }
    if (newest === undefined) return undefined;
    const got = await this.#store.getBytes(this.#snapshotKey(newest));
    if (got === undefined) return undefined;
    return JSON.parse(new TextDecoder().decode(got.bytes)) as LogSnapshot<S>;
  }

  /**
   * Stores the state after event `snapshot.seq`. Any writer may; the state
   * after an event is the same for all, so a snapshot that is already there
   * is left as it is.
   */
  async writeSnapshot(snapshot: LogSnapshot<S>): Promise<void> {
    try {
      await this.#store.put(
        this.#snapshotKey(snapshot.seq),
        new TextEncoder().encode(JSON.stringify(snapshot)),
        { createOnly: true, contentType: "application/json" },
      );
    } catch (error) {
      if (!(error instanceof ObjectExistsError)) throw error;
    }
  }

  /**
   * The current state: the newest snapshot (or `initial`) with every later
   * event applied by `apply`, which must be deterministic.
   */
  async load(
    initial: S,
    apply: (state: S, event: LogEvent<E>) => S,
  ): Promise<LogSnapshot<S>> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const snapshot = await this.latestSnapshot() ?? { seq: 0, state: initial };
      const { events, hole } = await this.eventsAfter(snapshot.seq);
      if (hole) continue; // pruned under us: a newer snapshot covers it
      let state = snapshot.state;
      for (const event of events) state = apply(state, event);
      return { seq: events.at(-1)?.seq ?? snapshot.seq, state };
    }
    throw new Error(`Cannot load ${this.#prefix}: events keep being pruned while read`);
  }

  /**
   * Deletes the events and snapshots that the newest snapshot made
   * unnecessary and that are older than the grace period. The newest event
   * and the newest snapshot are always kept. Returns how many objects were
   * deleted.
   */
  async prune(): Promise<number> {
    const snapshots: { seq: number; key: string; age: number }[] = [];
    for await (const info of this.#store.list(`${this.#prefix}/snapshots/`)) {
      const seq = seqOf(info.key);
      if (seq !== undefined) {
        snapshots.push({ seq, key: info.key, age: Date.now() - info.lastModified.getTime() });
      }
    }
    const newest = snapshots.at(-1);
    if (newest === undefined) return 0;
    const doomed: string[] = snapshots.slice(0, -1)
      .filter((snapshot) => snapshot.age > this.#pruneGraceMs).map((snapshot) => snapshot.key);
    const head = await this.head();
    for await (const info of this.#store.list(`${this.#prefix}/events/`)) {
      const seq = seqOf(info.key);
      if (seq === undefined || seq > newest.seq || seq >= head) break;
      if (Date.now() - info.lastModified.getTime() > this.#pruneGraceMs) doomed.push(info.key);
    }
    await mapLimited(doomed, 8, (key) => this.#store.delete(key));
    return doomed.length;
  }
}
