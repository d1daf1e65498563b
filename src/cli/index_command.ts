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
import { ConfigError } from "../config.ts";
import { reconcileAndLog } from "../open_channel.ts";

/** Reconciles the channel at `root` (with `conda index` when `condaExe` is given). */
export async function runIndexCommand(
  root: string,
  condaExe: string | undefined,
  logger: Logger,
): Promise<ReconcileReport> {
  let storage: ChannelStorage;
  try {
    storage = await ChannelStorage.open(root);
  } catch (error) {
    throw new ConfigError(error instanceof Error ? error.message : String(error));
  }
  const indexer = condaExe === undefined
    ? await BuiltinIndex.open(storage, { logger })
    : new CondaExeIndex(condaExe, storage, { logger });
  return await reconcileAndLog(indexer, logger, "index done");
}
