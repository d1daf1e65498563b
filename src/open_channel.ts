/**
 * Opens one channel for serving and uploads: its storage (directory, spool,
 * cross-process lock), the leftovers of a crash removed, and its index
 * brought in line with the files present. Every channel of a server, the one
 * at `/` and each `--channel NAME=DIR`, is opened on its own, so each has
 * its own lock, index and `noarch`.
 *
 * @module
 */

import { ConfigError, type ObjectStorageConfig } from "./config.ts";
import { BuiltinIndex } from "./index/builtin_index.ts";
import type { ChannelIndexer, ReconcileReport } from "./index/channel_indexer.ts";
import { CondaExeIndex } from "./index/conda_exe_index.ts";
import type { LogFields, Logger } from "./log.ts";
import type { NamedChannel } from "./named_channels.ts";
import { ChannelStorage } from "./storage/channel_storage.ts";
import type { ChannelStore } from "./storage/channel_store.ts";
import { S3ChannelStorage } from "./storage/s3_channel_storage.ts";
import { S3ObjectStore } from "./storage/s3_object_store.ts";

/** An opened channel. */
export interface OpenChannel {
  /** Its name in upload URLs (and for `--channel`, the first segment of its URLs). */
  name: string;
  /** Its files. */
  storage: ChannelStore;
  /** Its index. */
  indexer: ChannelIndexer;
  /** Stops the periodic reconcile of an object-store channel (a no-op otherwise). */
  stopSweeping(): void;
}

/** Options for {@linkcode openChannel}. */
export interface OpenChannelOptions {
  /** Where log lines go. */
  logger: Logger;
  /** Index with `CONDA_EXE index` instead of the built-in index. */
  condaExe?: string;
  /** Keep the channel in this object store; `channel.root` is then the local work directory. */
  objectStorage?: ObjectStorageConfig;
}

/**
 * Opens the storage of `channel`: its directory, or with `objectStorage`
 * the object store (and `root` as the work directory). Throws
 * {@linkcode ConfigError} when it cannot be used.
 */
export async function openChannelStore(
  root: string,
  options: Pick<OpenChannelOptions, "logger" | "objectStorage">,
): Promise<ChannelStore> {
  try {
    const objectStorage = options.objectStorage;
    if (objectStorage === undefined) return await ChannelStorage.open(root);
    const { bucket, prefix } = objectStorage.location;
    const store = new S3ObjectStore(objectStorage.settings, objectStorage.location);
    return await S3ChannelStorage.open(`s3://${bucket}/${prefix}`, store, root, {
      logger: options.logger,
      ...(objectStorage.refreshMs === undefined ? {} : { refreshMs: objectStorage.refreshMs }),
      ...(objectStorage.orphanGraceMs === undefined
        ? {}
        : { orphanGraceMs: objectStorage.orphanGraceMs }),
      ...(objectStorage.multipartThreshold === undefined
        ? {}
        : { multipartThreshold: objectStorage.multipartThreshold }),
    });
  } catch (error) {
    throw new ConfigError(error instanceof Error ? error.message : String(error));
  }
}

/**
 * Opens `channel`. Throws {@linkcode ConfigError} when its directory cannot
 * be used.
 */
export async function openChannel(
  channel: NamedChannel,
  options: OpenChannelOptions,
): Promise<OpenChannel> {
  const { logger } = options;
  const storage = await openChannelStore(channel.root, options);
  try {
    const leftovers = await storage.removeLeftoverSpoolFiles();
    if (leftovers.length > 0) {
      logger.warn("removed leftover spool files of interrupted uploads", {
        count: leftovers.length,
        channel: channel.name,
      });
    }
    const temporary = await storage.withLock(() => storage.removeLeftoverTempFiles());
    if (temporary.length > 0) {
      logger.warn("removed leftover temporary index files", {
        count: temporary.length,
        channel: channel.name,
      });
    }
    const indexer = await openIndexer(channel.name, storage, options);
    const stopSweeping = options.objectStorage === undefined
      ? () => {}
      : sweepPeriodically(channel.name, indexer, options);
    return { name: channel.name, storage, indexer, stopSweeping };
  } catch (error) {
    storage.close();
    throw error;
  }
}

/**
 * Reconciles an object-store channel now and then, which also sweeps the
 * orphans of uploads a crashed replica never acknowledged (see
 * `s3_channel_storage.ts`): every half orphan grace (at most once a second).
 * Returns the function that stops it.
 */
function sweepPeriodically(
  name: string,
  indexer: ChannelIndexer,
  options: OpenChannelOptions,
): () => void {
  const graceMs = options.objectStorage?.orphanGraceMs ?? 5 * 60 * 1000;
  let running = false;
  const timer = setInterval(async () => {
    if (running) return;
    running = true;
    try {
      const report = await indexer.reconcile();
      if (report.added.length + report.removed.length > 0) {
        options.logger.info("index reconciled with the store", {
          channel: name,
          added: report.added.length,
          removed: report.removed.length,
        });
      }
    } catch (error) {
      options.logger.warn("Cannot reconcile index with the store", {
        channel: name,
        reason: error instanceof Error ? error.message : String(error),
      });
    } finally {
      running = false;
    }
  }, Math.max(1000, graceMs / 2));
  Deno.unrefTimer(timer);
  return () => clearInterval(timer);
}

async function openIndexer(
  name: string,
  storage: ChannelStore,
  options: OpenChannelOptions,
): Promise<ChannelIndexer> {
  const { logger } = options;
  if (options.condaExe !== undefined) {
    if (!(storage instanceof ChannelStorage)) {
      throw new ConfigError("Cannot start: --conda_exe needs a local channel directory");
    }
    return new CondaExeIndex(options.condaExe, storage, { logger });
  }
  const index = await BuiltinIndex.open(storage, { logger });
  await reconcileAndLog(index, logger, "index reconciled", { channel: name });
  return index;
}

/**
 * Brings `indexer` in line with the package files present and logs how it
 * went: a warning for each package left out of the index, then `message`
 * with the counts; every line carries `fields` (e.g. the channel's name).
 */
export async function reconcileAndLog(
  indexer: ChannelIndexer,
  logger: Logger,
  message: string,
  fields: LogFields = {},
): Promise<ReconcileReport> {
  const started = performance.now();
  const report = await indexer.reconcile();
  for (const failure of report.failed) {
    logger.warn("package left out of the index", {
      ...fields,
      path: failure.path,
      reason: failure.reason,
    });
  }
  logger.info(message, {
    ...fields,
    subdirs: report.subdirs.length,
    added: report.added.length,
    removed: report.removed.length,
    failed: report.failed.length,
    unchanged: report.unchanged,
    ms: Math.round(performance.now() - started),
  });
  return report;
}
