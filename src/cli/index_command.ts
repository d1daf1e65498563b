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
  const started = performance.now();
  const indexer = condaExe === undefined
    ? await BuiltinIndex.open(storage, { logger })
    : new CondaExeIndex(condaExe, storage, { logger });
  const report = await indexer.reconcile();
  for (const failure of report.failed) {
    logger.warn("package left out of the index", { path: failure.path, reason: failure.reason });
  }
  logger.info("index done", {
    subdirs: report.subdirs.length,
    added: report.added.length,
    removed: report.removed.length,
    failed: report.failed.length,
    unchanged: report.unchanged,
    ms: Math.round(performance.now() - started),
  });
  return report;
}
