/**
 * Sharded repodata (CEP-16) of one subdir, kept incrementally: one
 * zstd-compressed msgpack shard per package name, stored under the sha256
 * of its bytes (`shards/<hex>.msgpack.zst`), and the shard index
 * `repodata_shards.msgpack.zst` mapping every name to that sha256.
 *
 * The layout is what rattler's `ShardedRepodata`/`Shard` read and what
 * conda-index `--write-shards` writes: the index is
 * `{version: 1, info: {base_url, shards_base_url, created_at, subdir},
 * shards: {name: <32 raw bytes>}}`; a shard is
 * `{packages: {filename: record}, "packages.conda": {...}, removed: []}`
 * whose records are the `repodata.json` records with `md5` and `sha256` as
 * binary and, when known, the package's `run_exports` (as conda-index adds
 * them). Map keys are sorted at every level, so a shard's bytes, and with
 * them its name, depend only on its records: an unchanged shard keeps its
 * name and clients keep their cached copy.
 *
 * @module
 */

import { decode, encode } from "@msgpack/msgpack";
import { createHash } from "node:crypto";
import { constants as zlibConstants, zstdCompressSync, zstdDecompressSync } from "node:zlib";
import { concatBytes } from "../concat_bytes.ts";
import type { JsonObject } from "../package/package_metadata.ts";
import { repodataSection } from "./repodata_record.ts";
import type { IndexedPackage } from "./subdir_index.ts";

/** The shard index's file name in a subdir. */
export const SHARD_INDEX_FILE = "repodata_shards.msgpack.zst";
/** The folder of a subdir holding its shards. */
export const SHARDS_DIR = "shards";
/** The `version` of the shard index (CEP-16). */
export const SHARD_INDEX_VERSION = 1;
/**
 * zstd level of shards. conda-index uses zstd's default (3); shards are
 * small, so the level costs little either way.
 */
const ZSTD_LEVEL = 3;
/**
 * zstd level of the shard index, rewritten by every index write: it is
 * mostly sha256 bytes, which no level compresses, and level 1 takes half
 * the time of level 3 for the same size (500 names: 46 against 88-115 µs).
 */
const INDEX_ZSTD_LEVEL = 1;

/** One name's shard: its compressed bytes and their sha256. */
export interface Shard {
  /** The package name. */
  readonly name: string;
  /**
   * The zstd-compressed msgpack bytes, as served; undefined for a shard
   * taken from the shard index on disk (its file is already there).
   */
  readonly bytes?: Uint8Array;
  /** sha256 of {@linkcode Shard.bytes}. */
  readonly sha256: Uint8Array;
  /** {@linkcode Shard.sha256} in lowercase hex: the file name without `.msgpack.zst`. */
  readonly hex: string;
}

/** A shard's path relative to its subdir, e.g. `shards/<hex>.msgpack.zst`. */
export function shardPath(hex: string): string {
  return `${SHARDS_DIR}/${hex}.msgpack.zst`;
}

/**
 * The shard of one package name from all its packages in the subdir (any
 * order): deterministic bytes.
 *
 * @example Usage
 * ```ts
 * import { buildShard } from "./repodata_shards.ts";
 * import { indexedPackage } from "./subdir_index.ts";
 * const pkg = indexedPackage("foo-1.0-0.conda", {
 *   name: "foo", version: "1.0", md5: "0".repeat(32), sha256: "1".repeat(64),
 * });
 * console.log(buildShard("foo", [pkg]).hex.length); // 64
 * ```
 */
export function buildShard(name: string, packages: readonly IndexedPackage[]): Shard {
  const sections: Record<string, Record<string, JsonObject>> = {
    "packages": {},
    "packages.conda": {},
  };
  const sorted = [...packages].sort((a, b) =>
    a.filename < b.filename ? -1 : a.filename > b.filename ? 1 : 0
  );
  for (const pkg of sorted) {
    sections[repodataSection(pkg.filename)!]![pkg.filename] = _shardRecord(pkg);
  }
  const packed = encode({ ...sections, removed: [] }, { sortKeys: true });
  const bytes = _compress(packed);
  const sha256 = new Uint8Array(createHash("sha256").update(bytes).digest());
  return { name, bytes, sha256, hex: _hex(sha256) };
}

/** Options for {@linkcode buildShardIndex}. */
export interface ShardIndexOptions {
  /**
   * `info.created_at`, an ISO 8601 UTC time without fractions.
   * @default {the current time}
   */
  createdAt?: string;
}

/**
 * The compressed shard index of a subdir from its shards (any order). Its
 * `base_url` is `""` (packages beside the index, as conda-index writes it)
 * and its `shards_base_url` `./shards/`.
 */
export function buildShardIndex(
  subdir: string,
  shards: Iterable<Shard>,
  options: ShardIndexOptions = {},
): Uint8Array {
  const createdAt = options.createdAt ?? new Date().toISOString().replace(/\.\d+Z$/, "Z");
  const info = { base_url: "", shards_base_url: `./${SHARDS_DIR}/`, created_at: createdAt, subdir };
  // What encode({info, shards, version}, {sortKeys: true}) writes, with each
  // name's entry encoded once per shard rather than once per index write.
  const sorted = [...shards].sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const parts = [
    Uint8Array.of(0x83), // a map of three keys, in sorted order
    encode("info"),
    encode(info, { sortKeys: true }),
    encode("shards"),
    _mapHeader(sorted.length),
    ...sorted.map(_indexEntry),
    encode("version"),
    encode(SHARD_INDEX_VERSION),
  ];
  return _compress(concatBytes(parts), INDEX_ZSTD_LEVEL);
}

/** Each shard's entry in the index's `shards` map: its name, then its sha256 as binary. */
const _indexEntries = new WeakMap<Shard, Uint8Array>();

function _indexEntry(shard: Shard): Uint8Array {
  let entry = _indexEntries.get(shard);
  if (entry === undefined) {
    entry = concatBytes([encode(shard.name), encode(shard.sha256)]);
    _indexEntries.set(shard, entry);
  }
  return entry;
}

/** A msgpack map header for `size` entries. */
function _mapHeader(size: number): Uint8Array {
  if (size < 16) return Uint8Array.of(0x80 + size);
  if (size < 0x10000) return Uint8Array.of(0xde, size >> 8, size & 0xff);
  return Uint8Array.of(0xdf, size >>> 24, (size >> 16) & 0xff, (size >> 8) & 0xff, size & 0xff);
}

/**
 * The `shards` map of a compressed shard index: package name → sha256.
 * Throws a `SyntaxError` when the bytes are not a shard index.
 */
export function parseShardIndex(bytes: Uint8Array): Map<string, Uint8Array> {
  let data: unknown;
  try {
    data = decode(zstdDecompressSync(bytes));
  } catch (error) {
    throw new SyntaxError("Cannot parse shard index: not zstd-compressed msgpack", {
      cause: error,
    });
  }
  const shards = (data as { shards?: unknown } | null)?.shards;
  if (typeof shards !== "object" || shards === null) {
    throw new SyntaxError("Cannot parse shard index: no shards map");
  }
  const result = new Map<string, Uint8Array>();
  for (const [name, hash] of Object.entries(shards)) {
    if (!(hash instanceof Uint8Array) || hash.length !== 32) {
      throw new SyntaxError(`Cannot parse shard index: bad hash for ${JSON.stringify(name)}`);
    }
    result.set(name, new Uint8Array(hash));
  }
  return result;
}

/** The record as a shard holds it: checksums as bytes, run exports when known. */
function _shardRecord(pkg: IndexedPackage): JsonObject {
  const record: JsonObject = { ...pkg.record };
  for (const key of ["md5", "sha256"]) {
    const value = record[key];
    if (typeof value === "string" && /^(?:[0-9a-f]{2})+$/i.test(value)) {
      record[key] = _bytes(value);
    }
  }
  if (pkg.runExports !== undefined) record.run_exports = pkg.runExports;
  return record;
}

function _compress(bytes: Uint8Array, level = ZSTD_LEVEL): Uint8Array {
  return new Uint8Array(zstdCompressSync(bytes, {
    params: { [zlibConstants.ZSTD_c_compressionLevel]: level },
  }));
}

function _bytes(hex: string): Uint8Array {
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

function _hex(bytes: Uint8Array): string {
  let hex = "";
  for (const byte of bytes) hex += byte.toString(16).padStart(2, "0");
  return hex;
}

interface _Cached {
  shard: Shard;
  /** The packages it was built from, to tell when it must be rebuilt. */
  members: readonly IndexedPackage[];
}

/**
 * The shards of one subdir, rebuilt only for the names whose packages
 * changed (compared by identity: the index replaces a package's object
 * whenever its record or run exports change).
 */
export class SubdirShards {
  #byName = new Map<string, _Cached>();

  /** Number of package names with a shard. */
  get size(): number {
    return this.#byName.size;
  }

  /** Every current shard. */
  shards(): IterableIterator<Shard> {
    const cached = this.#byName.values();
    return (function* () {
      for (const { shard } of cached) yield shard;
    })();
  }

  /** The current shard of `name`, if it has packages. */
  get(name: string): Shard | undefined {
    return this.#byName.get(name)?.shard;
  }

  /**
   * Brings the shards of `names` (all names of the index and all names
   * held, when omitted) in line with `packagesNamed`; returns the shards
   * that were (re)built, which may be new files.
   */
  refresh(
    packagesNamed: (name: string) => IndexedPackage[],
    names: Iterable<string>,
  ): Shard[] {
    const built: Shard[] = [];
    for (const name of names) {
      const members = packagesNamed(name);
      const cached = this.#byName.get(name);
      if (members.length === 0) {
        this.#byName.delete(name);
        continue;
      }
      if (cached && _sameMembers(cached.members, members)) continue;
      const shard = buildShard(name, members);
      this.#byName.set(name, { shard, members });
      if (!cached || cached.shard.hex !== shard.hex) built.push(shard);
    }
    return built;
  }

  /**
   * Takes the shards a shard index on disk names (`hashes`, in step with
   * the packages `packagesNamed` returns now) without building them;
   * returns the names taken.
   */
  seed(
    packagesNamed: (name: string) => IndexedPackage[],
    hashes: ReadonlyMap<string, Uint8Array>,
  ): Set<string> {
    const seeded = new Set<string>();
    for (const [name, sha256] of hashes) {
      const members = packagesNamed(name);
      if (members.length === 0) continue;
      this.#byName.set(name, { shard: { name, sha256, hex: _hex(sha256) }, members });
      seeded.add(name);
    }
    return seeded;
  }

  /** Forgets the shard of `name`, so that the next refresh builds it. */
  forget(name: string): void {
    this.#byName.delete(name);
  }

  /** Names holding a shard that `isCurrent` does not know any more. */
  staleNames(isCurrent: (name: string) => boolean): string[] {
    return [...this.#byName.keys()].filter((name) => !isCurrent(name));
  }
}

function _sameMembers(a: readonly IndexedPackage[], b: readonly IndexedPackage[]): boolean {
  if (a.length !== b.length) return false;
  const set = new Set(a);
  return b.every((pkg) => set.has(pkg));
}
