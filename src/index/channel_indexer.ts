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
   * Whether a write of add() syncs the package's subdir directory after
   * putting its files there, so that the package's new name becomes durable
   * with it (an add() that changes nothing writes nothing: the name it
   * would cover is a replacement by the same bytes).
   */
  readonly syncsSubdirectory: boolean;
  /**
   * Drops the record of a package whose file was removed; resolves once the
   * index files without it are in place. Returns false when it had no record.
   */
  remove(subdir: string, filename: string): Promise<boolean>;
  /** Brings every subdir's index in line with the files present. */
  reconcile(): Promise<ReconcileReport>;
  /** Writes now what the indexer writes behind (call before exiting); resolves when done. */
  flush(): Promise<void>;
}
