/**
 * Reconcile: brings every subdir's index in line with the package files
 * present, reading only the packages the index cannot vouch for.
 *
 * A subdir is a directory whose name is one of conda's well-known subdirs,
 * or any well-formed subdir name (`linux-fake`) that already has a
 * `repodata.json` or holds packages; other directories are left alone.
 *
 * @module
 */

import type { Logger } from "../log.ts";
import { inspectPackage } from "../package/inspect_package.ts";
import { isKnownSubdir, isSubdirName } from "../package/platforms.ts";
import type { ChannelEntry, ChannelStore } from "../storage/channel_store.ts";
import type { ReconcileReport } from "./channel_indexer.ts";
import { digestBytes, digestChannelFile } from "./file_digest.ts";
import type { IndexOp, IndexWriteCycle } from "./index_write_cycle.ts";
import type { SubdirFiles } from "./subdir_files.ts";
import { type IndexedPackage, indexedPackageFromSource } from "./subdir_index.ts";

/** The suffixes of package files. */
export const PACKAGE_SUFFIXES = [".tar.bz2", ".conda"] as const;
const READ_CONCURRENCY = 2;
/** Packages up to this size are read whole, once, for both inspection and hashes. */
const WHOLE_READ_BYTES = 16 * 1024 * 1024;

/** What {@linkcode reconcileChannel} works with. */
export interface ReconcileContext {
  /** The channel. */
  storage: ChannelStore;
  /** The index's write cycle, which holds the subdirs in memory. */
  cycle: IndexWriteCycle;
  /** The subdirs' files, to tell stale ones. */
  files: SubdirFiles;
  /** Where unreadable packages are logged. */
  logger: Logger;
}

/**
 * The subdirs of the channel: `noarch`, those in memory, and the channel's
 * directories that are well-known subdirs or well-formed subdir names with
 * a `repodata.json` or package files.
 */
export async function channelSubdirs(
  storage: ChannelStore,
  inMemory: Iterable<string>,
): Promise<string[]> {
  const subdirs = new Set(["noarch", ...inMemory]);
  for (const name of await storage.listDirectories()) {
    if (subdirs.has(name) || !isSubdirName(name)) continue;
    if (
      isKnownSubdir(name) || await storage.stat(`${name}/repodata.json`) !== undefined ||
      (await storage.listFiles(name, PACKAGE_SUFFIXES)).length > 0
    ) {
      subdirs.add(name);
    }
  }
  return [...subdirs].sort();
}

/**
 * Records whose file is gone are dropped; files the index lacks, whose size
 * differs from their record, that are newer than the subdir's
 * `repodata.json`, or whose run exports are not known (a channel indexed
 * before `run_exports.json` existed) are read and indexed; the others are
 * trusted without being opened. Packages that cannot be read are reported,
 * logged and left out. Only subdirs that changed (or whose index files are
 * missing, stale or unreadable) are written.
 */
export async function reconcileChannel(context: ReconcileContext): Promise<ReconcileReport> {
  const { storage, cycle, files } = context;
  await cycle.enqueue(undefined, undefined);
  const report: ReconcileReport = {
    subdirs: [],
    added: [],
    removed: [],
    failed: [],
    unchanged: 0,
  };
  report.subdirs = await channelSubdirs(storage, cycle.subdirs.keys());
  const writes: Promise<unknown>[] = [];
  for (const subdir of report.subdirs) {
    const state = cycle.subdirs.get(subdir);
    const repodata = await storage.stat(`${subdir}/repodata.json`);
    const packageFiles = await storage.listFiles(subdir, PACKAGE_SUFFIXES);
    const listed = new Set(packageFiles.map((file) => file.name));
    const toRead: ChannelEntry[] = [];
    for (const file of packageFiles) {
      const known = state?.index.get(file.name);
      const trusted = known !== undefined && known.record.size === file.size &&
        known.runExports !== undefined &&
        repodata !== undefined && file.mtimeMs <= repodata.mtimeMs;
      if (trusted) report.unchanged++;
      else if (known || await storage.mayIndexUnrecorded(`${subdir}/${file.name}`, file)) {
        toRead.push(file);
      }
    }
    const gone = state
      ? [...state.index.packages()].filter((pkg) => !listed.has(pkg.filename))
      : [];
    const { read, unreadable } = await _readPackages(context, subdir, toRead, report);
    const ops: IndexOp[] = [];
    for (const pkg of read) ops.push({ kind: "add", pkg });
    for (const filename of unreadable) {
      if (state?.index.get(filename)) {
        ops.push({ kind: "remove", filename, onlyIfFileGone: false });
      }
    }
    if (!state || state.stale || !repodata || await files.stale(subdir, state)) {
      ops.push({ kind: "write" });
    }
    for (const op of ops) writes.push(cycle.enqueue(subdir, op));
    for (const pkg of gone) {
      const path = `${subdir}/${pkg.filename}`;
      const op: IndexOp = { kind: "remove", filename: pkg.filename, onlyIfFileGone: true };
      writes.push(
        cycle.enqueue(subdir, op).then((removed) => removed && report.removed.push(path)),
      );
    }
    report.added.push(...read.map((pkg) => `${subdir}/${pkg.filename}`));
  }
  const outcomes = await Promise.allSettled(writes);
  const failure = outcomes.find((outcome) => outcome.status === "rejected");
  if (failure) throw failure.reason;
  report.removed.sort();
  return report;
}

/** Reads packages a few at a time; failures go to `report.failed`. */
async function _readPackages(
  context: ReconcileContext,
  subdir: string,
  files: ChannelEntry[],
  report: ReconcileReport,
): Promise<{ read: IndexedPackage[]; unreadable: string[] }> {
  const read: IndexedPackage[] = [];
  const unreadable: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < files.length) {
      const filename = files[next++]!.name;
      const path = `${subdir}/${filename}`;
      try {
        read.push(await _readPackage(context.storage, subdir, filename));
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        report.failed.push({ path, reason });
        unreadable.push(filename);
        context.logger.warn("Cannot index package", { path, reason });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(READ_CONCURRENCY, files.length) }, worker));
  read.sort((a, b) => a.filename < b.filename ? -1 : a.filename > b.filename ? 1 : 0);
  return { read, unreadable };
}

/**
 * Reads, inspects and digests one package. One that fits in
 * {@linkcode WHOLE_READ_BYTES} is read once, whole, and inspected and hashed
 * from memory; a larger one is inspected from its file, then streamed through
 * the hashes.
 */
async function _readPackage(
  storage: ChannelStore,
  subdir: string,
  filename: string,
): Promise<IndexedPackage> {
  const path = `${subdir}/${filename}`;
  const opened = await storage.open(path);
  if (!opened) throw new Error(`Cannot index ${path}: not a file in the channel`);
  let bytes: Uint8Array | undefined;
  try {
    if (opened.entry.size <= WHOLE_READ_BYTES) bytes = await opened.read(0, opened.entry.size);
  } finally {
    opened.close();
  }
  const metadata = bytes
    ? await inspectPackage(bytes, filename)
    : await storage.withLocalCopy(path, (local) => inspectPackage(local, filename));
  if (metadata.subdir !== subdir) {
    throw new Error(`Cannot index ${path}: its index.json is for subdir ${metadata.subdir}`);
  }
  const digest = bytes ? digestBytes(bytes) : await digestChannelFile(storage, path);
  return indexedPackageFromSource({ ...digest, filename, metadata });
}
