/**
 * The storage seam: what the upload path, the index, serving, reconcile and
 * the `index` command need from where a channel is kept. Two backends
 * implement it: `channel_storage.ts` (a local directory, the default) and
 * `s3_channel_storage.ts` (S3-compatible object storage, `--storage`).
 * Nothing outside `src/storage/` knows which one is in use.
 *
 * Paths are channel-relative (`linux-64/foo-1.0-0.conda`), checked by
 * `channelPath()`; dotfiles (spool, lock, temporary files, coordination
 * objects) are never served.
 *
 * @module
 */

/** A regular file in the channel. */
export interface ChannelEntry {
  /** Basename. */
  name: string;
  /** Size in bytes. */
  size: number;
  /** Modification time in ms since the epoch. */
  mtimeMs: number;
  /**
   * The store's ETag, when the backend has one (object storage, whose
   * modification times have whole seconds): two entries with different
   * tags describe different bytes even if size and time agree.
   */
  tag?: string;
}

/** A spool file being written, private to one upload (always local). */
export interface SpoolFile {
  /** Absolute path of the spool file. */
  path: string;
  /** The open file, for writing. */
  file: Deno.FsFile;
  /**
   * Whether the spool file must reach the disk (fsync) before it is
   * published: it becomes the package in a local directory, while with
   * object storage it is scratch (the store keeps the durable copy, and a
   * crashed replica's spool is swept at its next start).
   * @default {true}
   */
  durable?: boolean;
}

/** A servable channel file, as found by {@linkcode ChannelStore.servable}. */
export interface ServableFile {
  /** Its size and mtime. */
  entry: ChannelEntry;
  /**
   * A number that changes whenever the file at this path may have changed.
   * Equal versions mean equal bytes, so a reader may keep a copy of the
   * bytes under it.
   */
  version: number;
}

/** A channel file opened for reading; {@linkcode close} it, or hand it to {@linkcode stream}. */
export interface OpenedFile extends ServableFile {
  /**
   * Reads `length` bytes from `start` into one buffer; fewer when the file
   * ends first. Throws when the file changed since it was opened.
   */
  read(start: number, length: number): Promise<Uint8Array<ArrayBuffer>>;
  /**
   * A stream of exactly `length` bytes from `start` that closes the file
   * when it ends, fails or is cancelled (it errors when the file is
   * shorter, or changed since it was opened).
   */
  stream(start: number, length: number): ReadableStream<Uint8Array<ArrayBuffer>>;
  /** Releases the file (a no-op once streamed). */
  close(): void;
}

/** Options for {@linkcode ChannelStore.publish}. */
export interface PublishOptions {
  /**
   * Replace an existing file of the same name atomically instead of refusing.
   * @default {false}
   */
  replace?: boolean;
  /**
   * Leave making the new name durable to the caller's next synced write
   * into the same directory (the built-in index's write syncs the subdir
   * after putting its files there, which covers the package's name too).
   * @default {false}
   */
  deferDirectorySync?: boolean;
}

/** Options for {@linkcode ChannelStore.writeFileAtomic}. */
export interface WriteOptions {
  /**
   * Make the new content durable before it replaces the old. Files that are
   * only derived for people (`index.html`, `channeldata.json`) may skip it.
   * @default {true}
   */
  durable?: boolean;
}

/** One file of {@linkcode ChannelStore.writeFilesAtomic}. */
export interface AtomicFile {
  /** Channel-relative path. */
  relative: string;
  /**
   * New content, or a function that makes it: called in turn, while the
   * files before it are being synced, so that computing it (compressing,
   * serializing) overlaps their disk writes.
   */
  data: Uint8Array | string | (() => Uint8Array | string);
  /**
   * Sync the content (and the rename) before the call resolves; see
   * {@linkcode WriteOptions.durable}.
   * @default {true}
   */
  durable?: boolean;
}

/** Thrown by {@linkcode ChannelStore.publish} when the name is taken. */
export class PackageExistsError extends Error {
  constructor(path: string) {
    super(`Cannot publish ${path}: a file of that name already exists`);
    this.name = "PackageExistsError";
  }
}

/** Where a channel is kept; see the module doc. */
export interface ChannelStore {
  /** Where the channel is, for people (a directory, or `s3://bucket/prefix`). */
  readonly root: string;
  /** Throws when the channel cannot be written. */
  checkWritable(): Promise<void>;
  /** Removes leftovers of interrupted index writes; call it holding {@linkcode withLock}. */
  removeLeftoverTempFiles(): Promise<string[]>;
  /** Removes spool files of interrupted uploads; returns their names. */
  removeLeftoverSpoolFiles(): Promise<string[]>;
  /** Creates a new, empty local spool file for one upload. */
  createSpoolFile(): Promise<SpoolFile>;
  /** Removes a spool file; a missing file is not an error. */
  discardSpoolFile(path: string): Promise<void>;
  /**
   * Notes, before a package is replaced, that `subdir/filename` is being
   * replaced; the returned function removes the note once the index holds
   * the new record.
   */
  markReplacing(subdir: string, filename: string): Promise<() => Promise<void>>;
  /**
   * Moves a complete spool file to `subdir/filename` in one step: without
   * `replace` an existing file is never touched and {@linkcode PackageExistsError}
   * is thrown (of two publishers racing for a name exactly one wins).
   */
  publish(
    spoolPath: string,
    subdir: string,
    filename: string,
    options?: PublishOptions,
  ): Promise<{ replaced: boolean }>;
  /** Removes `subdir/filename`; false when it did not exist. */
  removePackage(subdir: string, filename: string): Promise<boolean>;
  /** Removes a channel file (e.g. an old shard); false when it did not exist. */
  removeFile(relative: string): Promise<boolean>;
  /** Names of the channel's top-level directories (candidate subdirs). */
  listDirectories(): Promise<string[]>;
  /** Regular files in `directory` whose names end with one of `suffixes`, by name. */
  listFiles(directory: string, suffixes: readonly string[]): Promise<ChannelEntry[]>;
  /**
   * The servable file at `relative` with a version for keeping copies, or
   * undefined. Synchronous when the backend can answer from what it holds.
   */
  servable(relative: string): ServableFile | undefined | Promise<ServableFile | undefined>;
  /** Size and mtime of a channel file as it is now, or undefined. */
  stat(relative: string): Promise<ChannelEntry | undefined>;
  /** Whether `relative` names a directory inside the channel. */
  isDirectory(relative: string): Promise<boolean>;
  /** Opens a channel file for reading, or undefined when it is not servable. */
  open(relative: string): Promise<OpenedFile | undefined>;
  /** Reads a whole (small) channel file, or undefined. */
  readFile(relative: string): Promise<Uint8Array | undefined>;
  /** Writes a channel file so that readers see the old or the new content, never a mix. */
  writeFileAtomic(
    relative: string,
    data: Uint8Array | string,
    options?: WriteOptions,
  ): Promise<void>;
  /**
   * Writes several files, each replaced atomically, made visible in the
   * order given; the durable ones are durable when it resolves. On failure
   * the files before the failing one may be in place.
   */
  writeFilesAtomic(files: readonly AtomicFile[]): Promise<void>;
  /** Runs `task` with a local path holding the bytes of the channel file `relative`. */
  withLocalCopy<T>(relative: string, task: (path: string) => Promise<T>): Promise<T>;
  /**
   * Whether reconcile may index a package file the index has no record of.
   * The file-system backend always says yes; the object-store backend says
   * no for an upload still in flight on some replica, and deletes (then says
   * no) an orphan a crashed replica left behind unacknowledged.
   */
  mayIndexUnrecorded(relative: string, entry: ChannelEntry): Promise<boolean>;
  /**
   * Runs `task` as the channel's only index writer: no other process (or
   * replica) runs one at the same time. Waits for its turn.
   */
  withLock<T>(task: () => Promise<T>): Promise<T>;
  /** Resolves once work the storage still does after its writes (removing replaced versions) is done. */
  settle(): Promise<void>;
  /** Releases what the storage keeps open. */
  close(): void;
}
