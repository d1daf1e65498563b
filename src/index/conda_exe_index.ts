/**
 * Keeps the index by running an external `conda index <channel root>`, as
 * the original tool did (`-e CONDA_EXE`). Uploads that arrive while a run is
 * in progress share the next run.
 *
 * @module
 */

import type { Logger } from "../log.ts";
import type { PackageRecordSource } from "../package/package_metadata.ts";
import type { ChannelStorage } from "../storage/channel_storage.ts";
import type { ChannelIndexer, ReconcileReport } from "./channel_indexer.ts";
import { CoalescedRuns } from "./coalesced_runs.ts";

/** Options for {@linkcode CondaExeIndex}. */
export interface CondaExeIndexOptions {
  /** Where run results go. */
  logger: Logger;
  /**
   * Longest a single `conda index` run may take before it is killed.
   * @default {600000}
   */
  timeoutMs?: number;
}

/** The bytes of stderr kept for the log and the error message. */
const STDERR_TAIL_BYTES = 2000;

/** An indexer that runs `CONDA_EXE index CHANNEL_ROOT`. */
export class CondaExeIndex implements ChannelIndexer {
  readonly #condaExe: string;
  readonly #storage: ChannelStorage;
  readonly #options: CondaExeIndexOptions;
  readonly #runs: CoalescedRuns;

  constructor(condaExe: string, storage: ChannelStorage, options: CondaExeIndexOptions) {
    this.#condaExe = condaExe;
    this.#storage = storage;
    this.#options = options;
    this.#runs = new CoalescedRuns(() => this.#storage.withLock(() => this.#run()));
  }

  /** Number of `conda index` runs started. */
  get runs(): number {
    return this.#runs.runs;
  }

  /** Runs `conda index` (shared with concurrent callers). */
  add(_source: PackageRecordSource): Promise<void> {
    return this.#runs.request();
  }

  /** Runs `conda index` after a package file was removed. */
  async remove(_subdir: string, _filename: string): Promise<boolean> {
    await this.#runs.request();
    return false;
  }

  /** Runs `conda index` over the whole channel. */
  async reconcile(): Promise<ReconcileReport> {
    await this.#runs.request();
    return { subdirs: [], added: [], removed: [], failed: [], unchanged: 0 };
  }

  async #run(): Promise<void> {
    const started = performance.now();
    const args = ["index", this.#storage.localPath()];
    const command = new Deno.Command(this.#condaExe, {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      signal: AbortSignal.timeout(this.#options.timeoutMs ?? 600_000),
    });
    let output: Deno.CommandOutput;
    try {
      output = await command.output();
    } catch (error) {
      throw new Error(
        `${this.#condaExe} index could not run: ${
          error instanceof Error ? error.message : String(error)
        }`,
      );
    }
    const milliseconds = Math.round(performance.now() - started);
    const tail = new TextDecoder().decode(output.stderr.subarray(-STDERR_TAIL_BYTES)).trim();
    if (!output.success) {
      const reason = output.signal ? `was killed by ${output.signal}` : `exited with code ${output.code}`;
      this.#options.logger.error("conda index failed", { ms: milliseconds, stderr: tail });
      throw new Error(`conda index ${reason}: ${tail.split("\n").at(-1) ?? ""}`.trim());
    }
    this.#options.logger.info("conda index done", { ms: milliseconds });
  }
}
