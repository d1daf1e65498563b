/**
 * Opens one channel for serving and uploads: its storage (directory, spool,
 * cross-process lock), the leftovers of a crash removed, and its index
 * brought in line with the files present. Every channel of a server, the one
 * at `/` and each `--channel NAME=DIR`, is opened on its own, so each has
 * its own lock, index and `noarch`.
 *
 * @module
 */

import { ConfigError } from "./config.ts";
import { BuiltinIndex } from "./index/builtin_index.ts";
import type { ChannelIndexer, ReconcileReport } from "./index/channel_indexer.ts";
import { CondaExeIndex } from "./index/conda_exe_index.ts";
import type { LogFields, Logger } from "./log.ts";
import type { NamedChannel } from "./named_channels.ts";
import { ChannelStorage } from "./storage/channel_storage.ts";

/** An opened channel. */
export interface OpenChannel {
  /** Its name in upload URLs (and for `--channel`, the first segment of its URLs). */
  name: string;
  /** Its files. */
  storage: ChannelStorage;
  /** Its index. */
  indexer: ChannelIndexer;
}

/** Options for {@linkcode openChannel}. */
export interface OpenChannelOptions {
  /** Where log lines go. */
  logger: Logger;
  /** Index with `CONDA_EXE index` instead of the built-in index. */
  condaExe?: string;
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
  let storage: ChannelStorage;
  try {
    storage = await ChannelStorage.open(channel.root);
  } catch (error) {
    throw new ConfigError(error instanceof Error ? error.message : String(error));
  }
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
    return { name: channel.name, storage, indexer };
  } catch (error) {
    storage.close();
    throw error;
  }
}

async function openIndexer(
  name: string,
  storage: ChannelStorage,
  options: OpenChannelOptions,
): Promise<ChannelIndexer> {
  const { logger } = options;
  if (options.condaExe !== undefined) {
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
