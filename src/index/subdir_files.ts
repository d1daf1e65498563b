/**
 * The files of one subdir's index on disk, written from and read back into
 * a {@linkcode SubdirState}:
 *
 * 1. new shard files `shards/<sha256>.msgpack.zst`, each once, synced, never replaced;
 * 2. `repodata.json`, for a new subdir preceded by its `repodata.json.zst`;
 * 3. `repodata.json.zst`;
 * 4. `repodata_shards.msgpack.zst`, `run_exports.json` and `run_exports.json.zst`.
 *
 * Every file is replaced atomically, and all of them are written as one
 * batch (`ChannelStore.writeFilesAtomic`): written beside, synced together,
 * renamed in the order above, their directories synced. Shards come first, so an index never
 * names a shard that is not there; the derived files come after
 * `repodata.json` (what this index re-reads), so a crash in between leaves
 * them older than it, which {@linkcode SubdirFiles.stale} notices.
 * `index.html` is written on its own ({@linkcode SubdirFiles.writeIndexHtml},
 * not synced), by the write cycle. Old
 * shards stay for a grace period after the index stops naming them (clients
 * cache the index), then {@linkcode SubdirFiles.write} collects them.
 *
 * @module
 */

import { constants as zlibConstants, zstdCompressSync } from "node:zlib";
import type { Logger } from "../log.ts";
import type { JsonObject } from "../package/package_metadata.ts";
import type { AtomicFile, ChannelEntry, ChannelStore } from "../storage/channel_store.ts";
import {
  buildShardIndex,
  parseShardIndex,
  SHARD_INDEX_FILE,
  shardPath,
  SHARDS_DIR,
  SubdirShards,
} from "./repodata_shards.ts";
import { parseRunExportsJson, SubdirIndex } from "./subdir_index.ts";

/** The index files of a subdir besides `repodata.json` and the shards. */
export const DERIVED_FILES: readonly string[] = [
  "repodata.json.zst",
  "index.html",
  SHARD_INDEX_FILE,
  "run_exports.json",
  "run_exports.json.zst",
];

/** What the index holds of one subdir. */
export interface SubdirState {
  /** The subdir's packages. */
  index: SubdirIndex;
  /** Its shards, kept in step with `index` when written. */
  shards: SubdirShards;
  /** Package names whose shards may be out of step (`"all"` after a reload). */
  dirtyNames: Set<string> | "all";
  /** Size and mtime of `repodata.json` as this process last wrote or read it. */
  diskStat: ChannelEntry | undefined;
  /** The files on disk may not match `index` (unreadable, missing, half-written). */
  stale: boolean;
  /** Shard files on disk by hex, with their size; undefined until listed. */
  shardFiles?: Map<string, number>;
  /** When each shard file no longer named by the index was first seen so (ms). */
  unreferencedSince?: Map<string, number>;
  /** When shards were last collected (ms). */
  collectedAt?: number;
}

/** A new, empty state for `subdir`. */
export function newSubdirState(index: SubdirIndex, diskStat?: ChannelEntry): SubdirState {
  return {
    index,
    shards: new SubdirShards(),
    dirtyNames: "all",
    diskStat,
    stale: diskStat === undefined,
  };
}

/** Options for {@linkcode SubdirFiles}. */
export interface SubdirFilesOptions {
  /** Where shard collection is logged. */
  logger: Logger;
  /** zstd level of `repodata.json.zst` and `run_exports.json.zst`. */
  zstdLevel: number;
  /** How long a shard the index no longer names is kept (ms). */
  shardGraceMs: number;
  /** Least time between two collections of a subdir's old shards (ms). */
  shardCollectIntervalMs: number;
}

const decoder = new TextDecoder();

/** Writes and reads the index files of subdirs. */
export class SubdirFiles {
  #storage: ChannelStore;
  #options: SubdirFilesOptions;

  constructor(storage: ChannelStore, options: SubdirFilesOptions) {
    this.#storage = storage;
    this.#options = options;
  }

  /**
   * Brings the shards of the state's dirty names up to date, writes the new
   * shard files, then `repodata.json`, then the derived files (all but
   * `index.html`); collects old shards when due. Throws when a write failed (some
   * files may then be in place: write again to repair).
   */
  async write(state: SubdirState): Promise<void> {
    const subdir = state.index.subdir;
    const index = state.index;
    const names = state.dirtyNames === "all"
      ? new Set([...index.names(), ...state.shards.staleNames(() => false)])
      : state.dirtyNames;
    const packagesNamed = (name: string) => index.packagesNamed(name);
    state.shards.refresh(packagesNamed, names);
    state.shardFiles ??= await this.#listShards(subdir);
    // A shard taken from the index on disk whose file is gone is built again.
    const lost = [...state.shards.shards()].filter((shard) =>
      !shard.bytes && !state.shardFiles!.has(shard.hex)
    );
    for (const shard of lost) state.shards.forget(shard.name);
    state.shards.refresh(packagesNamed, lost.map((shard) => shard.name));
    const missing = [...state.shards.shards()].filter((shard) =>
      shard.bytes && state.shardFiles!.get(shard.hex) !== shard.bytes.length
    );

    const json = index.toRepodataJson();
    // A new subdir gets its .zst before repodata.json too, so that a client
    // that sees repodata.json never misses the .zst (written again below,
    // so that it is not older than repodata.json).
    let zst: Uint8Array | undefined;
    if (state.diskStat === undefined) {
      zst = this.#zstd(json);
      await this.#storage.writeFileAtomic(`${subdir}/repodata.json.zst`, zst);
    }
    // One batch, synced together: the new shards first (an index never
    // names a shard that is not there), then repodata.json, then what is
    // derived from it (the .zst first: clients that saw repodata.json ask
    // for it next). The derived files are computed while repodata.json is
    // being synced.
    const files: AtomicFile[] = missing.map((shard) => ({
      relative: `${subdir}/${shardPath(shard.hex)}`,
      data: shard.bytes!,
    }));
    files.push(
      { relative: `${subdir}/repodata.json`, data: json },
      { relative: `${subdir}/repodata.json.zst`, data: () => zst ?? this.#zstd(json) },
      {
        relative: `${subdir}/${SHARD_INDEX_FILE}`,
        data: () => buildShardIndex(subdir, state.shards.shards()),
      },
    );
    let runExports: Uint8Array | undefined;
    files.push(
      { relative: `${subdir}/run_exports.json`, data: () => runExports = index.toRunExportsJson() },
      { relative: `${subdir}/run_exports.json.zst`, data: () => this.#zstd(runExports!) },
    );
    try {
      await this.#storage.writeFilesAtomic(files);
    } finally {
      // Tracked even after a failure, so that this process never takes its
      // own write for another process's (the cycle holds the channel's lock:
      // what is there is this process's write or what it knew before).
      state.diskStat = await this.#storage.stat(`${subdir}/repodata.json`);
    }
    for (const shard of missing) {
      state.shardFiles!.set(shard.hex, shard.bytes!.length);
      state.unreferencedSince?.delete(shard.hex);
    }
    state.dirtyNames = new Set();
    state.stale = false;
    await this.#collectShards(state).catch((error) => {
      this.#options.logger.warn("Cannot collect old shards", { subdir, reason: String(error) });
    });
  }

  /** Writes the subdir's `index.html` (replaced atomically, not synced). */
  async writeIndexHtml(state: SubdirState): Promise<void> {
    await this.#storage.writeFilesAtomic([{
      relative: `${state.index.subdir}/index.html`,
      data: () => state.index.toIndexHtml(),
      durable: false,
    }]);
  }

  /**
   * Reads `subdir/repodata.json` (and `run_exports.json` for the run
   * exports of records `previous` does not have) when it differs from
   * `state.diskStat`. Returns the new state, `"unchanged"`, `"missing"`, or
   * `"unreadable"` with the file's stat.
   */
  async read(
    subdir: string,
    state: SubdirState | undefined,
  ): Promise<
    | { kind: "unchanged" }
    | { kind: "missing" }
    | { kind: "unreadable"; stat: ChannelEntry; reason: string }
    | { kind: "read"; state: SubdirState }
  > {
    const path = `${subdir}/repodata.json`;
    const stat = await this.#storage.stat(path);
    if (!stat) return { kind: "missing" };
    if (state && _sameStat(stat, state.diskStat)) return { kind: "unchanged" };
    const bytes = await this.#storage.readFile(path);
    let runExports: Map<string, JsonObject> | undefined;
    try {
      const text = await this.#storage.readFile(`${subdir}/run_exports.json`);
      if (text) runExports = parseRunExportsJson(decoder.decode(text));
    } catch {
      // Unknown run exports: reconcile reads those packages again.
    }
    try {
      const index = SubdirIndex.parse(subdir, decoder.decode(bytes), state?.index, runExports);
      const next = newSubdirState(index, stat);
      next.stale = false;
      if (state) {
        // Unchanged packages keep their objects, so most shards are reused.
        next.shards = state.shards;
        if (state.shardFiles) next.shardFiles = state.shardFiles;
        if (state.unreferencedSince) next.unreferencedSince = state.unreferencedSince;
        if (state.collectedAt !== undefined) next.collectedAt = state.collectedAt;
      }
      return { kind: "read", state: next };
    } catch (error) {
      return { kind: "unreadable", stat, reason: error instanceof Error ? error.message : "" };
    }
  }

  /**
   * Whether a derived file of `subdir` is missing or older than its
   * `repodata.json` (a crash between the renames), or a shard is missing.
   * A state just read from disk takes its shards from the shard index on
   * disk (in step with `repodata.json`, as the mtimes say) instead of
   * building them all: only names it lacks are built, at the next write.
   */
  async stale(subdir: string, state: SubdirState | undefined): Promise<boolean> {
    const [json, ...derived] = await Promise.all(
      ["repodata.json", ...DERIVED_FILES].map((name) => this.#storage.stat(`${subdir}/${name}`)),
    );
    // A missing index.html is written with the subdir; one that is merely
    // older is the write cycle's to catch up (it follows the index behind).
    const behind = (entry: ChannelEntry | undefined, i: number) =>
      !entry || (DERIVED_FILES[i] !== "index.html" && json !== undefined &&
        entry.mtimeMs < json.mtimeMs);
    if (derived.some(behind)) return true;
    if (!state) return false;
    const index = state.index;
    if (state.dirtyNames === "all") {
      let hashes: Map<string, Uint8Array>;
      try {
        hashes = parseShardIndex(
          await this.#storage.readFile(`${subdir}/${SHARD_INDEX_FILE}`) ??
            new Uint8Array(),
        );
      } catch {
        return true;
      }
      const seeded = state.shards.seed((name) => index.packagesNamed(name), hashes);
      state.dirtyNames = new Set([...index.names()].filter((name) => !seeded.has(name)));
      if (state.dirtyNames.size > 0 || seeded.size !== hashes.size) return true;
    } else if (state.dirtyNames.size > 0) {
      return true;
    }
    // Every shard file is synced before an index names it: present means complete.
    state.shardFiles = await this.#listShards(subdir);
    for (const shard of state.shards.shards()) {
      if (!state.shardFiles.has(shard.hex)) return true;
    }
    return false;
  }

  #zstd(bytes: Uint8Array): Uint8Array {
    return zstdCompressSync(bytes, {
      params: { [zlibConstants.ZSTD_c_compressionLevel]: this.#options.zstdLevel },
    });
  }

  async #listShards(subdir: string): Promise<Map<string, number>> {
    const files = await this.#storage.listFiles(`${subdir}/${SHARDS_DIR}`, [".msgpack.zst"]);
    const shards = new Map<string, number>();
    for (const file of files) {
      const hex = file.name.slice(0, -".msgpack.zst".length);
      if (/^[0-9a-f]{64}$/.test(hex)) shards.set(hex, file.size);
    }
    return shards;
  }

  /**
   * Removes shard files that the index has not named for the grace period.
   * Runs at most once per collect interval and subdir.
   */
  async #collectShards(state: SubdirState): Promise<void> {
    const now = Date.now();
    const { shardGraceMs, shardCollectIntervalMs } = this.#options;
    if (state.collectedAt !== undefined && now - state.collectedAt < shardCollectIntervalMs) return;
    state.collectedAt = now;
    const subdir = state.index.subdir;
    const current = new Set<string>();
    for (const shard of state.shards.shards()) current.add(shard.hex);
    const since = state.unreferencedSince ??= new Map();
    state.shardFiles = await this.#listShards(subdir);
    const removed: string[] = [];
    for (const hex of state.shardFiles.keys()) {
      if (current.has(hex)) {
        since.delete(hex);
        continue;
      }
      const first = since.get(hex);
      if (first === undefined) since.set(hex, now);
      if (now - (first ?? now) < shardGraceMs) continue;
      await this.#storage.removeFile(`${subdir}/${shardPath(hex)}`);
      state.shardFiles.delete(hex);
      since.delete(hex);
      removed.push(hex);
    }
    if (removed.length > 0) {
      this.#options.logger.info("old shards removed", { subdir, count: removed.length });
    }
  }
}

function _sameStat(a: ChannelEntry, b: ChannelEntry | undefined): boolean {
  return b !== undefined && a.size === b.size && a.mtimeMs === b.mtimeMs && a.tag === b.tag;
}
