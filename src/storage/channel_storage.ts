/**
 * Every touch of the channel's storage goes through {@linkcode ChannelStorage}:
 * spool files, atomic publish, index files, listing, serving reads and the
 * cross-process lock. Today it is a local directory; an object-store backend
 * (conditional writes instead of links and renames) can replace this module
 * without touching the upload path.
 *
 * Paths given to it are channel-relative ("linux-64/foo-1.0-0.conda") and are
 * checked by {@linkcode channelPath}; nothing outside the channel root, no
 * dotfile and no symlink leading out of the channel or to a dotfile in it is
 * ever read: a read checks both what was asked and where it resolves.
 *
 * Reads are on the serving hot path, so they cost one `stat` system call for
 * a file seen before: where a path resolves is checked once per file identity
 * (device, inode, size, mtime in ms, ctime in s) and remembered. Writes through
 * this storage forget the identity at once; a change by another process is
 * seen unless it keeps the inode and the size and puts the mtime back within
 * the same second.
 *
 * @module
 */

import { dirname, join, resolve } from "node:path";

import type {
  AtomicFile,
  ChannelEntry,
  ChannelStore,
  OpenedFile,
  PublishOptions,
  ServableFile,
  SpoolFile,
  WriteOptions,
} from "./channel_store.ts";
import { PackageExistsError } from "./channel_store.ts";
import { fileSliceStream } from "./file_slice_stream.ts";

/** Name of the private directory holding in-flight uploads. */
export const SPOOL_DIR_NAME = ".upload-spool";

/** The ending of a spool-area note that a package is being replaced. */
const REPLACING_SUFFIX = ".replacing";
/** Name of the cross-process lock file. */
export const LOCK_FILE_NAME = ".artifact-upload-handler.lock";

const SAFE_SEGMENT = /^[^./\\\0][^/\\\0]*$/;
/** Largest content {@linkcode ChannelStorage.writeFilesAtomic} writes synchronously. */
const SYNC_WRITE_BYTES = 256 * 1024;
/** Most file identities remembered as checked; the oldest are forgotten first. */
const MAX_CHECKED_FILES = 16_384;

/**
 * Splits a channel-relative path into checked segments, or returns undefined
 * when it is not a plain path inside the channel: empty segments, `.`/`..`,
 * dotfiles (spool, lock, temporary files), backslashes and NUL are refused.
 */
export function channelPath(relative: string): string[] | undefined {
  if (relative.length === 0 || relative.length > 1024) return undefined;
  const segments = relative.split("/");
  for (const segment of segments) {
    if (!SAFE_SEGMENT.test(segment)) return undefined;
  }
  return segments;
}

/**
 * How long serving trusts what it looked up of a path, in ms: a file another
 * process replaced or removed shows within this; this process's writes at once.
 */
export const SERVABLE_REFRESH_MS = 50;

/** The channel's storage: a local directory (the default backend of {@linkcode ChannelStore}). */
export class ChannelStorage implements ChannelStore {
  /** Absolute path of the channel root. */
  readonly root: string;
  #realRoot: string;
  /**
   * Channel-relative path -> identity whose resolved path was checked, its
   * version, and what the last look found and when (for serving).
   */
  #checked = new Map<
    string,
    { identity: string; version: number; entry: ChannelEntry; lookedAt: number }
  >();
  #nextVersion = 1;
  /** Removals of replaced versions under way. */
  #retiring = new Set<Promise<void>>();
  #directories = new Set<string>();
  #directoryHandles = new Map<string, Deno.FsFile>();
  /** The lock file, kept open once locked (see {@linkcode withLock}). */
  #lockFile: Deno.FsFile | undefined;
  /** Settles when this process's current holder of the lock is done. */
  #lockQueue: Promise<void> = Promise.resolve();

  private constructor(root: string, realRoot: string) {
    this.root = root;
    this.#realRoot = realRoot;
  }

  /**
   * Opens the channel at `root`, which must be an existing, writable
   * directory, and creates the private spool directory in it.
   */
  static async open(root: string): Promise<ChannelStorage> {
    const absolute = resolve(root);
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(absolute);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        throw new Error(`Cannot open channel: directory ${absolute} does not exist`);
      }
      throw new Error(`Cannot open channel: ${absolute}: ${describe(error)}`);
    }
    if (!info.isDirectory) {
      throw new Error(`Cannot open channel: ${absolute} is not a directory`);
    }
    const storage = new ChannelStorage(absolute, await Deno.realPath(absolute));
    try {
      await Deno.mkdir(storage.#spoolDir, { recursive: true });
      const probe = join(storage.#spoolDir, `.probe-${crypto.randomUUID()}`);
      await Deno.writeFile(probe, new Uint8Array());
      await Deno.remove(probe);
    } catch (error) {
      throw new Error(`Cannot open channel: ${absolute} is not writable: ${describe(error)}`);
    }
    return storage;
  }

  get #spoolDir(): string {
    return join(this.root, SPOOL_DIR_NAME);
  }

  #absolute(segments: string[]): string {
    return join(this.root, ...segments);
  }

  /** Throws when the channel cannot be written (a probe file in the spool area). */
  async checkWritable(): Promise<void> {
    const probe = join(this.#spoolDir, `.probe-${crypto.randomUUID()}`);
    await Deno.writeFile(probe, new Uint8Array(), { createNew: true });
    await Deno.remove(probe);
  }

  /**
   * Removes temporary index files (`.<name>.<uuid>.tmp`) left in the channel
   * root and its subdirs by an interrupted atomic write; returns their paths.
   * Call it while holding {@linkcode withLock}, since writers hold the lock.
   */
  async removeLeftoverTempFiles(): Promise<string[]> {
    const removed: string[] = [];
    const sweep = async (directory: string, prefix: string) => {
      for await (const entry of Deno.readDir(directory)) {
        if (entry.isFile && entry.name.startsWith(".") && entry.name.endsWith(".tmp")) {
          await Deno.remove(join(directory, entry.name)).catch(() => {});
          removed.push(prefix + entry.name);
        }
      }
    };
    await sweep(this.root, "");
    for (const name of await this.listDirectories()) {
      await sweep(join(this.root, name), `${name}/`);
    }
    return removed;
  }

  /** Creates a new, empty spool file for one upload. */
  createSpoolFile(): Promise<SpoolFile> {
    const path = join(this.#spoolDir, `${Date.now()}-${crypto.randomUUID()}.part`);
    // Creating a local file synchronously is cheaper than an async round trip.
    const file = Deno.openSync(path, { createNew: true, write: true, mode: 0o644 });
    return Promise.resolve({ path, file });
  }

  /** Removes a spool file; a missing file is not an error. */
  async discardSpoolFile(path: string): Promise<void> {
    await Deno.remove(path).catch(() => {});
  }

  /**
   * Removes spool files left behind (e.g. by a crash) and returns their names.
   * A package whose replacement was interrupted (its {@linkcode markReplacing}
   * note is still there) gets its modification time set to now, so that the
   * next reconcile re-reads it instead of trusting the old record.
   */
  async removeLeftoverSpoolFiles(): Promise<string[]> {
    const removed: string[] = [];
    for await (const entry of Deno.readDir(this.#spoolDir)) {
      const path = join(this.#spoolDir, entry.name);
      if (entry.isFile && entry.name.endsWith(REPLACING_SUFFIX)) await this.#touchReplaced(path);
      await Deno.remove(path, { recursive: true }).catch(() => {});
      removed.push(entry.name);
    }
    return removed;
  }

  /**
   * Notes durably, before a package is replaced, that `subdir/filename` is
   * being replaced: until the index holds the new record, its old record
   * describes bytes that are gone. The returned function removes the note
   * once the index is written; a crash leaves it for
   * {@linkcode removeLeftoverSpoolFiles}.
   */
  async markReplacing(subdir: string, filename: string): Promise<() => Promise<void>> {
    checked(`${subdir}/${filename}`);
    const path = join(this.#spoolDir, `${Date.now()}-${crypto.randomUUID()}${REPLACING_SUFFIX}`);
    using file = await Deno.open(path, { createNew: true, write: true, mode: 0o644 });
    const bytes = new TextEncoder().encode(JSON.stringify({ subdir, filename }));
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    await file.syncData();
    return () => Deno.remove(path).catch(() => {});
  }

  async #touchReplaced(notePath: string): Promise<void> {
    try {
      const { subdir, filename } = JSON.parse(await Deno.readTextFile(notePath));
      if (typeof subdir !== "string" || typeof filename !== "string") return;
      const now = new Date();
      await Deno.utime(this.#absolute(checked(`${subdir}/${filename}`)), now, now);
    } catch {
      // No such package any more, or a note cut short: nothing to re-read.
    }
  }

  /**
   * Moves a complete spool file to `subdir/filename` in one step. Without
   * `replace` an existing file is never touched and {@linkcode PackageExistsError}
   * is thrown; with it the old file is replaced atomically. Returns whether
   * a file was replaced.
   */
  async publish(
    spoolPath: string,
    subdir: string,
    filename: string,
    options: PublishOptions = {},
  ): Promise<{ replaced: boolean }> {
    const segments = checked(`${subdir}/${filename}`);
    const directory = this.#absolute(segments.slice(0, 1));
    const target = this.#absolute(segments);
    // Local metadata calls, made synchronously (see writeFilesAtomic).
    let replaced = false;
    if (options.replace) {
      replaced = statOrUndefined(target, { lstat: true }) !== undefined;
      this.#inDirectorySync(directory, () => Deno.renameSync(spoolPath, target));
    } else {
      try {
        this.#inDirectorySync(directory, () => Deno.linkSync(spoolPath, target));
      } catch (error) {
        if (error instanceof Deno.errors.AlreadyExists) {
          throw new PackageExistsError(`${subdir}/${filename}`);
        }
        throw error;
      }
      Deno.removeSync(spoolPath);
    }
    this.#checked.delete(`${subdir}/${filename}`);
    if (!options.deferDirectorySync) {
      try {
        await this.#syncDirectory(directory);
      } catch (error) {
        // The new name is not durable: take it back, so that the channel is as
        // it was (a replacement cannot be; its caller keeps the replacing note).
        if (!options.replace) Deno.removeSync(target);
        this.#checked.delete(`${subdir}/${filename}`);
        throw error;
      }
    }
    return { replaced };
  }

  /**
   * Makes a new name in `directory` durable. The directory stays open for the
   * next publish (one system call instead of three); {@linkcode close} closes it.
   */
  async #syncDirectory(directory: string): Promise<void> {
    try {
      let handle = this.#directoryHandles.get(directory);
      if (handle === undefined) {
        handle = await Deno.open(directory, { read: true });
        this.#directoryHandles.set(directory, handle);
      }
      await handle.syncData();
    } catch (error) {
      this.#directoryHandles.get(directory)?.close();
      this.#directoryHandles.delete(directory);
      // Not every file system can sync a directory (the link or rename is
      // still atomic there); any other failure (EIO) leaves the name not durable.
      if (!_cannotSyncDirectories(error)) throw error;
    }
  }

  /** Closes the directory handles kept for syncing and the lock file. */
  close(): void {
    for (const handle of this.#directoryHandles.values()) handle.close();
    this.#directoryHandles.clear();
    this.#lockFile?.close();
    this.#lockFile = undefined;
  }

  /**
   * Runs `action` (which writes into `directory`) after making sure the
   * directory exists. Directories are remembered, so the common case costs no
   * system call; one removed by hand is made again and the action retried.
   */
  async #inDirectory<T>(directory: string, action: () => Promise<T>): Promise<T> {
    if (!this.#directories.has(directory)) {
      await Deno.mkdir(directory, { recursive: true });
      this.#directories.add(directory);
    }
    try {
      return await action();
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      this.#directoryHandles.get(directory)?.close();
      this.#directoryHandles.delete(directory);
      await Deno.mkdir(directory, { recursive: true });
      return await action();
    }
  }

  /** Removes `subdir/filename`; returns false when it did not exist. */
  async removePackage(subdir: string, filename: string): Promise<boolean> {
    try {
      await Deno.remove(this.#absolute(checked(`${subdir}/${filename}`)));
      this.#checked.delete(`${subdir}/${filename}`);
      return true;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return false;
      throw error;
    }
  }

  /** Removes a channel file (e.g. an old shard); false when it did not exist. */
  async removeFile(relative: string): Promise<boolean> {
    try {
      await Deno.remove(this.#absolute(checked(relative)));
      this.#checked.delete(relative);
      return true;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return false;
      throw error;
    }
  }

  /** Names of the channel's top-level directories (candidate subdirs). */
  listDirectories(): Promise<string[]> {
    // A few entries, read on every index write: synchronously (see writeFilesAtomic).
    const names: string[] = [];
    try {
      for (const entry of Deno.readDirSync(this.root)) {
        if (entry.isDirectory && channelPath(entry.name)) names.push(entry.name);
      }
    } catch (error) {
      return Promise.reject(error);
    }
    return Promise.resolve(names.sort());
  }

  /** Regular files in `subdir` whose names end with one of `suffixes`. */
  async listFiles(subdir: string, suffixes: readonly string[]): Promise<ChannelEntry[]> {
    const directory = this.#absolute(checked(subdir));
    const entries: ChannelEntry[] = [];
    try {
      for await (const entry of Deno.readDir(directory)) {
        if (!entry.isFile || !channelPath(entry.name)) continue;
        if (!suffixes.some((suffix) => entry.name.endsWith(suffix))) continue;
        const info = await Deno.stat(join(directory, entry.name)).catch(() => undefined);
        if (info?.isFile) entries.push(toEntry(entry.name, info));
      }
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return [];
      throw error;
    }
    return entries.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  }

  /**
   * Describes the servable file at `relative` with a version for keeping
   * copies, or returns undefined when it is not one: not a regular file,
   * not a plain channel path, or resolving (through symlinks) outside the
   * channel or to a dotfile in it. Synchronous. What was found is trusted
   * for {@linkcode SERVABLE_REFRESH_MS}: every write of this process shows at
   * once, a file another process replaced or removed within that time
   * (`stat` and `open` always look).
   */
  servable(relative: string): ServableFile | undefined {
    const known = this.#checked.get(relative);
    if (known !== undefined && performance.now() - known.lookedAt < SERVABLE_REFRESH_MS) {
      return { entry: known.entry, version: known.version };
    }
    return this.#look(relative);
  }

  /** {@linkcode servable} as the file is now: one `stat` for a file seen before, a `realpath` the first time. */
  #look(relative: string): ServableFile | undefined {
    const segments = channelPath(relative);
    if (!segments) return undefined;
    // The segments are checked: plain concatenation is the joined path.
    const absolute = `${this.root}/${relative}`;
    for (let attempt = 0; attempt < 3; attempt++) {
      let info: Deno.FileInfo;
      try {
        info = Deno.statSync(absolute);
      } catch {
        this.#checked.delete(relative);
        return undefined;
      }
      if (!info.isFile) {
        this.#checked.delete(relative);
        return undefined;
      }
      const identity = fileIdentity(info);
      const entry = toEntry(segments[segments.length - 1]!, info);
      const known = this.#checked.get(relative);
      if (known?.identity === identity) {
        known.entry = entry;
        known.lookedAt = performance.now();
        return { entry, version: known.version };
      }
      const resolved = this.#resolveInside(absolute);
      if (resolved === undefined) return undefined;
      // Where the path resolves must be the file just described; otherwise
      // it was replaced meanwhile: look again.
      const real = statOrUndefined(resolved);
      if (real === undefined || fileIdentity(real) !== identity) continue;
      const version = this.#nextVersion++;
      this.#checked.delete(relative);
      this.#checked.set(relative, { identity, version, entry, lookedAt: performance.now() });
      if (this.#checked.size > MAX_CHECKED_FILES) {
        this.#checked.delete(this.#checked.keys().next().value!);
      }
      return { entry, version };
    }
    return undefined;
  }

  /**
   * Makes serving look at every path again, for files another process
   * changed on this server's behalf (`conda index` with `-e`): what it
   * wrote is served from the next request on, not up to
   * {@linkcode SERVABLE_REFRESH_MS} later.
   */
  lookAgain(): void {
    for (const known of this.#checked.values()) known.lookedAt = -Infinity;
  }

  /** Size and mtime of a channel file, or undefined when it is not a servable file. */
  stat(relative: string): Promise<ChannelEntry | undefined> {
    return Promise.resolve(this.#look(relative)?.entry);
  }

  /** Whether `relative` names a directory inside the channel (not a dot-directory). */
  isDirectory(relative: string): Promise<boolean> {
    const segments = channelPath(relative);
    if (!segments) return Promise.resolve(false);
    const resolved = this.#resolveInside(this.#absolute(segments));
    return Promise.resolve(
      resolved !== undefined && statOrUndefined(resolved)?.isDirectory === true,
    );
  }

  /**
   * Opens a channel file for reading, or returns undefined when it is not
   * servable (see {@linkcode servable}). The description and version are
   * those of the opened file, even if the name is replaced meanwhile.
   */
  open(relative: string): Promise<OpenedFile | undefined> {
    for (let attempt = 0; attempt < 3; attempt++) {
      // Looked up first: opening a FIFO or a device would block.
      const found = this.#look(relative);
      if (!found) return Promise.resolve(undefined);
      let file: Deno.FsFile;
      try {
        file = Deno.openSync(`${this.root}/${relative}`, { read: true });
      } catch {
        return Promise.resolve(undefined);
      }
      let info: Deno.FileInfo;
      try {
        info = file.statSync();
      } catch (error) {
        file.close();
        return Promise.reject(error);
      }
      if (info.isFile && fileIdentity(info) === this.#checked.get(relative)?.identity) {
        return Promise.resolve(openedFile(file, toEntry(found.entry.name, info), found.version));
      }
      // Replaced between the look-up and the open: look again.
      file.close();
    }
    return Promise.resolve(undefined);
  }

  /**
   * Reads a whole (small) channel file, or returns undefined when it is not
   * servable (missing, or a symlink leading out of the channel or to a dotfile).
   */
  async readFile(relative: string): Promise<Uint8Array | undefined> {
    checked(relative);
    const opened = await this.open(relative);
    if (opened === undefined) return undefined;
    try {
      return await opened.read(0, opened.entry.size);
    } finally {
      opened.close();
    }
  }

  /**
   * Writes a channel file so that readers see the old or the new content,
   * never a mix: written beside under a dot-name, synced, then renamed.
   */
  async writeFileAtomic(
    relative: string,
    data: Uint8Array | string,
    options: WriteOptions = {},
  ): Promise<void> {
    const segments = checked(relative);
    const target = this.#absolute(segments);
    const directory = this.#absolute(segments.slice(0, -1));
    const temporary = join(directory, `.${segments.at(-1)}.${crypto.randomUUID()}.tmp`);
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    await this.#inDirectory(directory, async () => {
      try {
        // Creating the file synchronously is cheaper than an async round trip; the
        // bytes (megabytes for a large subdir) and the fsync stay off the event loop.
        using file = Deno.openSync(temporary, { createNew: true, write: true, mode: 0o644 });
        let written = 0;
        while (written < bytes.length) written += await file.write(bytes.subarray(written));
        if (options.durable !== false) await file.syncData();
      } catch (error) {
        await Deno.remove(temporary).catch(() => {});
        throw error;
      }
    });
    await Deno.rename(temporary, target);
    // Readers holding a copy under the old version see the change at once,
    // even if the new file reused the old inode within the same millisecond.
    this.#checked.delete(relative);
  }

  /** Runs `task` with the file's own path: it is local already. */
  withLocalCopy<T>(relative: string, task: (path: string) => Promise<T>): Promise<T> {
    return task(this.localPath(relative));
  }

  /** Any package file in the directory is the channel's: reconcile indexes it. */
  mayIndexUnrecorded(_relative: string, _entry: ChannelEntry): Promise<boolean> {
    return Promise.resolve(true);
  }

  /**
   * Writes several channel files, each replaced atomically as by
   * {@linkcode writeFileAtomic}, for the cost of about one: every new content
   * is written beside its file and its sync started at once (the file system
   * commits them together), then they are renamed in the order given
   * (a reader never sees a later file before an earlier one) and each
   * directory that took a durable file is synced, so that the renames too
   * survive a power loss. Files are written in the order given, so a later
   * one is never older than an earlier one. On failure, files already renamed
   * stay in place; the temporary files of the others are removed.
   */
  async writeFilesAtomic(files: readonly AtomicFile[]): Promise<void> {
    // Creating, writing a small file (into the page cache) and renaming are
    // cheap system calls made synchronously: each async call is a round trip
    // through the thread pool, which on a busy machine costs more than the
    // call. The syncs, which wait for the disk, are asynchronous, all at once.
    const pending: _PendingFile[] = [];
    const syncs: Promise<void>[] = [];
    try {
      for (const { relative, data, durable } of files) {
        const segments = checked(relative);
        const directory = this.#absolute(segments.slice(0, -1));
        const temporary = join(directory, `.${segments.at(-1)}.${crypto.randomUUID()}.tmp`);
        const file = this.#inDirectorySync(
          directory,
          () => Deno.openSync(temporary, { createNew: true, write: true, mode: 0o644 }),
        );
        pending.push({
          target: this.#absolute(segments),
          directory,
          temporary,
          relative,
          durable: durable !== false,
          file,
        });
        const content = typeof data === "function" ? data() : data;
        const bytes = typeof content === "string" ? new TextEncoder().encode(content) : content;
        let written = 0;
        if (bytes.length <= SYNC_WRITE_BYTES) {
          while (written < bytes.length) written += file.writeSync(bytes.subarray(written));
        } else {
          // Megabytes (a large subdir's repodata.json) are copied off the JS
          // thread, still in order (a later file is never older).
          while (written < bytes.length) written += await file.write(bytes.subarray(written));
        }
        // Its sync runs while the next file's content is computed and written.
        if (durable !== false) syncs.push(file.syncData());
      }
      await Promise.all(syncs);
    } catch (error) {
      await Promise.allSettled(syncs);
      _discard(pending);
      throw error;
    }
    for (const { file } of pending) file.close();
    const directories = new Set<string>();
    const retired: string[] = [];
    for (const [i, { target, directory, temporary, relative, durable }] of pending.entries()) {
      // The version being replaced keeps a second name, so that the rename
      // does not free it (its blocks, a discard: milliseconds for megabytes);
      // it is removed after the write, off this thread.
      const keep = `${temporary.slice(0, -".tmp".length)}.old.tmp`;
      try {
        Deno.linkSync(target, keep);
        retired.push(keep);
      } catch {
        // No file there yet (or no second name possible): the rename replaces it.
      }
      try {
        Deno.renameSync(temporary, target);
      } catch (error) {
        _discard(pending.slice(i));
        this.#retire(retired);
        throw error;
      }
      this.#checked.delete(relative);
      if (durable) directories.add(directory);
    }
    try {
      await Promise.all([...directories].map((directory) => this.#syncDirectory(directory)));
    } finally {
      this.#retire(retired);
    }
  }

  /** Removes replaced versions (see {@linkcode writeFilesAtomic}) without waiting; {@linkcode settle} waits. */
  #retire(paths: readonly string[]): void {
    for (const path of paths) {
      const removal: Promise<void> = Deno.remove(path).catch(() => {}).finally(() =>
        this.#retiring.delete(removal)
      );
      this.#retiring.add(removal);
    }
  }

  /** Resolves once the replaced versions of files written so far are removed. */
  async settle(): Promise<void> {
    while (this.#retiring.size > 0) await Promise.all([...this.#retiring]);
  }

  /** {@linkcode #inDirectory} for a synchronous action. */
  #inDirectorySync<T>(directory: string, action: () => T): T {
    if (!this.#directories.has(directory)) {
      this.#makeDirectory(directory);
      this.#directories.add(directory);
    }
    try {
      return action();
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      this.#directoryHandles.get(directory)?.close();
      this.#directoryHandles.delete(directory);
      this.#makeDirectory(directory);
      return action();
    }
  }

  /**
   * Makes `directory` (and its missing parents) and syncs each parent up to
   * the channel root, so that a new subdir's name is as durable as the
   * packages and index files later synced inside it. Once per directory and
   * process: cheap calls, made synchronously.
   */
  #makeDirectory(directory: string): void {
    Deno.mkdirSync(directory, { recursive: true });
    for (let parent = dirname(directory); parent.startsWith(this.root); parent = dirname(parent)) {
      try {
        using handle = Deno.openSync(parent, { read: true });
        handle.syncDataSync();
      } catch (error) {
        if (!_cannotSyncDirectories(error)) throw error;
      }
      if (parent === this.root) break;
    }
  }

  /** The local filesystem path of a channel-relative path (for `conda index`). */
  localPath(relative = ""): string {
    return relative === "" ? this.root : this.#absolute(checked(relative));
  }

  /**
   * Runs `task` holding the channel's exclusive cross-process lock, so that
   * two servers (or a server and the `index` command) never interleave index
   * writes. Waits for the lock. The lock file stays open between holders
   * (one system call less per index write); {@linkcode close} closes it.
   */
  async withLock<T>(task: () => Promise<T>): Promise<T> {
    // One holder at a time in this process (a second `flock` on the same
    // open file would not wait), on a lock file kept open between holders.
    const before = this.#lockQueue;
    let release!: () => void;
    this.#lockQueue = new Promise((resolve) => release = resolve);
    await before;
    try {
      const file = await this.#lockedFile();
      try {
        return await task();
      } finally {
        try {
          file.unlockSync();
        } catch {
          // A lock that cannot be released goes with the file.
          this.#lockFile = undefined;
          file.close();
        }
      }
    } finally {
      release();
    }
  }

  /**
   * The lock file, locked. A kept file that is no longer the one at the
   * lock's path (removed or replaced by hand) is closed and the path opened
   * again, so that this process and others always lock the same file.
   */
  async #lockedFile(): Promise<Deno.FsFile> {
    const path = join(this.root, LOCK_FILE_NAME);
    for (let attempt = 0;; attempt++) {
      const file = this.#lockFile ??= await Deno.open(path, {
        create: true,
        write: true,
        mode: 0o644,
      });
      await file.lock(true);
      const held = file.statSync();
      const named = statOrUndefined(path);
      if (
        attempt >= 2 || (named !== undefined && named.ino === held.ino && named.dev === held.dev)
      ) {
        return file;
      }
      this.#lockFile = undefined;
      file.close();
    }
  }

  /**
   * The real path of `absolute` when it resolves inside the channel and to
   * no dotfile (spool, lock, temporary files) there; otherwise undefined.
   */
  #resolveInside(absolute: string): string | undefined {
    let real: string;
    try {
      real = Deno.realPathSync(absolute);
    } catch {
      return undefined;
    }
    if (!real.startsWith(this.#realRoot + "/")) return undefined;
    return channelPath(real.slice(this.#realRoot.length + 1)) ? real : undefined;
  }
}

/** A file of {@linkcode ChannelStorage.writeFilesAtomic} written beside its target. */
interface _PendingFile {
  target: string;
  directory: string;
  temporary: string;
  relative: string;
  durable: boolean;
  file: Deno.FsFile;
}

/** Closes and removes the temporary files of writes that will not be renamed. */
function _discard(pending: readonly _PendingFile[]): void {
  for (const { file, temporary } of pending) {
    try {
      file.close();
    } catch {
      // Already closed.
    }
    try {
      Deno.removeSync(temporary);
    } catch {
      // Never created, or already gone.
    }
  }
}

/**
 * Reads `length` bytes of `file` from `offset` into one buffer; fewer when
 * the file ends first (the buffer is then cut to what was read).
 */
export async function readExactly(
  file: Deno.FsFile,
  offset: number,
  length: number,
): Promise<Uint8Array<ArrayBuffer>> {
  if (offset > 0) await file.seek(offset, Deno.SeekMode.Start);
  const bytes = new Uint8Array(length);
  let filled = 0;
  while (filled < length) {
    const read = await file.read(bytes.subarray(filled));
    if (read === null) return bytes.subarray(0, filled);
    filled += read;
  }
  return bytes;
}

/** An open local file as an {@linkcode OpenedFile}. */
function openedFile(file: Deno.FsFile, entry: ChannelEntry, version: number): OpenedFile {
  let handedOver = false;
  return {
    entry,
    version,
    read(start, length) {
      // A small read from the page cache costs less synchronously than the
      // round trip of an async read.
      if (length <= SYNC_READ_BYTES) {
        try {
          return Promise.resolve(readExactlySync(file, start, length));
        } catch (error) {
          return Promise.reject(error);
        }
      }
      return readExactly(file, start, length);
    },
    stream(start, length) {
      handedOver = true;
      return fileSliceStream(file, start, length);
    },
    close() {
      if (handedOver) return;
      handedOver = true;
      try {
        file.close();
      } catch {
        // Already closed.
      }
    },
  };
}

/** Largest read done synchronously. */
const SYNC_READ_BYTES = 256 * 1024;

function readExactlySync(
  file: Deno.FsFile,
  start: number,
  length: number,
): Uint8Array<ArrayBuffer> {
  if (start > 0) file.seekSync(start, Deno.SeekMode.Start);
  const bytes = new Uint8Array(length);
  let filled = 0;
  while (filled < length) {
    const read = file.readSync(bytes.subarray(filled));
    if (read === null) return bytes.subarray(0, filled);
    filled += read;
  }
  return bytes;
}

/**
 * Whether `error` says the file system cannot sync a directory (not an I/O
 * failure). Windows cannot open a directory for it at all.
 */
function _cannotSyncDirectories(error: unknown): boolean {
  if (Deno.build.os === "windows") return true;
  const code = (error as { code?: unknown } | null)?.code;
  return error instanceof Deno.errors.NotSupported || code === "EINVAL" || code === "ENOTSUP" ||
    code === "EOPNOTSUPP";
}

function statOrUndefined(path: string, options?: { lstat: boolean }): Deno.FileInfo | undefined {
  try {
    return options?.lstat ? Deno.lstatSync(path) : Deno.statSync(path);
  } catch {
    return undefined;
  }
}

/** What tells one file's content from another's at one path, short of reading it. */
function fileIdentity(info: Deno.FileInfo): string {
  return `${info.dev}:${info.ino}:${info.size}:${info.mtime?.getTime()}:${info.ctime?.getTime()}`;
}

function checked(relative: string): string[] {
  const segments = channelPath(relative);
  if (!segments) throw new TypeError(`Cannot use channel path: ${JSON.stringify(relative)}`);
  return segments;
}

function toEntry(name: string, info: Deno.FileInfo): ChannelEntry {
  return { name, size: info.size, mtimeMs: info.mtime?.getTime() ?? 0 };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
