/**
 * The `index CHANNEL_ROOT` subcommand: bring every subdir's index in line
 * with the package files present, then exit.
 *
 * @module
 */

import type { ReconcileReport } from "../index/channel_indexer.ts";
import { BuiltinIndex } from "../index/builtin_index.ts";
import { CondaExeIndex } from "../index/conda_exe_index.ts";
import type { Logger } from "../log.ts";
import { ChannelStorage } from "../storage/channel_storage.ts";
import { ConfigError, resolveObjectStorage } from "../config.ts";
import { openChannelStore, reconcileAndLog } from "../open_channel.ts";

/**
 * Reconciles the channel at `root` (with `conda index` when `condaExe` is
 * given); with `storage` (`s3://BUCKET/PREFIX`) the channel in that object
 * store, `root` being the local work directory.
 */
export async function runIndexCommand(
  root: string,
  condaExe: string | undefined,
  logger: Logger,
  storageUrl?: string,
): Promise<ReconcileReport> {
  if (storageUrl !== undefined && condaExe !== undefined) {
    throw new ConfigError("Cannot index: --conda_exe cannot be used with --storage");
  }
  const objectStorage = storageUrl === undefined
    ? undefined
    : resolveObjectStorage(storageUrl, Deno.env.toObject());
  const storage = await openChannelStore(root, {
    logger,
    ...(objectStorage === undefined ? {} : { objectStorage }),
  });
  const indexer = condaExe === undefined || !(storage instanceof ChannelStorage)
    ? await BuiltinIndex.open(storage, { logger })
    : new CondaExeIndex(condaExe, storage, { logger });
  try {
    const report = await reconcileAndLog(indexer, logger, "index done");
    await indexer.close();
    return report;
  } finally {
    storage.close();
  }
}
