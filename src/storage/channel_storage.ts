/**
 * Every touch of the channel's storage goes through {@linkcode ChannelStorage}:
 * spool files, atomic publish, index files, listing, serving reads and the
 * cross-process lock. Today it is a local directory; an object-store backend
 * (conditional writes instead of links and renames) can replace this module
 * without touching the upload path.
 *
 * Paths given to it are channel-relative ("linux-64/foo-1.0-0.conda") and are
 * checked by {@linkcode channelPath}; nothing outside the channel root, no
 * dotfile and no symlink leading out of the channel is ever reached.
 *
 * @module
 */

import { join, resolve } from "node:path";

/** A regular file in the channel. */
export interface ChannelEntry {
  /** Basename. */
  name: string;
  /** Size in bytes. */
  size: number;
  /** Modification time in ms since the epoch. */
  mtimeMs: number;
}

/** A spool file being written, private to one upload. */
export interface SpoolFile {
  /** Absolute path of the spool file. */
  path: string;
  /** The open file, for writing. */
  file: Deno.FsFile;
}

/** A channel file opened for reading. */
export interface OpenedFile {
  /** The open file; the caller closes it (or hands it to a response stream). */
  file: Deno.FsFile;
  /** Its size and mtime. */
  entry: ChannelEntry;
}

/** Options for {@linkcode ChannelStorage.publish}. */
export interface PublishOptions {
  /**
   * Replace an existing file of the same name atomically instead of refusing.
   * @default {false}
   */
  replace?: boolean;
}

/** Options for {@linkcode ChannelStorage.writeFileAtomic}. */
export interface WriteOptions {
  /**
   * fsync the new content before it replaces the old. Files that are only
   * derived for people and rebuilt from the index (`index.html`,
   * `channeldata.json`) may skip it: a process crash loses nothing either
   * way, only a power loss could leave them to be rebuilt.
   * @default {true}
   */
  durable?: boolean;
}

/** Thrown by {@linkcode ChannelStorage.publish} when the name is taken. */
export class PackageExistsError extends Error {
  constructor(path: string) {
    super(`Cannot publish ${path}: a file of that name already exists`);
    this.name = "PackageExistsError";
  }
}

/** Name of the private directory holding in-flight uploads. */
export const SPOOL_DIR_NAME = ".upload-spool";

/** The ending of a spool-area note that a package is being replaced. */
const REPLACING_SUFFIX = ".replacing";
/** Name of the cross-process lock file. */
export const LOCK_FILE_NAME = ".artifact-upload-handler.lock";

const SAFE_SEGMENT = /^[^./\\\0][^/\\\0]*$/;

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

/** The channel's storage: a local directory. */
export class ChannelStorage {
  /** Absolute path of the channel root. */
  readonly root: string;
  #realRoot: string;
  #directories = new Set<string>();
  #directoryHandles = new Map<string, Deno.FsFile>();

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
    let replaced = false;
    if (options.replace) {
      replaced = await Deno.lstat(target).then(() => true, () => false);
      await this.#inDirectory(directory, () => Deno.rename(spoolPath, target));
    } else {
      try {
        await this.#inDirectory(directory, () => Deno.link(spoolPath, target));
      } catch (error) {
        if (error instanceof Deno.errors.AlreadyExists) {
          throw new PackageExistsError(`${subdir}/${filename}`);
        }
        throw error;
      }
      await Deno.remove(spoolPath);
    }
    await this.#syncDirectory(directory);
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
    } catch {
      // Not every platform can sync a directory; the link or rename is still atomic.
      this.#directoryHandles.get(directory)?.close();
      this.#directoryHandles.delete(directory);
    }
  }

  /** Closes the directory handles kept for syncing. */
  close(): void {
    for (const handle of this.#directoryHandles.values()) handle.close();
    this.#directoryHandles.clear();
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
      return true;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return false;
      throw error;
    }
  }

  /** Names of the channel's top-level directories (candidate subdirs). */
  async listDirectories(): Promise<string[]> {
    const names: string[] = [];
    for await (const entry of Deno.readDir(this.root)) {
      if (entry.isDirectory && channelPath(entry.name)) names.push(entry.name);
    }
    return names.sort();
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

  /** Size and mtime of a channel file, or undefined when it is not a servable file. */
  async stat(relative: string): Promise<ChannelEntry | undefined> {
    const absolute = await this.#servablePath(relative);
    if (!absolute) return undefined;
    const info = await Deno.stat(absolute).catch(() => undefined);
    return info?.isFile ? toEntry(basename(relative), info) : undefined;
  }

  /** Whether `relative` names a directory inside the channel. */
  async isDirectory(relative: string): Promise<boolean> {
    const absolute = await this.#servablePath(relative);
    if (!absolute) return false;
    const info = await Deno.stat(absolute).catch(() => undefined);
    return info?.isDirectory ?? false;
  }

  /** Opens a channel file for reading, or returns undefined when it is not servable. */
  async open(relative: string): Promise<OpenedFile | undefined> {
    const absolute = await this.#servablePath(relative);
    if (!absolute) return undefined;
    let file: Deno.FsFile;
    try {
      file = await Deno.open(absolute, { read: true });
    } catch {
      return undefined;
    }
    const info = await file.stat();
    if (!info.isFile) {
      file.close();
      return undefined;
    }
    return { file, entry: toEntry(basename(relative), info) };
  }

  /**
   * Reads a whole (small) channel file, or returns undefined when it does not
   * exist (or is a symlink leading out of the channel).
   */
  async readFile(relative: string): Promise<Uint8Array | undefined> {
    checked(relative);
    const absolute = await this.#servablePath(relative);
    if (absolute === undefined) return undefined;
    try {
      return await Deno.readFile(absolute);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return undefined;
      throw error;
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
  }

  /** The local filesystem path of a channel-relative path (for `conda index`). */
  localPath(relative = ""): string {
    return relative === "" ? this.root : this.#absolute(checked(relative));
  }

  /**
   * Runs `task` holding the channel's exclusive cross-process lock, so that
   * two servers (or a server and the `index` command) never interleave index
   * writes. Waits for the lock.
   */
  async withLock<T>(task: () => Promise<T>): Promise<T> {
    using file = await Deno.open(join(this.root, LOCK_FILE_NAME), {
      create: true,
      write: true,
      mode: 0o644,
    });
    await file.lock(true);
    try {
      return await task();
    } finally {
      await file.unlock().catch(() => {});
    }
  }

  async #servablePath(relative: string): Promise<string | undefined> {
    const segments = channelPath(relative);
    if (!segments) return undefined;
    const absolute = this.#absolute(segments);
    let real: string;
    try {
      real = await Deno.realPath(absolute);
    } catch {
      return undefined;
    }
    return real.startsWith(this.#realRoot + "/") ? real : undefined;
  }
}

function checked(relative: string): string[] {
  const segments = channelPath(relative);
  if (!segments) throw new TypeError(`Cannot use channel path: ${JSON.stringify(relative)}`);
  return segments;
}

function basename(relative: string): string {
  return relative.slice(relative.lastIndexOf("/") + 1);
}

function toEntry(name: string, info: Deno.FileInfo): ChannelEntry {
  return { name, size: info.size, mtimeMs: info.mtime?.getTime() ?? 0 };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
