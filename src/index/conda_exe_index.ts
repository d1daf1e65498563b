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

  /** `conda index` does not sync directories. */
  readonly syncsSubdirectory = false;

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

  /** Nothing is written behind: `conda index` writes every file. */
  close(): Promise<void> {
    return Promise.resolve();
  }

  async #run(): Promise<void> {
    const started = performance.now();
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(this.#condaExe, {
        args: ["index", this.#storage.localPath()],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
        signal: AbortSignal.timeout(this.#options.timeoutMs ?? 600_000),
      }).spawn();
    } catch (error) {
      const reason = error instanceof Deno.errors.NotFound
        ? "the executable was not found"
        : error instanceof Error
        ? error.message
        : String(error);
      throw new Error(`conda index could not run: ${reason}`);
    }
    const stderr = readTail(child.stderr);
    // Whatever conda wrote (also on a failure) is served from now on.
    const status = await child.status.finally(() => this.#storage.lookAgain());
    // A grandchild may keep stderr open after conda exits: wait only briefly for it.
    const tail = await Promise.race([
      stderr,
      new Promise<string>((done) => setTimeout(() => done(""), STDERR_GRACE_MS)),
    ]);
    const milliseconds = Math.round(performance.now() - started);
    if (!status.success) {
      const reason = status.signal
        ? `was killed by ${status.signal}`
        : `exited with code ${status.code}`;
      this.#options.logger.error("conda index failed", { ms: milliseconds, stderr: tail });
      throw new Error(`conda index ${reason}: ${tail.split("\n").at(-1) ?? ""}`.trim());
    }
    this.#options.logger.info("conda index done", { ms: milliseconds });
  }
}

/** How long stderr may stay open after the process exited. */
const STDERR_GRACE_MS = 500;

/** Reads a stream to its end, keeping only the last {@linkcode STDERR_TAIL_BYTES} bytes. */
async function readTail(stream: ReadableStream<Uint8Array>): Promise<string> {
  let tail = new Uint8Array(0);
  try {
    for await (const chunk of stream) {
      const joined = new Uint8Array(tail.length + chunk.length);
      joined.set(tail);
      joined.set(chunk, tail.length);
      tail = joined.subarray(-STDERR_TAIL_BYTES);
    }
  } catch {
    // A broken pipe ends the tail.
  }
  return new TextDecoder().decode(tail).trim();
}
