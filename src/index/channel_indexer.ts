/**
 * The contract between the upload path and whatever keeps the channel's
 * index: the built-in incremental index or an external `conda index`.
 *
 * @module
 */

import type { PackageRecordSource } from "../package/package_metadata.ts";

/** What a reconcile pass found and did. */
export interface ReconcileReport {
  /** Subdirs looked at. */
  subdirs: string[];
  /** Packages read and added because the index lacked them or they changed ("subdir/file"). */
  added: string[];
  /** Records dropped because their file is gone ("subdir/file"). */
  removed: string[];
  /** Packages that could not be read, with the reason; left out of the index. */
  failed: { path: string; reason: string }[];
  /** Packages trusted from the existing index without being re-read. */
  unchanged: number;
}

/** Keeps a channel's index in line with its package files. */
export interface ChannelIndexer {
  /**
   * Adds (or replaces) the record of a package whose file is already
   * published, and resolves only once the index files that contain it are in
   * place. Concurrent calls may share one index write.
   */
  add(source: PackageRecordSource): Promise<void>;
  /**
   * Whether add() writes into the package's subdir and syncs its directory
   * before it resolves, every time, so that the package's new name becomes
   * durable with its record.
   */
  readonly syncsSubdirectory: boolean;
  /**
   * Drops the record of a package whose file was removed; resolves once the
   * index files without it are in place. Returns false when it had no record.
   */
  remove(subdir: string, filename: string): Promise<boolean>;
  /** Brings every subdir's index in line with the files present. */
  reconcile(): Promise<ReconcileReport>;
  /**
   * Writes what the indexer writes behind, then stops it (call before
   * exiting); resolves when done.
   */
  close(): Promise<void>;
}
