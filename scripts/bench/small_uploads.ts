/**
 * Measurement 3: many small uploads (about 100 KiB each; `.conda`, and
 * `.tar.bz2` into the smallest channel) with 1 and 8
 * concurrent keep-alive curl clients into a subdir that already holds a few or
 * many packages, against the reference server that stores the file without
 * inspection or index; and the `-e` path with a stand-in `conda` that
 * sleeps 300 ms, where concurrent uploads should share `conda index` runs.
 *
 * Every run starts on a fresh copy of the pre-populated channel, made in a
 * directory of its own that the file system places away from the files
 * other runs (and other jobs on the machine) created and deleted: on ext4
 * without a journal, creating a file skips every inode of its block group
 * freed in the last minutes, so a churned group makes every create cost up
 * to a millisecond (see {@linkcode _isolatedDirectory}). The copies are
 * removed only when the section ends: ext4 puts a new top directory in the
 * group with the fewest directories, which is the group whose directories
 * the previous run just removed, so a run would otherwise create its files
 * among the inodes the previous run freed.
 *
 * @module
 */

import { join } from "node:path";
import { buildPackage, packageFilename } from "../../tests/helpers/conda_package.ts";
import { type BenchContext, copyTree, countLabel, removeAll } from "./bench_context.ts";
import {
  type BenchServer,
  type OurServerOptions,
  startOurServer,
  startReferenceServer,
} from "./bench_process.ts";
import type { ChannelTemplate } from "./channel_template.ts";
import { figure, percent, times } from "./report_table.ts";
import { median, percentile } from "./stats.ts";
import { curlUploadMany, type UploadItem } from "./upload_clients.ts";

const PAYLOAD_BYTES = 100 * 1024;
const CONCURRENCIES = [1, 8] as const;
/** Share of the reference's uploads/s at the smallest channel, by clients (both formats). */
const TARGET_SMALL_CHANNEL: Record<number, number> = { 1: 0.3, 8: 0.4 };
/** Share of the reference's uploads/s at the largest channel. */
const TARGET_LARGE_CHANNEL = 0.25;
/** `-e`: most `conda index` runs per upload that counts as "far fewer". */
const CONDA_RUNS_PER_UPLOAD_TARGET = 0.25;
const CONDA_SLEEP_SECONDS = 0.3;

interface _Run {
  perSecond: number;
  p50: number;
  p99: number;
  /** Server CPU time (all threads) per upload, ms. */
  cpuMs: number;
  /** Server main-thread CPU time per upload, ms. */
  mainThreadCpuMs: number;
}

/** CPU time (user + system) of process `pid`, or of its thread `pid` alone, in ms. */
async function _cpuMs(pid: number, thread: "all" | "main"): Promise<number> {
  const path = thread === "all" ? `/proc/${pid}/stat` : `/proc/${pid}/task/${pid}/stat`;
  const text = await Deno.readTextFile(path).catch(() => "");
  // the fields after the command name "(...)": utime and stime are the 12th and 13th
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  return Number.isFinite(ticks) ? ticks * 10 : NaN; // USER_HZ is 100 on Linux
}

/** Builds `count` distinct ~100 KiB packages (`.conda` unless told) in memory. */
export async function buildSmallPackages(
  count: number,
  format: ".conda" | ".tar.bz2" = ".conda",
): Promise<UploadItem[]> {
  const payload = new Uint8Array(PAYLOAD_BYTES);
  for (let at = 0; at < payload.length; at += 65536) {
    crypto.getRandomValues(payload.subarray(at, Math.min(at + 65536, payload.length)));
  }
  const items: UploadItem[] = [];
  for (let i = 0; i < count; i++) {
    const spec = {
      name: `bench-upload-${i}`,
      version: "1.0",
      format,
      files: { "lib/data.bin": payload },
    };
    items.push({ filename: packageFilename(spec), bytes: await buildPackage(spec) });
  }
  return items;
}

/**
 * Measures every channel size × concurrency of the plan with `.conda`
 * packages, the smallest channel with `.tar.bz2` ones too, then `-e`; adds
 * their rows.
 */
export async function benchSmallUploads(
  context: BenchContext,
  templates: readonly ChannelTemplate[],
): Promise<void> {
  const { plan } = context;
  context.progress(`small uploads: building ${plan.smallUploads} packages of each format`);
  const items = await _writeItems(context, await buildSmallPackages(plan.smallUploads));
  const tarBz2Items = await _writeItems(
    context,
    await buildSmallPackages(plan.smallUploads, ".tar.bz2"),
  );
  const smallest = Math.min(...templates.map((template) => template.count));
  let referenceAtEight: number | undefined;
  const settings: [ChannelTemplate, string[], string][] = templates.map((
    template,
  ) => [template, items, ".conda"]);
  const smallestTemplate = templates.find((template) => template.count === smallest)!;
  settings.splice(1, 0, [smallestTemplate, tarBz2Items, ".tar.bz2"]);
  for (const [template, items, format] of settings) {
    for (const concurrency of CONCURRENCIES) {
      const ours: _Run[] = [];
      const reference: _Run[] = [];
      for (let run = 0; run < plan.smallRuns; run++) {
        reference.push(await _referenceRun(context, template, items, concurrency));
        ours.push(
          await _ourRun(context, template, items, concurrency, {
            check: run === 0,
            label: `small-${format.slice(1)}-${template.count}pkgs-${concurrency}c-run${run}`,
          }),
        );
        context.progress(
          `small ${format} uploads ${template.count} pkgs, ${concurrency} clients, run ${
            run + 1
          }/${plan.smallRuns}: ours ${ours.at(-1)!.perSecond.toFixed(0)}/s, reference ${
            reference.at(-1)!.perSecond.toFixed(0)
          }/s; CPU per upload: ours ${ours.at(-1)!.cpuMs.toFixed(1)} ms (main thread ${
            ours.at(-1)!.mainThreadCpuMs.toFixed(1)
          } ms), reference ${reference.at(-1)!.cpuMs.toFixed(1)} ms`,
        );
      }
      const oursRate = median(ours.map((run) => run.perSecond));
      const referenceRate = median(reference.map((run) => run.perSecond));
      if (template.count === smallest && concurrency === 8 && format === ".conda") {
        referenceAtEight = referenceRate;
      }
      const target = template.count === smallest
        ? TARGET_SMALL_CHANNEL[concurrency]!
        : TARGET_LARGE_CHANNEL;
      const setting = `${items.length} × 100 KiB ${format} into ${
        countLabel(template.count)
      } pkgs, ${concurrency} client${concurrency > 1 ? "s" : ""}`;
      context.rows.push({
        what: `3. uploads/s, ${setting}`,
        ours: figure(oursRate, "/s"),
        reference: figure(referenceRate, "/s"),
        ratio: percent(oursRate / referenceRate),
        target: `≥ ${percent(target)}`,
        met: oursRate / referenceRate >= target,
      });
      const oursP50 = median(ours.map((run) => run.p50));
      const oursP99 = median(ours.map((run) => run.p99));
      const referenceP50 = median(reference.map((run) => run.p50));
      const referenceP99 = median(reference.map((run) => run.p99));
      context.rows.push({
        what: `3. latency p50 / p99, ${setting}`,
        ours: `${oursP50.toFixed(1)} / ${oursP99.toFixed(1)} ms`,
        reference: `${referenceP50.toFixed(1)} / ${referenceP99.toFixed(1)} ms`,
        ratio: `${times(oursP50 / referenceP50)} / ${times(oursP99 / referenceP99)}`,
        target: "—",
        met: undefined,
      });
      const oursCpu = median(ours.map((run) => run.cpuMs));
      const oursMain = median(ours.map((run) => run.mainThreadCpuMs));
      const referenceCpu = median(reference.map((run) => run.cpuMs));
      context.rows.push({
        what: `3. server CPU per upload (main thread), ${setting}`,
        ours: `${oursCpu.toFixed(1)} ms (${oursMain.toFixed(1)} ms)`,
        reference: `${referenceCpu.toFixed(1)} ms`,
        ratio: times(oursCpu / referenceCpu),
        target: "—",
        met: undefined,
      });
    }
  }
  await _benchCondaExe(
    context,
    smallestTemplate,
    items.slice(0, plan.condaExeUploads),
    referenceAtEight,
  );
  for (const copy of _finishedRuns.splice(0)) await removeAll(copy);
}

/** Writes the packages into a directory of the run (curl sends files); returns their paths. */
async function _writeItems(context: BenchContext, items: readonly UploadItem[]): Promise<string[]> {
  const directory = await Deno.makeTempDir({ dir: context.tmp, prefix: "small-packages-" });
  const paths: string[] = [];
  for (const item of items) {
    const path = join(directory, item.filename);
    await Deno.writeFile(path, item.bytes);
    paths.push(path);
  }
  return paths;
}

let _isolatedParent: string | undefined;
/** Channel copies of finished runs, removed when the section ends. */
const _finishedRuns: string[] = [];

/**
 * A path for a run's channel copy in a directory marked as a top of a
 * hierarchy (`chattr +T`), under which ext4 spreads new directories over
 * block groups with free inodes instead of packing them into their parent's
 * group. Creating files then costs what it costs in a group this run uses
 * alone, not what the deletions of earlier runs and other jobs made it cost.
 * On a file system without the attribute the directory is an ordinary one.
 */
async function _isolatedDirectory(context: BenchContext, name: string): Promise<string> {
  if (_isolatedParent === undefined || !_isolatedParent.startsWith(context.tmp)) {
    _isolatedParent = join(context.tmp, "isolated-runs");
    await Deno.mkdir(_isolatedParent, { recursive: true });
    const output = await new Deno.Command("chattr", {
      args: ["+T", _isolatedParent],
      stdout: "null",
      stderr: "null",
    }).output().catch(() => undefined);
    if (!output?.success) {
      context.progress("small uploads: chattr +T not available, runs share a group");
    }
  }
  return join(_isolatedParent, `${name}-${crypto.randomUUID().slice(0, 8)}`);
}

async function _uploadRun(
  server: BenchServer,
  context: BenchContext,
  files: readonly string[],
  concurrency: number,
): Promise<_Run> {
  const cpuBefore = await _cpuMs(server.pid, "all");
  const mainBefore = await _cpuMs(server.pid, "main");
  let result;
  try {
    result = await curlUploadMany(server.url, files, {
      concurrency,
      token: context.token,
      caFile: context.tls.caFile,
    });
  } catch (error) {
    throw new Error(
      `${error instanceof Error ? error.message : String(error)}; server log:\n${
        server.lines.slice(-10).join("\n")
      }`,
    );
  }
  const cpuMs = await _cpuMs(server.pid, "all") - cpuBefore;
  const mainThreadCpuMs = await _cpuMs(server.pid, "main") - mainBefore;
  return {
    perSecond: files.length / result.seconds,
    p50: percentile(result.latenciesMs, 50),
    p99: percentile(result.latenciesMs, 99),
    cpuMs: cpuMs / files.length,
    mainThreadCpuMs: mainThreadCpuMs / files.length,
  };
}

async function _referenceRun(
  context: BenchContext,
  template: ChannelTemplate,
  items: readonly string[],
  concurrency: number,
): Promise<_Run> {
  const copy = await _isolatedDirectory(context, "reference-channel");
  await copyTree(template.root, copy);
  try {
    const server = await startReferenceServer(join(copy, "linux-64"), {
      mode: "store",
      tls: context.tls,
      token: context.token,
    });
    try {
      return await _uploadRun(server, context, items, concurrency);
    } finally {
      await server.stop();
    }
  } finally {
    _finishedRuns.push(copy);
  }
}

async function _ourRun(
  context: BenchContext,
  template: ChannelTemplate,
  items: readonly string[],
  concurrency: number,
  options: { check: boolean; label: string },
): Promise<_Run> {
  const profile = context.profileDir === undefined
    ? {}
    : { cpuProfDir: join(context.profileDir, options.label) };
  return await _withOurServer(context, template, profile, async (server) => {
    _checkTrusted(server, template);
    const run = await _uploadRun(server, context, items, concurrency);
    if (options.check) await _checkIndexed(server, context, template.count + items.length);
    return run;
  });
}

/**
 * Runs `use` against our server on a fresh copy of the template channel;
 * the server is stopped afterwards (the copy is removed with the section's).
 */
async function _withOurServer<T>(
  context: BenchContext,
  template: ChannelTemplate,
  options: Omit<OurServerOptions, "tls" | "tokenHash">,
  use: (server: BenchServer) => Promise<T>,
): Promise<T> {
  const channel = await _isolatedDirectory(context, "channel");
  await copyTree(template.root, channel);
  try {
    const server = await startOurServer(channel, {
      tls: context.tls,
      tokenHash: context.tokenHash,
      ...options,
    });
    try {
      return await use(server);
    } finally {
      await server.stop();
    }
  } finally {
    _finishedRuns.push(channel);
  }
}

/** Start-up must have trusted every package of the copied channel. */
function _checkTrusted(server: BenchServer, template: ChannelTemplate): void {
  const line = server.lines.find((line) => /\bindex reconciled\b/.test(line)) ?? "";
  if (!new RegExp(`\\bunchanged=${template.count}\\b`).test(line)) {
    throw new Error(`Cannot use the copied channel: start-up re-read packages: ${line}`);
  }
}

/** The served `linux-64/repodata.json` must hold every package. */
async function _checkIndexed(
  server: BenchServer,
  context: BenchContext,
  expected: number,
): Promise<void> {
  using client = Deno.createHttpClient({ caCerts: [context.tls.caPem] });
  const response = await fetch(`${server.url}/linux-64/repodata.json`, { client });
  const repodata = await response.json() as Record<string, Record<string, unknown> | undefined>;
  const count = Object.keys(repodata["packages.conda"] ?? {}).length +
    Object.keys(repodata["packages"] ?? {}).length;
  if (count !== expected) {
    throw new Error(`Cannot find every upload in repodata.json: ${count} of ${expected}`);
  }
}

async function _benchCondaExe(
  context: BenchContext,
  template: ChannelTemplate,
  items: readonly string[],
  referenceRate: number | undefined,
): Promise<void> {
  const condaExe = join(context.tmp, "stand-in-conda");
  await Deno.writeTextFile(condaExe, `#!/bin/sh\nsleep ${CONDA_SLEEP_SECONDS}\n`);
  await Deno.chmod(condaExe, 0o755);
  const rates: number[] = [];
  const runsPerUpload: number[] = [];
  for (let run = 0; run < context.plan.condaExeRuns; run++) {
    await _withOurServer(context, template, { condaExe }, async (server) => {
      const result = await _uploadRun(server, context, items, 8);
      const condaRuns = server.lines.filter((line) => /\bconda index done\b/.test(line)).length;
      rates.push(result.perSecond);
      runsPerUpload.push(condaRuns / items.length);
      context.progress(
        `-e run ${run + 1}/${context.plan.condaExeRuns}: ${
          result.perSecond.toFixed(1)
        }/s, ${condaRuns} conda runs for ${items.length} uploads`,
      );
    });
  }
  const rate = median(rates);
  const share = median(runsPerUpload);
  const ideal = 8 / CONDA_SLEEP_SECONDS;
  context.rows.push({
    what: `3. uploads/s with -e (conda sleeps ${
      CONDA_SLEEP_SECONDS * 1000
    } ms), ${items.length} uploads, 8 clients`,
    ours: figure(rate, "/s"),
    reference: referenceRate === undefined ? "—" : figure(referenceRate, "/s"),
    ratio: referenceRate === undefined ? "—" : percent(rate / referenceRate),
    target: `— (one run per 8: ≤ ${ideal.toFixed(1)}/s)`,
    met: undefined,
  });
  context.rows.push({
    what: `3. conda index runs per upload with -e, 8 clients`,
    ours: `${Math.round(share * items.length)} runs / ${items.length} uploads`,
    reference: "—",
    ratio: share.toFixed(2),
    target: `≤ ${CONDA_RUNS_PER_UPLOAD_TARGET}`,
    met: share <= CONDA_RUNS_PER_UPLOAD_TARGET,
  });
}
