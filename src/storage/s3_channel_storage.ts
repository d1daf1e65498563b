/**
 * The object-storage backend of {@linkcode ChannelStore} (`--storage
 * s3://BUCKET/PREFIX`): the channel's files are objects under their
 * channel-relative names, so the bucket can also be served by the store's
 * own endpoint or a CDN; the replica keeps only its spool and copies in a
 * local work directory (`-d`). See docs/object_storage.md §5-§6.
 *
 * - **Publish** claims the package's name with a create-only claim object
 *   (`.index/claims/<subdir>/<file>`, `If-None-Match: *`), so of replicas
 *   racing for a name the store lets exactly one win, puts the package
 *   under its final key with one streamed create-only PUT, and drops the
 *   claim; the object carries the upload's id (`x-amz-meta-auh-upload`). An upload
 *   larger than 64 MiB is sent to the store while it still arrives, as a
 *   multipart upload to a staging object, and copied to its final key
 *   inside the store after inspection, once a look found the key free
 *   (CopyObject: conditions are ignored there by Ceph RGW, hence the claim
 *   for every publish).
 * - **One index writer at a time**: {@linkcode withLock} holds the
 *   channel's {@linkcode ObjectLease} (`.index/writer`), renewed while the
 *   write cycle runs; a cycle re-reads `repodata.json` by ETag before it
 *   changes it, so replicas never lose each other's records. A write after
 *   the lease ran out is refused.
 * - **Orphans**: a package object with an upload id that no index records
 *   and that is older than the orphan grace (a replica killed between its
 *   PUT and its index write, never acknowledged) is deleted under the lease
 *   by reconcile, after checking `repodata.json` once more.
 * - **Start**: the store must refuse a second create-only PUT (probed on a
 *   scratch key), or the channel is not opened.
 * - **Serving**: what a path holds is looked up with a HEAD and trusted for
 *   `refreshMs` (so other replicas' writes show within that time); files up
 *   to 8 MiB are read whole when opened, larger ones streamed with `Range`
 *   and `If-Match` on the ETag.
 *
 * @module
 */

import { join } from "node:path";
import { type Logger, silentLogger } from "../log.ts";
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
import { channelPath, SPOOL_DIR_NAME } from "./channel_storage.ts";
import { type HeldLease, ObjectLease } from "./object_lease.ts";
import {
  ObjectExistsError,
  type ObjectInfo,
  ObjectNotFoundError,
  type ObjectStore,
  PreconditionFailedError,
  type StepwiseUpload,
} from "./object_store.ts";
import { MAX_SINGLE_PUT } from "./s3_object_store.ts";
import { probeStoreCapabilities } from "./store_capabilities.ts";

/** Options for {@linkcode S3ChannelStorage.open}. */
export interface S3ChannelStorageOptions {
  /** Where orphan sweeps and lease trouble are logged. @default {silentLogger} */
  logger?: Logger;
  /**
   * How long a looked-up file (its size and ETag, or its absence) is
   * trusted for serving before it is looked up again: the longest time
   * another replica's write stays unseen here.
   * @default {1000}
   */
  refreshMs?: number;
  /**
   * Age after which a package object no index records counts as the orphan
   * of a crashed upload and is deleted; an upload writes its record
   * milliseconds after its object, so this only has to exceed the longest
   * index write.
   * @default {300000} five minutes
   */
  orphanGraceMs?: number;
  /**
   * Packages above this size go as multipart uploads after a claim object.
   * @default {5 GiB, the S3 limit of one PUT}
   */
  multipartThreshold?: number;
  /**
   * Duration of the index writer lease; a replica killed while holding it
   * delays the others' index writes by at most this.
   * @default {10000}
   */
  leaseTtlMs?: number;
}

/** Files up to this size are read whole when opened (index files, small packages). */
const READ_WHOLE_BYTES = 8 * 1024 * 1024;
/** Name of the local directory of temporary copies (reconcile reads packages there). */
const COPIES_DIR_NAME = ".copies";
/** The index writer lease, under the prefix. */
const WRITER_LEASE = ".index/writer";
/** Claims of multipart uploads. */
const CLAIMS = ".index/claims";
/** Staging objects of uploads sent to the store while they arrive. */
const STAGING = ".index/staging";
/**
 * Part size of an upload sent while it arrives; an upload starts going to
 * the store once this much has arrived, so smaller ones never do.
 */
const STAGE_PART = 64 * 1024 * 1024;
/**
 * Parts of one upload in flight at once, while it arrives and after: with
 * one, the parts fell behind the arriving bytes and most of them went after
 * the upload had arrived, one by one.
 */
const STAGE_CONCURRENCY = 2;
/** How often arriving uploads are checked for a new part, in ms. */
const STAGE_POLL_MS = 100;
/** Metadata naming the upload that wrote a package object. */
const UPLOAD_METADATA = "auh-upload";
/** Prune the lease's old generations every this many acquisitions. */
const PRUNE_EVERY = 8;

const CONTENT_TYPES: ReadonlyArray<readonly [string, string]> = [
  [".json", "application/json"],
  [".zst", "application/zstd"],
  [".html", "text/html; charset=utf-8"],
  [".tar.bz2", "application/x-bzip2"],
];

interface _Looked {
  found: ServableFile | undefined;
  checkedAt: number;
}

/** A channel kept in an object store; see the module doc. */
export class S3ChannelStorage implements ChannelStore {
  /** `s3://bucket/prefix`, for people. */
  readonly root: string;
  readonly #store: ObjectStore;
  readonly #workDir: string;
  readonly #logger: Logger;
  readonly #refreshMs: number;
  readonly #orphanGraceMs: number;
  readonly #multipartThreshold: number;
  readonly #lease: ObjectLease;
  readonly #looked = new Map<string, _Looked>();
  readonly #looking = new Map<string, Promise<ServableFile | undefined>>();
  #nextVersion = 1;
  #held: HeldLease | undefined;
  #acquisitions = 0;
  readonly #staging = new Map<string, _Staging>();
  #stagingTimer: ReturnType<typeof setInterval> | undefined;

  private constructor(
    root: string,
    store: ObjectStore,
    workDir: string,
    options: S3ChannelStorageOptions,
  ) {
    this.root = root;
    this.#store = store;
    this.#workDir = workDir;
    this.#logger = options.logger ?? silentLogger;
    this.#refreshMs = options.refreshMs ?? 1000;
    this.#orphanGraceMs = options.orphanGraceMs ?? 5 * 60 * 1000;
    this.#multipartThreshold = options.multipartThreshold ?? MAX_SINGLE_PUT;
    this.#lease = new ObjectLease(store, WRITER_LEASE, {
      ttlMs: options.leaseTtlMs ?? 10_000,
      owner: `replica-${crypto.randomUUID().slice(0, 8)}`,
    });
  }

  /**
   * Opens the channel in `store` (named `root` for people) with `workDir` as
   * the local work directory (made when missing); checks that the store
   * answers.
   */
  static async open(
    root: string,
    store: ObjectStore,
    workDir: string,
    options: S3ChannelStorageOptions = {},
  ): Promise<S3ChannelStorage> {
    try {
      await Deno.mkdir(join(workDir, SPOOL_DIR_NAME), { recursive: true });
      await Deno.mkdir(join(workDir, COPIES_DIR_NAME), { recursive: true });
    } catch (error) {
      throw new Error(`Cannot open work directory ${workDir}: ${_describe(error)}`);
    }
    const storage = new S3ChannelStorage(root, store, workDir, options);
    let capabilities;
    try {
      await storage.checkWritable();
      capabilities = await probeStoreCapabilities(store, ".index/probe");
    } catch (error) {
      throw new Error(`Cannot open channel ${root}: ${_describe(error)}`);
    }
    if (!capabilities.createOnly) {
      throw new Error(
        `Cannot open channel ${root}: the store does not refuse a second create-only PUT (If-None-Match: *), so replicas could overwrite each other's packages`,
      );
    }
    return storage;
  }

  async checkWritable(): Promise<void> {
    const probe = join(this.#workDir, SPOOL_DIR_NAME, `.probe-${crypto.randomUUID()}`);
    await Deno.writeFile(probe, new Uint8Array(), { createNew: true });
    await Deno.remove(probe);
    // The store answers (a listing of one key).
    for await (const _ of this.#store.list(".index/", { pageSize: 1 })) break;
  }

  /**
   * Every object write is atomic, so nothing half-written exists; removes
   * staging objects older than the orphan grace (a replica died between
   * completing one and copying it). Unfinished multipart uploads of a
   * replica killed mid-upload are left to the bucket's lifecycle rule
   * (`AbortIncompleteMultipartUpload`, see the README).
   */
  async removeLeftoverTempFiles(): Promise<string[]> {
    const removed: string[] = [];
    for await (const info of this.#store.list(`${STAGING}/`)) {
      if (Date.now() - info.lastModified.getTime() < this.#orphanGraceMs) continue;
      await this.#store.delete(info.key);
      removed.push(info.key);
    }
    return removed;
  }

  async removeLeftoverSpoolFiles(): Promise<string[]> {
    const removed: string[] = [];
    for (const name of [SPOOL_DIR_NAME, COPIES_DIR_NAME]) {
      const directory = join(this.#workDir, name);
      for await (const entry of Deno.readDir(directory)) {
        await Deno.remove(join(directory, entry.name), { recursive: true }).catch(() => {});
        removed.push(entry.name);
      }
    }
    return removed;
  }

  createSpoolFile(): Promise<SpoolFile> {
    const path = join(
      this.#workDir,
      SPOOL_DIR_NAME,
      `${Date.now()}-${crypto.randomUUID()}.part`,
    );
    const file = Deno.openSync(path, { createNew: true, write: true, mode: 0o644 });
    this.#staging.set(path, {
      path,
      key: `${STAGING}/${crypto.randomUUID()}`,
      queued: 0,
      sending: new Set(),
      failed: false,
    });
    this.#stagingTimer ??= setInterval(() => this.#stageArrived(), STAGE_POLL_MS);
    Deno.unrefTimer(this.#stagingTimer);
    // Scratch: the store keeps the durable copy, so no fsync (~0.2 s per 512 MiB).
    return Promise.resolve({ path, file, durable: false });
  }

  async discardSpoolFile(path: string): Promise<void> {
    await this.#dropStaging(this.#takeStaging(path));
    await Deno.remove(path).catch(() => {});
  }

  /** Sends the next parts of every arriving upload that has whole parts more. */
  #stageArrived(): void {
    if (this.#staging.size === 0) {
      clearInterval(this.#stagingTimer);
      this.#stagingTimer = undefined;
      return;
    }
    for (const staging of this.#staging.values()) this.#stageMore(staging);
  }

  /** Starts parts of `staging`'s whole arrived parts, up to the parts in flight. */
  #stageMore(staging: _Staging): void {
    if (staging.failed || staging.sending.size >= STAGE_CONCURRENCY) return;
    if (!this.#staging.has(staging.path)) return; // being completed or dropped
    let size: number;
    try {
      size = Deno.statSync(staging.path).size;
    } catch {
      return;
    }
    while (staging.sending.size < STAGE_CONCURRENCY && size - staging.queued >= STAGE_PART) {
      this.#sendPart(staging, STAGE_PART, () => this.#stageMore(staging));
    }
  }

  /**
   * Sends the next `length` bytes of `staging` as its next part (parts are
   * numbered by offset, so they may finish in any order); a failure marks
   * the staging failed (the package then goes with one PUT).
   */
  #sendPart(staging: _Staging, length: number, then?: () => void): void {
    const offset = staging.queued;
    staging.queued += length;
    const partNumber = offset / STAGE_PART + 1;
    staging.upload ??= this.#store.startMultipart(staging.key);
    const upload = staging.upload;
    const sending = upload.then((started) =>
      started.uploadPart(partNumber, staging.path, offset, length)
    ).catch(() => {
      staging.failed = true;
    }).finally(() => {
      staging.sending.delete(sending);
      if (!staging.failed) then?.();
    });
    staging.sending.add(sending);
  }

  #takeStaging(path: string): _Staging | undefined {
    const staging = this.#staging.get(path);
    this.#staging.delete(path);
    return staging;
  }

  /** Waits for the parts in flight of `staging`. */
  async #settle(staging: _Staging): Promise<void> {
    while (staging.sending.size > 0) await Promise.all(staging.sending);
  }

  /** Aborts what an upload sent ahead (never throws). */
  async #dropStaging(staging: _Staging | undefined): Promise<void> {
    if (staging === undefined) return;
    await this.#settle(staging);
    await (await staging.upload?.catch(() => undefined))?.abort();
  }

  /**
   * Completes an upload sent ahead with the rest of the spool file; returns
   * the staging key, or undefined when none was started or it failed.
   */
  async #completeStaging(staging: _Staging | undefined, size: number): Promise<string | undefined> {
    if (staging === undefined) return undefined;
    if (staging.upload === undefined || staging.failed || size > MAX_SINGLE_PUT) {
      await this.#dropStaging(staging);
      return undefined;
    }
    // The rest goes with as many parts in flight as while arriving.
    while (staging.queued < size && !staging.failed) {
      if (staging.sending.size >= STAGE_CONCURRENCY) {
        await Promise.race(staging.sending);
        continue;
      }
      this.#sendPart(staging, Math.min(STAGE_PART, size - staging.queued));
    }
    await this.#settle(staging);
    const upload = await staging.upload.catch(() => undefined);
    if (staging.failed || upload === undefined) {
      await upload?.abort();
      this.#logger.warn("Cannot complete an upload sent ahead, sending it again");
      return undefined;
    }
    try {
      await upload.complete();
      return staging.key;
    } catch (error) {
      await upload.abort();
      this.#logger.warn("Cannot complete an upload sent ahead, sending it again", {
        reason: _describe(error),
      });
      return undefined;
    }
  }

  /**
   * Nothing to note: the replacing PUT is atomic, and a package object newer
   * than `repodata.json` is read again by reconcile.
   */
  markReplacing(subdir: string, filename: string): Promise<() => Promise<void>> {
    _checked(`${subdir}/${filename}`);
    return Promise.resolve(() => Promise.resolve());
  }

  async publish(
    spoolPath: string,
    subdir: string,
    filename: string,
    options: PublishOptions = {},
  ): Promise<{ replaced: boolean }> {
    const key = _checked(`${subdir}/${filename}`).join("/");
    const size = (await Deno.stat(spoolPath)).size;
    const staged = await this.#completeStaging(this.#takeStaging(spoolPath), size);
    const upload = crypto.randomUUID();
    const putOptions = {
      metadata: { [UPLOAD_METADATA]: upload },
      contentType: _contentType(key),
      multipartThreshold: this.#multipartThreshold,
    };
    const put = () =>
      staged === undefined
        ? this.#store.putFile(spoolPath, key, putOptions)
        : this.#store.copy(staged, key, putOptions);
    let replaced = false;
    try {
      if (options.replace) {
        replaced = await this.#store.head(key) !== undefined;
        await put();
      } else {
        await this.#withClaim(key, upload, async () => {
          if (staged === undefined && size <= this.#multipartThreshold) {
            // One create-only PUT: atomic by itself, no look first.
            await this.#store.putFile(spoolPath, key, { ...putOptions, createOnly: true });
            return;
          }
          // A copy or a multipart upload is unconditional on Ceph RGW: the
          // claim and this look keep it from replacing a package.
          if (await this.#store.head(key) !== undefined) throw new ObjectExistsError(key);
          await put();
        });
      }
    } catch (error) {
      if (error instanceof ObjectExistsError) throw new PackageExistsError(key);
      throw error;
    } finally {
      this.#looked.delete(key);
      if (staged !== undefined) await this.#store.delete(staged).catch(() => {});
    }
    await Deno.remove(spoolPath).catch(() => {});
    return { replaced };
  }

  /**
   * Runs `action` holding the create-only claim of `key`: of publishers
   * racing for a name exactly one holds it (a second gets
   * {@linkcode PackageExistsError}). A claim older than the orphan grace was
   * left by a crash and is taken over, under the writer lease so that only
   * one publisher takes it.
   */
  async #withClaim(key: string, upload: string, action: () => Promise<void>): Promise<void> {
    const claim = `${CLAIMS}/${key}`;
    const body = new TextEncoder().encode(JSON.stringify({ upload, at: new Date() }));
    const stale = (info: ObjectInfo | undefined) =>
      info !== undefined && Date.now() - info.lastModified.getTime() >= this.#orphanGraceMs;
    try {
      await this.#store.put(claim, body, { createOnly: true });
    } catch (error) {
      if (!(error instanceof ObjectExistsError)) throw error;
      if (!stale(await this.#store.head(claim))) throw new PackageExistsError(key);
      await this.withLock(async () => {
        const info = await this.#store.head(claim);
        if (info !== undefined && !stale(info)) throw new PackageExistsError(key);
        await this.#store.delete(claim);
        await this.#store.put(claim, body, { createOnly: true });
      });
    }
    try {
      await action();
    } finally {
      // Not waited for: once the package is in place its name is taken anyway.
      void this.#store.delete(claim).catch(() => {});
    }
  }

  async removePackage(subdir: string, filename: string): Promise<boolean> {
    return await this.removeFile(`${subdir}/${filename}`);
  }

  async removeFile(relative: string): Promise<boolean> {
    const key = _checked(relative).join("/");
    const existed = await this.#store.head(key) !== undefined;
    await this.#store.delete(key);
    this.#looked.delete(key);
    return existed;
  }

  async listDirectories(): Promise<string[]> {
    const names: string[] = [];
    for await (const name of this.#store.listPrefixes("")) {
      if (channelPath(name)?.length === 1) names.push(name);
    }
    return names.sort();
  }

  async listFiles(directory: string, suffixes: readonly string[]): Promise<ChannelEntry[]> {
    const prefix = _checked(directory).join("/") + "/";
    const entries: ChannelEntry[] = [];
    for await (const info of this.#store.list(prefix, { delimiter: "/" })) {
      const name = info.key.slice(prefix.length);
      if (name.includes("/") || !channelPath(name)) continue;
      if (!suffixes.some((suffix) => name.endsWith(suffix))) continue;
      entries.push(_entry(name, info));
    }
    return entries.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  }

  servable(relative: string): ServableFile | undefined | Promise<ServableFile | undefined> {
    if (!channelPath(relative)) return undefined;
    const looked = this.#looked.get(relative);
    if (looked !== undefined && performance.now() - looked.checkedAt < this.#refreshMs) {
      return looked.found;
    }
    let looking = this.#looking.get(relative);
    if (looking === undefined) {
      looking = this.#lookUp(relative).finally(() => this.#looking.delete(relative));
      this.#looking.set(relative, looking);
    }
    return looking;
  }

  /** HEADs `relative` and remembers the answer; the version stays while the ETag does. */
  async #lookUp(relative: string): Promise<ServableFile | undefined> {
    const info = await this.#store.head(relative);
    return this.#remember(relative, info);
  }

  #remember(relative: string, info: ObjectInfo | undefined): ServableFile | undefined {
    const previous = this.#looked.get(relative)?.found;
    let found: ServableFile | undefined;
    if (info !== undefined) {
      const entry = _entry(relative.slice(relative.lastIndexOf("/") + 1), info);
      const version = previous?.entry.tag === entry.tag ? previous!.version : this.#nextVersion++;
      found = { entry, version };
    }
    this.#looked.delete(relative);
    this.#looked.set(relative, { found, checkedAt: performance.now() });
    if (this.#looked.size > 16_384) this.#looked.delete(this.#looked.keys().next().value!);
    return found;
  }

  async stat(relative: string): Promise<ChannelEntry | undefined> {
    _checked(relative);
    return (await this.#lookUp(relative))?.entry;
  }

  async isDirectory(relative: string): Promise<boolean> {
    if (!channelPath(relative)) return false;
    for await (const _ of this.#store.list(`${relative}/`, { pageSize: 1 })) return true;
    return false;
  }

  async open(relative: string): Promise<OpenedFile | undefined> {
    const looked = this.servable(relative);
    const found = looked instanceof Promise ? await looked : looked;
    if (found === undefined) return undefined;
    if (found.entry.size <= READ_WHOLE_BYTES) {
      // Read whole now, without a condition: the bytes and their description
      // come from one answer, even if the object was replaced meanwhile.
      const read = await this.#store.getBytes(relative);
      if (read === undefined) {
        this.#remember(relative, undefined);
        return undefined;
      }
      const now = this.#remember(relative, read.info)!;
      return _bytesFile(new Uint8Array(read.bytes), now);
    }
    return this.#streamedFile(relative, found);
  }

  /** A large object, read by range with `If-Match` on the ETag it was opened under. */
  #streamedFile(relative: string, found: ServableFile): OpenedFile {
    const store = this.#store;
    const ifMatch = found.entry.tag!;
    const forget = (error: unknown) => {
      if (error instanceof PreconditionFailedError || error instanceof ObjectNotFoundError) {
        this.#looked.delete(relative);
      }
    };
    return {
      ...found,
      async read(start, length) {
        if (length === 0) return new Uint8Array(0);
        try {
          const result = await store.get(relative, {
            range: { start, end: start + length - 1 },
            ifMatch,
          });
          if (result.kind !== "body") throw new Error(`Cannot read ${relative}: not modified`);
          return new Uint8Array(await new Response(result.body).arrayBuffer());
        } catch (error) {
          forget(error);
          throw error;
        }
      },
      stream(start, length) {
        return _rangeStream(store, relative, ifMatch, start, length, forget);
      },
      close() {},
    };
  }

  async readFile(relative: string): Promise<Uint8Array | undefined> {
    _checked(relative);
    const read = await this.#store.getBytes(relative);
    this.#remember(relative, read?.info);
    return read?.bytes;
  }

  async writeFileAtomic(
    relative: string,
    data: Uint8Array | string,
    _options: WriteOptions = {},
  ): Promise<void> {
    const key = _checked(relative).join("/");
    if (this.#held !== undefined && !this.#held.isValid()) {
      throw new Error(`Cannot write ${key}: the index writer lease ran out`);
    }
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    await this.#store.put(key, bytes, { contentType: _contentType(key) });
    this.#looked.delete(key);
  }

  /**
   * One PUT after the other, in the order given: each object is replaced
   * atomically and is durable once its PUT is answered, so this is the order
   * readers see them in.
   */
  async writeFilesAtomic(files: readonly AtomicFile[]): Promise<void> {
    for (const { relative, data } of files) {
      await this.writeFileAtomic(relative, typeof data === "function" ? data() : data);
    }
  }

  async withLocalCopy<T>(relative: string, task: (path: string) => Promise<T>): Promise<T> {
    const key = _checked(relative).join("/");
    const name = key.slice(key.lastIndexOf("/") + 1);
    const directory = await Deno.makeTempDir({ dir: join(this.#workDir, COPIES_DIR_NAME) });
    const path = join(directory, name);
    try {
      const result = await this.#store.get(key);
      if (result.kind !== "body") throw new Error(`Cannot copy ${key}: not modified`);
      using file = await Deno.open(path, { createNew: true, write: true });
      await result.body.pipeTo(file.writable, { preventClose: true });
      return await task(path);
    } finally {
      await Deno.remove(directory, { recursive: true }).catch(() => {});
    }
  }

  async mayIndexUnrecorded(relative: string, _entry: ChannelEntry): Promise<boolean> {
    const key = _checked(relative).join("/");
    const info = await this.#store.head(key);
    if (info === undefined) return false;
    const upload = info.metadata?.[UPLOAD_METADATA];
    if (upload === undefined) return true; // put there by hand or by another tool
    if (Date.now() - info.lastModified.getTime() < this.#orphanGraceMs) return false; // in flight
    await this.withLock(async () => {
      const now = await this.#store.head(key);
      if (now?.metadata?.[UPLOAD_METADATA] !== upload) return; // replaced meanwhile
      const subdir = key.slice(0, key.lastIndexOf("/"));
      const repodata = await this.#store.getBytes(`${subdir}/repodata.json`);
      if (repodata !== undefined) {
        const text = new TextDecoder().decode(repodata.bytes);
        const filename = key.slice(subdir.length + 1);
        if (text.includes(JSON.stringify(filename))) return; // recorded after all
      }
      await this.#store.delete(key);
      this.#looked.delete(key);
      this.#logger.warn("removed the orphan of an unacknowledged upload", {
        path: key,
        upload,
        ageS: Math.round((Date.now() - info.lastModified.getTime()) / 1000),
      });
    });
    return false;
  }

  async withLock<T>(task: () => Promise<T>): Promise<T> {
    const held = await this.#lease.acquire({ waitMs: 10 * 60 * 1000, pollMs: 25 });
    held.keepRenewed();
    this.#held = held;
    try {
      return await task();
    } finally {
      if (this.#held === held) this.#held = undefined;
      await held.release().catch((error) => {
        this.#logger.warn("Cannot release the index writer lease", { reason: _describe(error) });
      });
      if (++this.#acquisitions % PRUNE_EVERY === 0) {
        void this.#lease.prune(4).catch(() => {});
      }
    }
  }

  /** Nothing is left running after a write. */
  settle(): Promise<void> {
    return Promise.resolve();
  }

  /** Aborts uploads still being sent ahead. */
  close(): void {
    for (const path of [...this.#staging.keys()]) void this.#dropStaging(this.#takeStaging(path));
    if (this.#stagingTimer !== undefined) clearInterval(this.#stagingTimer);
    this.#stagingTimer = undefined;
  }
}

/** An upload being sent to a staging object while it arrives. */
interface _Staging {
  /** The spool file. */
  path: string;
  /** Its staging object. */
  key: string;
  /** The multipart upload, started when the first part is due. */
  upload?: Promise<StepwiseUpload>;
  /** Bytes handed to parts so far (sent or in flight). */
  queued: number;
  /** The parts in flight. */
  sending: Set<Promise<void>>;
  /** Set when a part failed: the package then goes with one PUT. */
  failed: boolean;
}

/** A file read whole into memory. */
function _bytesFile(bytes: Uint8Array<ArrayBuffer>, found: ServableFile): OpenedFile {
  const entry = { ...found.entry, size: bytes.length };
  return {
    entry,
    version: found.version,
    read: (start, length) => Promise.resolve(bytes.slice(start, start + length)),
    stream(start, length) {
      const slice = bytes.subarray(start, start + length);
      return new ReadableStream({
        start(controller) {
          if (slice.length < length) {
            controller.error(new Error("Cannot stream file: it is shorter than its size"));
            return;
          }
          if (slice.length > 0) controller.enqueue(slice);
          controller.close();
        },
      });
    },
    close() {},
  };
}

/** `length` bytes from `start` of an object, fetched when first pulled. */
function _rangeStream(
  store: ObjectStore,
  key: string,
  ifMatch: string,
  start: number,
  length: number,
  onError: (error: unknown) => void,
): ReadableStream<Uint8Array<ArrayBuffer>> {
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  let remaining = length;
  const controllerAbort = new AbortController();
  return new ReadableStream<Uint8Array<ArrayBuffer>>({
    async pull(controller) {
      try {
        if (remaining === 0) {
          controller.close();
          return;
        }
        if (reader === undefined) {
          const result = await store.get(key, {
            range: { start, end: start + length - 1 },
            ifMatch,
            signal: controllerAbort.signal,
          });
          if (result.kind !== "body") throw new Error(`Cannot read ${key}: not modified`);
          reader = result.body.getReader();
        }
        const { done, value } = await reader.read();
        if (done) throw new Error("Cannot stream file: it is shorter than its announced size");
        const chunk = value.length > remaining ? value.subarray(0, remaining) : value;
        remaining -= chunk.length;
        controller.enqueue(new Uint8Array(chunk));
        if (remaining === 0) {
          await reader.cancel().catch(() => {});
          controller.close();
        }
      } catch (error) {
        onError(error);
        controller.error(error);
      }
    },
    async cancel() {
      controllerAbort.abort();
      await reader?.cancel().catch(() => {});
    },
  }, { highWaterMark: 0 });
}

/** Times in whole seconds: a HEAD has no more, a listing has. */
function _entry(name: string, info: ObjectInfo): ChannelEntry {
  const mtimeMs = Math.floor(info.lastModified.getTime() / 1000) * 1000;
  return { name, size: info.size, mtimeMs, tag: info.etag };
}

function _contentType(key: string): string {
  for (const [suffix, type] of CONTENT_TYPES) if (key.endsWith(suffix)) return type;
  return "application/octet-stream";
}

function _checked(relative: string): string[] {
  const segments = channelPath(relative);
  if (!segments) throw new TypeError(`Cannot use channel path: ${JSON.stringify(relative)}`);
  return segments;
}

function _describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
