/**
 * Small channel files that every client asks for (repodata.json and its
 * `.zst`, channeldata.json, index.html, shard indexes) held in memory with
 * their validators and their gzip variant, so that answering one costs a
 * `stat` and no read, and gzip runs once per version instead of per request.
 *
 * An entry is only used while {@linkcode ChannelStore.servable} reports
 * the version it was read under: a file replaced through the storage (the
 * index's atomic writes) or by another process (another server on the same
 * directory, `conda index`) is read again on the next request.
 *
 * @module
 */

import { promisify } from "node:util";
import { gzip } from "node:zlib";
import type { ChannelEntry, ChannelStore, ServableFile } from "../storage/channel_store.ts";

const gzipAsync = promisify(gzip);

/** One file held in memory at one version. */
export interface HotFile {
  /** Size and mtime of the bytes held. */
  entry: ChannelEntry;
  /** The storage version the bytes were read under. */
  version: number;
  /** The whole file. */
  bytes: Uint8Array<ArrayBuffer>;
  /** Strong ETag of the bytes: `"<size hex>-<mtime ms hex>"`. */
  etag: string;
  /** `Last-Modified` date. */
  lastModified: string;
  /** The gzip variant, once asked for. */
  gzip?: Uint8Array<ArrayBuffer>;
  /** The gzip variant being made. */
  gzipping?: Promise<Uint8Array<ArrayBuffer>>;
}

/** Options for {@linkcode HotFileCache}. */
export interface HotFileCacheOptions {
  /**
   * Largest file held, in bytes.
   * @default {8 MiB}
   */
  maxFileBytes?: number;
  /**
   * Most bytes held in all (files and gzip variants); the least recently
   * used files are dropped first.
   * @default {32 MiB}
   */
  maxTotalBytes?: number;
}

const MIB = 1024 * 1024;

/** Holds small hot channel files in memory; see the module doc. */
export class HotFileCache {
  readonly #storage: ChannelStore;
  readonly #maxFileBytes: number;
  readonly #maxTotalBytes: number;
  /** Channel-relative path -> file; iteration order is least recently used first. */
  readonly #files = new Map<string, HotFile>();
  readonly #loading = new Map<
    string,
    { version: number; file: Promise<HotFile | undefined> }
  >();
  #totalBytes = 0;

  /** A cache of `storage`'s files. */
  constructor(storage: ChannelStore, options: HotFileCacheOptions = {}) {
    this.#storage = storage;
    this.#maxFileBytes = options.maxFileBytes ?? 8 * MIB;
    this.#maxTotalBytes = options.maxTotalBytes ?? 32 * MIB;
  }

  /** Whether a file of `size` bytes is held by this cache. */
  holds(size: number): boolean {
    return size <= this.#maxFileBytes;
  }

  /**
   * The file at `relative` as `found` describes it (or newer), from memory
   * when that version is held, else read now; undefined when it stopped
   * being servable.
   */
  get(relative: string, found: ServableFile): HotFile | Promise<HotFile | undefined> {
    const held = this.#files.get(relative);
    if (held !== undefined && held.version >= found.version) {
      // Most recently used goes last.
      this.#files.delete(relative);
      this.#files.set(relative, held);
      return held;
    }
    // Requests that arrive while the file is read share the read, unless
    // they saw a newer version than the one it was started for.
    const loading = this.#loading.get(relative);
    if (loading !== undefined && loading.version >= found.version) return loading.file;
    const file = this.#load(relative).finally(() => {
      if (this.#loading.get(relative)?.file === file) this.#loading.delete(relative);
    });
    this.#loading.set(relative, { version: found.version, file });
    return file;
  }

  /** The gzip variant of `file`, made once. */
  async gzipped(relative: string, file: HotFile): Promise<Uint8Array<ArrayBuffer>> {
    if (file.gzip !== undefined) return file.gzip;
    file.gzipping ??= gzipAsync(file.bytes).then((buffer) => {
      // A copy that owns its memory (a Buffer may share Node's pool).
      const bytes = new Uint8Array(buffer);
      file.gzip = bytes;
      if (this.#files.get(relative) === file) {
        this.#totalBytes += bytes.length;
        this.#evict();
      }
      return bytes;
    });
    return await file.gzipping;
  }

  async #load(relative: string): Promise<HotFile | undefined> {
    const opened = await this.#storage.open(relative);
    if (opened === undefined) return undefined;
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = await opened.read(0, opened.entry.size);
    } finally {
      opened.close();
    }
    const { entry, version } = opened;
    // A file that shrank while being read is read again on the next request.
    if (bytes.length !== entry.size) return undefined;
    const file: HotFile = {
      entry,
      version,
      bytes,
      etag: entityTag(entry),
      lastModified: new Date(entry.mtimeMs).toUTCString(),
    };
    const previous = this.#files.get(relative);
    // A slower read of an older version does not replace a newer one.
    if (previous !== undefined && previous.version > version) return file;
    if (previous !== undefined) {
      this.#files.delete(relative);
      this.#totalBytes -= _heldBytes(previous);
    }
    if (bytes.length <= this.#maxFileBytes) {
      this.#files.set(relative, file);
      this.#totalBytes += bytes.length;
      this.#evict();
    }
    return file;
  }

  #evict(): void {
    for (const [relative, file] of this.#files) {
      if (this.#totalBytes <= this.#maxTotalBytes) return;
      this.#files.delete(relative);
      this.#totalBytes -= _heldBytes(file);
    }
  }
}

/**
 * Strong ETag: the store's own when it has one (object storage), else from
 * size and mtime: `"<size hex>-<mtime ms hex>"`.
 */
export function entityTag(entry: ChannelEntry): string {
  if (entry.tag !== undefined && /^"[^"]+"$/.test(entry.tag)) return entry.tag;
  return `"${entry.size.toString(16)}-${Math.floor(entry.mtimeMs).toString(16)}"`;
}

function _heldBytes(file: HotFile): number {
  return file.bytes.length + (file.gzip?.length ?? 0);
}
