/**
 * The upload path shared by every protocol: spool the bytes with their
 * hashes, verify what the client declared, inspect the package, publish it
 * atomically and update the index. The front door (`front_door.ts`) calls
 * {@linkcode UploadService.receive} then {@linkcode UploadService.publish}.
 *
 * @module
 */

import { type Identity, identityFields } from "../auth/token_scope.ts";
import { HttpError } from "../http/http_error.ts";
import { STATUS, type Status } from "../http/status.ts";
import type { ChannelIndexer } from "../index/channel_indexer.ts";
import type { Logger } from "../log.ts";
import { inspectPackage } from "../package/inspect_package.ts";
import type { FileDigest, PackageRecordSource } from "../package/package_metadata.ts";
import { parsePackageFilename } from "../package/package_filename.ts";
import { isSubdirName } from "../package/platforms.ts";
import { type ChannelStore, PackageExistsError } from "../storage/channel_store.ts";
import { writeSpool } from "./spool_writer.ts";

/** Options for {@linkcode UploadService}. */
export interface UploadServiceOptions {
  /** Largest artifact accepted, in bytes. */
  maxUploadBytes: number;
  /** Whether a client may replace an existing package (`force`). */
  allowOverwrite: boolean;
  /** Where upload lines go. */
  logger: Logger;
  /** Told of every publish, delete and index update (audit log, metrics). */
  events?: UploadEvents;
  /** The channel's name, for log lines. */
  channel?: string;
  /**
   * Subdir names this channel must not take, because `/<name>/` is another
   * channel on this server (the channel at `/` and each `--channel NAME`).
   * @default {[]}
   */
  shadowedSubdirs?: readonly string[];
}

/** What {@linkcode UploadService} reports as it works. */
export interface UploadEvents {
  /** A package was published or replaced; awaited before the client is answered. */
  published?(stored: StoredPackage, identity: Identity): Promise<void> | void;
  /** A package was deleted; awaited before the client is answered. */
  deleted?(subdir: string, filename: string, identity: Identity): Promise<void> | void;
  /** The index took `seconds` to take in an upload. */
  indexed?(seconds: number): void;
}

/** An artifact received completely into its spool file. */
export interface SpooledArtifact extends FileDigest {
  /** Path of the spool file. */
  path: string;
  /** The whole artifact, when it is small enough to be kept in memory for inspection. */
  bytes?: Uint8Array;
  /** Resolves once the spool file is synced and closed (see `SpoolDigest.durable`). */
  durable?: Promise<void>;
}

/** What a client asks for when publishing a spooled artifact. */
export interface PublishRequest {
  /** The package's filename as the client named it. */
  filename: string;
  /** Who uploads it. */
  identity: Identity;
  /** sha256 the client declared; verified against the received bytes. */
  expectedSha256?: string | undefined;
  /** Subdir the client declared (the original's `arch` field, a PUT path); must agree. */
  expectedSubdir?: string | undefined;
  /** Replace an existing package of the same name (only if the server allows it). */
  replace?: boolean | undefined;
  /**
   * Status for a sha256 mismatch (quetz answers 406).
   * @default {400}
   */
  checksumMismatchStatus?: Status;
}

/** What was stored, as the 201 answer describes it. */
export interface StoredPackage {
  name: string;
  version: string;
  build: string;
  subdir: string;
  filename: string;
  size: number;
  sha256: string;
  md5: string;
  /** Whether an existing package was replaced. */
  replaced: boolean;
}

/** Receives, checks, publishes and indexes packages. */
export class UploadService {
  readonly #storage: ChannelStore;
  readonly #indexer: ChannelIndexer;
  readonly #options: UploadServiceOptions;
  /** The last publish or delete of each file that is running or queued, by `subdir/filename`. */
  readonly #fileTasks = new Map<string, Promise<void>>();

  constructor(storage: ChannelStore, indexer: ChannelIndexer, options: UploadServiceOptions) {
    this.#storage = storage;
    this.#indexer = indexer;
    this.#options = options;
  }

  /** The largest artifact accepted, in bytes. */
  get maxUploadBytes(): number {
    return this.#options.maxUploadBytes;
  }

  /** Throws 413 when a declared length is over the limit, before any byte is read. */
  checkDeclaredLength(length: number | undefined): void {
    if (length !== undefined && length > this.#options.maxUploadBytes) {
      throw new HttpError(
        STATUS.ContentTooLarge,
        `Cannot accept artifact: ${length} bytes is larger than the limit of ${this.#options.maxUploadBytes} bytes`,
      );
    }
  }

  /** Checks a filename before its bytes are spooled (400/415 when unusable). */
  checkFilename(filename: string | undefined): string {
    if (filename === undefined || filename === "") {
      throw new HttpError(STATUS.BadRequest, "Cannot accept artifact: it has no filename");
    }
    parsePackageFilename(filename);
    return filename;
  }

  /** Streams `body` into a new spool file; on any failure the spool file is gone. */
  async receive(body: ReadableStream<Uint8Array>): Promise<SpooledArtifact> {
    const spool = await this.#storage.createSpoolFile();
    try {
      const digest = await writeSpool(body, spool, { maxBytes: this.#options.maxUploadBytes });
      return { path: spool.path, ...digest };
    } catch (error) {
      await this.#storage.discardSpoolFile(spool.path);
      throw error;
    }
  }

  /** Removes a spooled artifact that will not be published. */
  async discard(artifact: SpooledArtifact): Promise<void> {
    await artifact.durable?.catch(() => {});
    await this.#storage.discardSpoolFile(artifact.path);
  }

  /**
   * Verifies, inspects, publishes and indexes a spooled artifact. The spool
   * file is consumed either way; on failure the channel is as it was.
   */
  async publish(artifact: SpooledArtifact, request: PublishRequest): Promise<StoredPackage> {
    try {
      return await this.#publish(artifact, request);
    } catch (error) {
      // On success the spool file became the package; on failure it must go.
      await this.discard(artifact);
      throw error;
    }
  }

  /**
   * Removes a package and its index record; false when there was no such
   * package. Never interleaves with a publish of the same file.
   */
  async remove(subdir: string, filename: string, identity: Identity): Promise<boolean> {
    if (!isSubdirName(subdir)) return false;
    this.checkFilename(filename);
    const removed = await this.#oneAtATime(subdir, filename, async () => {
      const removedFile = await this.#storage.removePackage(subdir, filename);
      const unindexed = await this.#indexer.remove(subdir, filename);
      return removedFile || unindexed;
    });
    if (removed) {
      this.#options.logger.info("deleted", {
        package: filename,
        subdir,
        channel: this.#options.channel,
        ...identityFields(identity),
      });
      await this.#report(() => this.#options.events?.deleted?.(subdir, filename, identity));
    }
    return removed;
  }

  /**
   * Runs `task` once no other publish or delete of `subdir/filename` is
   * running: a delete racing an upload of the same file then either comes
   * first (and the upload publishes and indexes afresh) or second (and
   * removes file and record), never in between, where it would leave a
   * record whose file is gone.
   */
  async #oneAtATime<T>(subdir: string, filename: string, task: () => Promise<T>): Promise<T> {
    const key = `${subdir}/${filename}`;
    const before = this.#fileTasks.get(key) ?? Promise.resolve();
    const run = before.then(task, task);
    const settled = run.then(() => {}, () => {});
    this.#fileTasks.set(key, settled);
    try {
      return await run;
    } finally {
      if (this.#fileTasks.get(key) === settled) this.#fileTasks.delete(key);
    }
  }

  async #publish(artifact: SpooledArtifact, request: PublishRequest): Promise<StoredPackage> {
    const { filename } = request;
    this.checkFilename(filename);
    if (request.expectedSha256 !== undefined) {
      const expected = request.expectedSha256.trim().toLowerCase();
      if (expected !== artifact.sha256) {
        throw new HttpError(
          request.checksumMismatchStatus ?? STATUS.BadRequest,
          `Cannot accept artifact: sha256 mismatch (declared ${
            expected.slice(0, 64)
          }, received ${artifact.sha256})`,
        );
      }
    }
    const metadata = await inspectPackage(artifact.bytes ?? artifact.path, filename);
    if (request.expectedSubdir !== undefined && request.expectedSubdir !== metadata.subdir) {
      throw new HttpError(
        STATUS.UnprocessableContent,
        `Cannot accept artifact: it is for subdir ${metadata.subdir}, not ${
          JSON.stringify(request.expectedSubdir.slice(0, 64))
        }`,
      );
    }
    if (this.#options.shadowedSubdirs?.includes(metadata.subdir.toLowerCase())) {
      throw new HttpError(
        STATUS.Conflict,
        `Cannot publish package: its subdir ${metadata.subdir} is the name of another channel on this server (/${metadata.subdir}/)`,
      );
    }
    const replace = request.replace === true;
    if (replace && !this.#options.allowOverwrite) {
      throw new HttpError(
        STATUS.Forbidden,
        "Cannot replace package: overwriting is disabled on this server (--allow_overwrite)",
      );
    }
    // The spool's sync ran while the package was inspected: its bytes are on
    // disk before they take their name.
    await artifact.durable;
    // A replacement is one index write: `add` of a name the index holds
    // replaces its record, so a reader polling repodata.json sees the old
    // record or the new one, never neither. Between the rename and that write
    // the old record describes bytes that are gone; a durable note covers a
    // crash in between (the next start makes reconcile re-read the file).
    const replaced = await this.#oneAtATime(metadata.subdir, filename, async () => {
      const forget = replace
        ? await this.#storage.markReplacing(metadata.subdir, filename)
        : undefined;
      const outcome = await this.#publishAndIndex(
        artifact,
        { filename, metadata, ...digestOf(artifact) },
        replace,
      );
      // Keep the note only when the index may still hold the replaced record.
      if (outcome.indexAgrees) await forget?.();
      if ("failure" in outcome) throw outcome.failure;
      return outcome.replaced;
    });
    this.#options.logger.info(replaced ? "replaced" : "published", {
      package: filename,
      subdir: metadata.subdir,
      size: artifact.size,
      sha256: artifact.sha256,
      channel: this.#options.channel,
      ...identityFields(request.identity),
    });
    const stored: StoredPackage = {
      name: metadata.name,
      version: metadata.version,
      build: metadata.build,
      subdir: metadata.subdir,
      filename,
      size: artifact.size,
      sha256: artifact.sha256,
      md5: artifact.md5,
      replaced,
    };
    await this.#report(() => this.#options.events?.published?.(stored, request.identity));
    return stored;
  }

  /**
   * Moves the spool file into place and adds its record. A failure comes
   * back rather than thrown, with whether the index and the files still
   * agree, so that the caller knows whether the replacement note may go.
   */
  async #publishAndIndex(
    artifact: SpooledArtifact,
    source: PackageRecordSource,
    replace: boolean,
  ): Promise<_PublishOutcome> {
    const { filename, metadata } = source;
    let replaced: boolean;
    try {
      ({ replaced } = await this.#storage.publish(artifact.path, metadata.subdir, filename, {
        replace,
        // The index write syncs the subdir: the package's name with the index's.
        deferDirectorySync: this.#indexer.syncsSubdirectory,
      }));
    } catch (error) {
      const failure = error instanceof PackageExistsError
        ? conflict(metadata.subdir, filename)
        : error instanceof Error
        ? error
        : new Error(String(error));
      // A replacement that failed may have changed the bytes under the old
      // record: the note stays, and the next start re-reads the file.
      const unchanged = !replace || error instanceof PackageExistsError;
      return { failure, indexAgrees: unchanged };
    }
    const indexStarted = performance.now();
    try {
      await this.#indexer.add(source);
      this.#options.events?.indexed?.((performance.now() - indexStarted) / 1000);
      return { replaced, indexAgrees: true };
    } catch (error) {
      let indexAgrees = true;
      if (!replaced) await this.#storage.removePackage(metadata.subdir, filename);
      else {
        // The old record describes bytes that were replaced: drop it if the index can.
        indexAgrees = await this.#indexer.remove(metadata.subdir, filename).then(
          () => true,
          () => false,
        );
      }
      this.#options.logger.error("index failed, package taken back out", {
        package: filename,
        subdir: metadata.subdir,
        reason: error instanceof Error ? error.message : String(error),
      });
      const failure = new HttpError(
        STATUS.InternalServerError,
        `Cannot index package: ${error instanceof Error ? error.message : String(error)}`,
        { cause: error },
      );
      return { failure, indexAgrees };
    }
  }

  /** Runs an event hook; a failing hook is logged, never fails the request. */
  async #report(hook: () => Promise<void> | void): Promise<void> {
    try {
      await hook();
    } catch (error) {
      this.#options.logger.error("event hook failed", {
        reason: error instanceof Error ? error.message : String(error),
      });
    }
  }
}

type _PublishOutcome =
  | { replaced: boolean; indexAgrees: true }
  | { failure: Error; indexAgrees: boolean };

function digestOf(artifact: SpooledArtifact): FileDigest {
  return { size: artifact.size, sha256: artifact.sha256, md5: artifact.md5 };
}

function conflict(subdir: string, filename: string): HttpError {
  return new HttpError(
    STATUS.Conflict,
    `Cannot publish package: ${subdir}/${filename} already exists`,
  );
}
