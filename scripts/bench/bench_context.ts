/**
 * What every benchmark section shares: the sizes and run counts of a full
 * or `--quick` run, the temporary directory, TLS files, the token, the rows
 * collected so far and a progress log.
 *
 * @module
 */

import type { BenchTls } from "./bench_process.ts";
import type { BenchRow } from "./report_table.ts";

/** Sizes and run counts of one benchmark run. */
export interface BenchPlan {
  /** `"full"` or `"quick"`. */
  name: string;
  /** Large upload sizes in bytes (payload of the generated `.conda`). */
  largeSizes: number[];
  /** Runs per large upload size. */
  largeRuns: number;
  /** Uploads per small-upload run. */
  smallUploads: number;
  /** Package counts already in the subdir before small uploads. */
  channelSizes: number[];
  /** Runs per small-upload configuration. */
  smallRuns: number;
  /** Uploads per `-e` run. */
  condaExeUploads: number;
  /** Runs of the `-e` case. */
  condaExeRuns: number;
  /** Record counts for the in-process index latency. */
  indexSizes: number[];
  /** Timed `add()` calls per index size. */
  indexAdds: number;
  /** Start-ups timed. */
  startupRuns: number;
  /** `index` rebuilds timed. */
  rebuildRuns: number;
  /** Payload of the big packages inspected (the small ones are 1 MiB). */
  inspectBytes: number;
  /** Timed inspections per package. */
  inspectRuns: number;
  /** Seconds of each `wrk` run of the read benchmark. */
  readSeconds: number;
  /** Runs per read measurement (servers alternate). */
  readRuns: number;
  /** Size of the large package downloaded, in bytes. */
  downloadBytes: number;
  /** Seconds of each in-process handler measurement. */
  handlerSeconds: number;
}

const MIB = 1024 * 1024;

/** The full benchmark (about 20 minutes on 2 cores). */
export const FULL_PLAN: BenchPlan = {
  name: "full",
  largeSizes: [10 * MIB, 256 * MIB, 2048 * MIB],
  largeRuns: 3,
  smallUploads: 500,
  channelSizes: [10, 10_000],
  smallRuns: 5,
  condaExeUploads: 200,
  condaExeRuns: 3,
  indexSizes: [100, 1_000, 10_000],
  indexAdds: 30,
  startupRuns: 5,
  rebuildRuns: 3,
  inspectBytes: 1024 * MIB,
  inspectRuns: 7,
  readSeconds: 8,
  readRuns: 3,
  downloadBytes: 512 * MIB,
  handlerSeconds: 3,
};

/** A smoke run (about 4 minutes): fewer runs, smaller sizes. */
export const QUICK_PLAN: BenchPlan = {
  name: "quick",
  largeSizes: [10 * MIB, 256 * MIB],
  largeRuns: 2,
  smallUploads: 100,
  channelSizes: [10, 1_000],
  smallRuns: 2,
  condaExeUploads: 48,
  condaExeRuns: 1,
  indexSizes: [100, 1_000, 10_000],
  indexAdds: 10,
  startupRuns: 3,
  rebuildRuns: 1,
  inspectBytes: 64 * MIB,
  inspectRuns: 5,
  readSeconds: 3,
  readRuns: 1,
  downloadBytes: 256 * MIB,
  handlerSeconds: 1,
};

/** Shared state of a benchmark run. */
export interface BenchContext {
  /** Sizes and run counts. */
  plan: BenchPlan;
  /** A temporary directory, removed at the end. */
  tmp: string;
  /** TLS files every server uses. */
  tls: BenchTls;
  /** The upload token. */
  token: string;
  /** Its hash, as given to our server with `-t`. */
  tokenHash: string;
  /** Rows measured so far. */
  rows: BenchRow[];
  /** Notes for under the table. */
  notes: string[];
  /** Directory for CPU profiles of our server, when profiling. */
  profileDir: string | undefined;
  /** Prints a progress line. */
  progress(message: string): void;
}

/** A human size: `10 MiB`, `2 GiB`. */
export function sizeLabel(bytes: number): string {
  if (bytes >= 1024 * MIB && bytes % (1024 * MIB) === 0) return `${bytes / (1024 * MIB)} GiB`;
  if (bytes >= MIB) return `${Math.round(bytes / MIB)} MiB`;
  return `${Math.round(bytes / 1024)} KiB`;
}

/** A human count: `10,000`. */
export function countLabel(count: number): string {
  return count.toLocaleString("en-US");
}

/** Removes a path, ignoring a missing one. */
export async function removeAll(path: string): Promise<void> {
  await Deno.remove(path, { recursive: true }).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
}

/** Copies a directory tree keeping modification times (`cp -a`). */
export async function copyTree(from: string, to: string): Promise<void> {
  const output = await new Deno.Command("cp", { args: ["-a", from, to], stderr: "piped" })
    .output();
  if (!output.success) {
    throw new Error(`Cannot copy ${from}: ${new TextDecoder().decode(output.stderr).trim()}`);
  }
}
