/**
 * The write cycle of the built-in index: a queue of index changes applied
 * in coalesced cycles. At most one cycle runs at a time; whatever arrives
 * meanwhile is batched into the next cycle, which writes each touched
 * subdir once (see `subdir_files.ts` for what a subdir write is). Every
 * cycle holds the channel's cross-process lock and first re-reads any
 * index file another process changed (by size and mtime), so servers
 * sharing a channel never lose each other's records.
 *
 * A subdir whose write fails is rolled back in memory (and its files
 * rewritten from memory as far as possible) and its requests rejected.
 *
 * The auxiliary files (`index.html`, `channeldata.json`: not synced, read by
 * people and tools, not by installers) follow behind: a cycle writes them
 * after it has answered its requests, and at most every
 * `AUXILIARY_INTERVAL_MS`; a change a cycle could not write them for is
 * written by a cycle a timer starts, so they show every change about that
 * time later (a write that fails is tried again after `AUXILIARY_RETRY_MS`),
 * and at once after {@linkcode IndexWriteCycle.flush}. A subdir's
 * first write writes them before answering (a subdir is never without its
 * `index.html`, nor missing from `channeldata.json`).
 *
 * @module
 */

import type { Logger } from "../log.ts";
import { isSubdirName } from "../package/platforms.ts";
import type { ChannelEntry, ChannelStore } from "../storage/channel_store.ts";
import { Channeldata, type ChanneldataInput } from "./channeldata.ts";
import { newSubdirState, SubdirFiles, type SubdirState } from "./subdir_files.ts";
import { type IndexedPackage, sameBytes, SubdirIndex } from "./subdir_index.ts";

/** One change to a subdir's index. */
export type IndexOp =
  /**
   * `syncName`: the package was just put in place without a sync of its
   * directory, so the subdir is written (and its directory synced) even when
   * its record is unchanged.
   */
  | { kind: "add"; pkg: IndexedPackage; syncName?: boolean }
  | { kind: "remove"; filename: string; onlyIfFileGone: boolean }
  | { kind: "write" };

/** Options for {@linkcode IndexWriteCycle}. */
export interface IndexWriteCycleOptions {
  /** Where write failures and unreadable files are logged. */
  logger: Logger;
  /** Writes and reads subdirs' files. */
  files: SubdirFiles;
}

const CHANNELDATA = "channeldata.json";
/** Least time between two writes of the auxiliary files (ms); about the most they lag behind. */
export const AUXILIARY_INTERVAL_MS = 250;
/** When a write of the auxiliary files failed, the wait before the next try (ms). */
const AUXILIARY_RETRY_MS = 5_000;
const decoder = new TextDecoder();

interface _Request {
  /** Undefined for a request that only makes a cycle run (refresh from disk). */
  subdir: string | undefined;
  op: IndexOp | undefined;
  /** Write the auxiliary files in this cycle whatever their age (see flush()). */
  flush?: boolean;
  resolve(result: boolean): void;
  reject(error: unknown): void;
}

/** What one cycle did to one subdir, enough to undo it. */
interface _Applied {
  group: _Request[];
  /** Undefined when the subdir has no index and nothing was to be added. */
  state: SubdirState | undefined;
  results: boolean[];
  undo: { filename: string; previous: IndexedPackage | undefined }[];
  /** Package names whose records changed. */
  names: Set<string>;
  /** Whether the subdir's files are to be written. */
  write: boolean;
  /** Set when writing them failed. */
  error?: PromiseRejectedResult;
}

/** The queue and write cycles of the built-in index. */
export class IndexWriteCycle {
  #storage: ChannelStore;
  #logger: Logger;
  #files: SubdirFiles;
  #subdirs = new Map<string, SubdirState>();
  #channeldata = new Channeldata();
  #channeldataStat: ChannelEntry | undefined;
  #channeldataText: string | undefined;
  #channeldataRebuild = true;
  #pending: _Request[] = [];
  /** The run of write cycles under way, until the queue is empty and the lock released. */
  #draining: Promise<void> | undefined;
  #writeCount = 0;
  /** Package names whose `channeldata.json` entries are not written yet. */
  #channeldataTouched = new Set<string>();
  /** Subdirs whose `index.html` is not written yet. */
  #htmlDue = new Set<string>();
  #auxiliaryWrittenAt = -Infinity;
  #auxiliaryWriteCount = 0;
  /** The timer that starts a cycle to write the auxiliary files. */
  #auxiliaryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Set by {@linkcode close}: requests are refused, no timer is armed. */
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(storage: ChannelStore, options: IndexWriteCycleOptions) {
    this.#storage = storage;
    this.#logger = options.logger;
    this.#files = options.files;
  }

  /** The subdirs held in memory (read-only use: reconcile's comparison). */
  get subdirs(): ReadonlyMap<string, SubdirState> {
    return this.#subdirs;
  }

  /** Whether `channeldata.json` was found on disk. */
  get hasChanneldata(): boolean {
    return this.#channeldataStat !== undefined;
  }

  /** How many times a subdir's index files have been written. */
  get writeCount(): number {
    return this.#writeCount;
  }

  /** How many times the auxiliary files (`index.html`, `channeldata.json`) were written. */
  get auxiliaryWriteCount(): number {
    return this.#auxiliaryWriteCount;
  }

  /**
   * Loads what is on disk (without the lock: at start-up, before any write).
   * The first auxiliary write rebuilds `channeldata.json` whole, so one left
   * behind by a process stopped in the moments it lags is caught up.
   */
  async load(): Promise<void> {
    await this.#syncFromDisk();
    await this.#syncChanneldata();
  }

  /**
   * Writes the auxiliary files (`index.html`, `channeldata.json`) now if they
   * lag behind the index; resolves once they are written (or nothing was due).
   */
  async flush(): Promise<void> {
    this.#refuseWhenClosed();
    await this.#request(undefined, undefined, true);
  }

  /**
   * Stops: requests made from now on are refused; what is queued is
   * written, then the auxiliary files; no timer is left armed.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      try {
        // Queued last: it settles once everything queued before it is written;
        // then the cycle releases the channel's lock.
        await this.#request(undefined, undefined, true);
        await this.#draining;
      } finally {
        clearTimeout(this.#auxiliaryTimer);
        this.#auxiliaryTimer = undefined;
      }
    })();
    return this.#closing;
  }

  /**
   * Notes that the `index.html` of `subdirs` is older than what it lists (a
   * process stopped before it wrote it): the next auxiliary write redoes it.
   */
  markListingsBehind(subdirs: readonly string[]): void {
    for (const subdir of subdirs) this.#htmlDue.add(subdir);
  }

  /**
   * Queues `op` for `subdir` (or, with neither, a cycle that only re-reads
   * the disk); resolves with the op's result once its cycle wrote the files.
   */
  enqueue(subdir: string | undefined, op: IndexOp | undefined): Promise<boolean> {
    try {
      this.#refuseWhenClosed();
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#request(subdir, op, false);
  }

  #refuseWhenClosed(): void {
    if (this.#closed) throw new Error("Cannot update index: it is closed");
  }

  #request(subdir: string | undefined, op: IndexOp | undefined, flush: boolean): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ subdir, op, flush, resolve, reject });
      this.#draining ??= this.#drain();
    });
  }

  /** Runs write cycles until nothing is pending; each takes all that is pending. */
  async #drain(): Promise<void> {
    try {
      while (this.#pending.length > 0) {
        const cycle: { taken: _Request[] | undefined } = { taken: undefined };
        try {
          await this.#storage.withLock(async () => {
            cycle.taken = this.#pending;
            this.#pending = [];
            await this.#commit(cycle.taken);
          });
        } catch (error) {
          // Failed writes reject their own requests inside the cycle; this is
          // the lock or a read of the channel failing.
          this.#logger.error("Cannot update index", { reason: _describe(error) });
          for (const request of cycle.taken ?? this.#pending.splice(0)) request.reject(error);
        }
      }
    } finally {
      this.#draining = undefined;
    }
  }

  /**
   * One write cycle, holding the lock: applies every request to memory, then
   * writes the changed subdirs and `channeldata.json` at once.
   */
  async #commit(requests: _Request[]): Promise<void> {
    if (await this.#syncFromDisk()) this.#channeldataRebuild = true;
    if (await this.#syncChanneldata()) this.#channeldataRebuild = true;
    const groups = new Map<string | undefined, _Request[]>();
    for (const request of requests) {
      const group = groups.get(request.subdir);
      if (group) group.push(request);
      else groups.set(request.subdir, [request]);
    }
    const touched = new Set<string>();
    const applied: _Applied[] = [];
    const settle: (() => void)[] = [];
    for (const [subdir, group] of groups) {
      if (subdir === undefined) {
        settle.push(() => group.forEach((request) => request.resolve(true)));
        continue;
      }
      try {
        const change = await this.#apply(subdir, group);
        for (const name of change.names) touched.add(name);
        applied.push(change);
      } catch (error) {
        this.#logger.error("Cannot update index", { subdir, reason: _describe(error) });
        settle.push(() => group.forEach((request) => request.reject(error)));
      }
    }

    const writes = applied.filter((change) => change.write);
    // A subdir's first write makes its listing and adds it to channeldata at once.
    const newSubdir = writes.some(({ state }) => state!.diskStat === undefined);
    const outcomes = await Promise.allSettled(writes.map(({ state }) => this.#write(state!)));
    for (const [i, outcome] of outcomes.entries()) {
      if (outcome.status === "fulfilled") continue;
      const change = writes[i]!;
      change.error = outcome;
      this.#logger.error("Cannot write index", {
        subdir: change.state!.index.subdir,
        reason: _describe(outcome.reason),
      });
      _undo(change);
      // Part of the write may be in place: put back the files memory describes.
      await this.#write(change.state!).catch(() => {});
    }
    // Failed or not, these names' entries and these listings are to be written.
    for (const name of touched) this.#channeldataTouched.add(name);
    for (const { state } of writes) this.#htmlDue.add(state!.index.subdir);
    if (newSubdir) await this.#followWithAuxiliary(true);

    for (const { group, results, error } of applied) {
      if (error) group.forEach((request) => request.reject(error.reason));
      else group.forEach((request, i) => request.resolve(results[i]!));
    }
    // The uploads are answered; refresh and flush requests settle after this.
    await this.#followWithAuxiliary(requests.some((request) => request.flush));
    for (const settleGroup of settle) settleGroup();
  }

  /**
   * Writes the auxiliary files when they lag behind and were last written
   * `AUXILIARY_INTERVAL_MS` ago (or `now`); else makes sure a timer starts
   * the cycle that will. A write that failed is tried again after
   * `AUXILIARY_RETRY_MS`.
   */
  async #followWithAuxiliary(now: boolean): Promise<void> {
    if (!this.#auxiliaryDue()) return;
    const wait = this.#auxiliaryWrittenAt + AUXILIARY_INTERVAL_MS - performance.now();
    if (!now && wait > 0) {
      this.#armAuxiliaryTimer(wait);
      return;
    }
    clearTimeout(this.#auxiliaryTimer);
    this.#auxiliaryTimer = undefined;
    await this.#writeAuxiliary();
    if (this.#auxiliaryDue()) this.#armAuxiliaryTimer(AUXILIARY_RETRY_MS);
  }

  #auxiliaryDue(): boolean {
    return this.#channeldataTouched.size > 0 || this.#htmlDue.size > 0 ||
      this.#channeldataRebuild || this.#channeldataStat === undefined;
  }

  #armAuxiliaryTimer(wait: number): void {
    if (this.#auxiliaryTimer !== undefined || this.#closed) return;
    const timer = setTimeout(() => {
      this.#auxiliaryTimer = undefined;
      this.enqueue(undefined, undefined).catch(() => {});
    }, wait);
    Deno.unrefTimer(timer);
    this.#auxiliaryTimer = timer;
  }

  async #write(state: SubdirState): Promise<void> {
    await this.#files.write(state);
    this.#writeCount++;
  }

  /** Applies one subdir's requests to memory, in order; undoes them if one fails. */
  async #apply(subdir: string, group: _Request[]): Promise<_Applied> {
    let state = this.#subdirs.get(subdir);
    const change: _Applied = {
      group,
      state,
      results: [],
      undo: [],
      names: new Set(),
      write: false,
    };
    if (!state && group.every(({ op }) => op?.kind === "remove")) {
      change.results = group.map(() => false); // nothing indexed there: nothing to write either
      return change;
    }
    if (!state) {
      state = newSubdirState(new SubdirIndex(subdir));
      this.#subdirs.set(subdir, state);
    }
    change.state = state;
    change.write = state.stale;
    try {
      for (const { op } of group) {
        if (op?.kind === "add") {
          const previous = state.index.set(op.pkg);
          change.undo.push({ filename: op.pkg.filename, previous });
          if (
            !previous || !sameBytes(previous.fragment, op.pkg.fragment) ||
            previous.runExports === undefined || op.syncName
          ) {
            change.write = true;
          }
          change.names.add(op.pkg.name);
          if (previous) change.names.add(previous.name);
          change.results.push(true);
        } else if (op?.kind === "remove") {
          const path = `${subdir}/${op.filename}`;
          const keep = op.onlyIfFileGone && await this.#storage.stat(path) !== undefined;
          const previous = keep ? undefined : state.index.delete(op.filename);
          if (previous) {
            change.undo.push({ filename: op.filename, previous });
            change.names.add(previous.name);
            change.write = true;
          }
          change.results.push(previous !== undefined);
        } else {
          change.write = true;
          change.results.push(true);
        }
      }
      if (state.dirtyNames !== "all") {
        for (const name of change.names) state.dirtyNames.add(name);
      }
      return change;
    } catch (error) {
      _undo(change);
      throw error;
    }
  }

  /**
   * Re-reads every subdir's `repodata.json` that differs (size or mtime) from
   * what this process last wrote or read; returns whether any was reloaded.
   */
  async #syncFromDisk(): Promise<boolean> {
    const subdirs = new Set(this.#subdirs.keys());
    for (const name of await this.#storage.listDirectories()) {
      if (isSubdirName(name)) subdirs.add(name);
    }
    let reloaded = false;
    for (const subdir of subdirs) {
      const state = this.#subdirs.get(subdir);
      const found = await this.#files.read(subdir, state);
      if (found.kind === "unchanged") continue;
      if (found.kind === "missing") {
        // Gone (or never written): keep what memory has, rewrite it next time.
        if (state) Object.assign(state, { diskStat: undefined, stale: true });
        continue;
      }
      if (found.kind === "read") {
        this.#subdirs.set(subdir, found.state);
        reloaded = true;
        continue;
      }
      this.#logger.warn("Cannot read index, treating it as empty until reconcile", {
        path: `${subdir}/repodata.json`,
        reason: found.reason,
      });
      if (state) Object.assign(state, { diskStat: found.stat, stale: true });
      else {
        const empty = newSubdirState(new SubdirIndex(subdir), found.stat);
        empty.stale = true;
        this.#subdirs.set(subdir, empty);
      }
    }
    return reloaded;
  }

  /** Re-reads `channeldata.json` when another process changed it. */
  async #syncChanneldata(): Promise<boolean> {
    const stat = await this.#storage.stat(CHANNELDATA);
    if (!stat) {
      this.#channeldataStat = this.#channeldataText = undefined;
      return false;
    }
    if (
      this.#channeldataStat && stat.size === this.#channeldataStat.size &&
      stat.mtimeMs === this.#channeldataStat.mtimeMs && stat.tag === this.#channeldataStat.tag
    ) {
      return false;
    }
    const text = decoder.decode(await this.#storage.readFile(CHANNELDATA));
    try {
      this.#channeldata.usePrevious(text);
    } catch (error) {
      this.#logger.warn("Cannot read channeldata, rebuilding it", {
        path: CHANNELDATA,
        reason: _describe(error),
      });
    }
    this.#channeldataStat = stat;
    this.#channeldataText = text;
    return true;
  }

  /**
   * Writes `channeldata.json` (for the names touched since it was last
   * written) and the `index.html` of every subdir written since.
   */
  async #writeAuxiliary(): Promise<void> {
    this.#auxiliaryWrittenAt = performance.now();
    this.#auxiliaryWriteCount++;
    const touched = this.#channeldataTouched;
    this.#channeldataTouched = new Set();
    const due = [...this.#htmlDue];
    this.#htmlDue.clear();
    await Promise.all([
      this.#writeChanneldata(touched),
      ...due.map(async (subdir) => {
        const state = this.#subdirs.get(subdir);
        if (!state) return;
        try {
          await this.#files.writeIndexHtml(state);
        } catch (error) {
          this.#htmlDue.add(subdir);
          this.#logger.error("Cannot write index.html", { subdir, reason: _describe(error) });
        }
      }),
    ]);
  }

  /**
   * Recomputes the entries of the touched package names (all of them after a
   * reload) and writes `channeldata.json` when it changed; its subdirs are
   * those with a `repodata.json`. A failure is logged, not thrown: clients do
   * not need channeldata; the names stay due and a later cycle writes it.
   */
  async #writeChanneldata(touched: Set<string>): Promise<void> {
    try {
      const inputs = new Map<string, ChanneldataInput[]>();
      const wanted = this.#channeldataRebuild ? undefined : touched;
      for (const name of touched) inputs.set(name, []);
      for (const [subdir, state] of this.#subdirs) {
        for (const name of wanted ?? state.index.names()) {
          const packages = state.index.packagesNamed(name);
          if (packages.length === 0) continue;
          let list = inputs.get(name);
          if (!list) inputs.set(name, list = []);
          for (const pkg of packages) list.push({ subdir, pkg });
        }
      }
      if (this.#channeldataRebuild) this.#channeldata.clear();
      this.#channeldataRebuild = true; // until every entry is up to date again
      for (const [name, list] of inputs) this.#channeldata.update(name, list);
      this.#channeldataRebuild = false;
      const subdirs = new Set<string>();
      for (const [name, state] of this.#subdirs) if (state.diskStat) subdirs.add(name);
      const text = this.#channeldata.toJson([...subdirs]);
      if (text === this.#channeldataText) return;
      await this.#storage.writeFilesAtomic([{ relative: CHANNELDATA, data: text, durable: false }]);
      this.#channeldataText = text;
      this.#channeldataStat = await this.#storage.stat(CHANNELDATA);
    } catch (error) {
      this.#channeldataRebuild = true; // due again, written whole by a later cycle
      this.#logger.error("Cannot write channeldata", { reason: _describe(error) });
    }
  }
}

/** Reverts what a cycle applied to a subdir's memory. */
function _undo(change: _Applied): void {
  const state = change.state;
  if (!state) return;
  for (const { filename, previous } of change.undo.reverse()) {
    if (previous) state.index.set(previous);
    else state.index.delete(filename);
  }
  change.undo = [];
  state.stale = true;
  state.dirtyNames = "all";
}

function _describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
