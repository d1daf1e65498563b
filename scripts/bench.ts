/**
 * The benchmark: measures our server, run as a child process over real TLS
 * on 127.0.0.1, against reference programs measured by this same script in
 * the same run, and prints one markdown table (also written to
 * `bench-results/latest.md` and, for a complete full run, to
 * `docs/benchmarks.md`).
 *
 * ```sh
 * deno task bench            # full run, about 20 minutes on 2 cores
 * deno task bench --quick    # smoke run, about 4 minutes
 * deno task bench --only=large,small --profile   # some sections, with CPU profiles
 * deno task bench --only reads   # serving against nginx (installs nginx and wrk if missing)
 * deno task bench --only s3      # object storage: replicas on a Ceph RGW started for the run
 * ```
 *
 * Sections: `inspect` (6), `index` (4), `large` (1, 2), `small` (3),
 * `startup` (5), `reads` (7), `shards` (8); `s3` (9: object storage, starts a
 * Ceph RGW, installed with apt-get when missing) only with `--only`. With `--profile` every server of ours runs with
 * `--cpu-prof` (which slows it: the figures of such a run are not
 * comparable) and the top functions are printed per section.
 *
 * @module
 */

import { join, relative } from "node:path";
import { parseArgs } from "node:util";
import { generateToken, hashToken } from "../src/auth/token_hash.ts";
import { createSelfSignedCertificate } from "../src/tls/self_signed_certificate.ts";
import {
  type BenchContext,
  countLabel,
  FULL_PLAN,
  QUICK_PLAN,
  removeAll,
} from "./bench/bench_context.ts";
import { REPO_ROOT } from "./bench/bench_process.ts";
import { buildChannelTemplate, type ChannelTemplate } from "./bench/channel_template.ts";
import { formatSummary, summariseProfiles } from "./bench/cpu_profile_summary.ts";
import { benchReads } from "./bench/channel_reads.ts";
import { benchIndexLatency } from "./bench/index_latency.ts";
import { benchInspection } from "./bench/inspection_cost.ts";
import { benchLargeUploads } from "./bench/large_uploads.ts";
import { benchShardDownload } from "./bench/shard_download.ts";
import { benchObjectStorage } from "./bench/object_storage.ts";
import { type BenchHeader, renderMarkdown } from "./bench/report_table.ts";
import { benchSmallUploads } from "./bench/small_uploads.ts";
import { benchStartup } from "./bench/startup_time.ts";

const SECTIONS = [
  "inspect",
  "index",
  "large",
  "small",
  "startup",
  "reads",
  "shards",
  "s3",
] as const;
type Section = typeof SECTIONS[number];

async function _cpuModel(): Promise<string> {
  const text = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  return /^model name\s*:\s*(.+)$/m.exec(text)?.[1]?.trim() ?? "unknown";
}

async function _curlVersion(): Promise<string> {
  const output = await new Deno.Command("curl", { args: ["--version"], stdout: "piped" }).output();
  return new TextDecoder().decode(output.stdout).split(" ", 2)[1] ?? "unknown";
}

function _loadAverage(): string {
  return Deno.loadavg().map((value) => value.toFixed(2)).join(" ");
}

function _parseSections(value: string | undefined): Set<Section> {
  // Object storage starts a Ceph cluster: only when asked for by name.
  if (value === undefined) return new Set(SECTIONS.filter((section) => section !== "s3"));
  const wanted = new Set<Section>();
  for (const name of value.split(",")) {
    if (!(SECTIONS as readonly string[]).includes(name)) {
      throw new Error(`Cannot run section ${JSON.stringify(name)}: not one of ${SECTIONS}`);
    }
    wanted.add(name as Section);
  }
  return wanted;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string" },
      profile: { type: "boolean", default: false },
    },
  });
  const plan = values.quick ? QUICK_PLAN : FULL_PLAN;
  const sections = _parseSections(values.only);
  const began = performance.now();
  const startLoad = _loadAverage();
  const tmp = await Deno.makeTempDir({ prefix: "auh-bench-" });
  const resultsDir = join(REPO_ROOT, "bench-results");
  const profileDir = values.profile ? join(resultsDir, "profiles") : undefined;
  if (profileDir !== undefined) await removeAll(profileDir);
  const cleanUp = () => {
    try {
      Deno.removeSync(tmp, { recursive: true });
    } catch {
      // already gone
    }
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", cleanUp);
  try {
    const pem = await createSelfSignedCertificate({ hosts: ["localhost", "127.0.0.1"] });
    const tls = {
      certFile: join(tmp, "cert.pem"),
      keyFile: join(tmp, "key.pem"),
      caFile: join(tmp, "ca.pem"),
      caPem: pem.ca,
    };
    await Deno.writeTextFile(tls.certFile, pem.cert);
    await Deno.writeTextFile(tls.keyFile, pem.key, { mode: 0o600 });
    await Deno.writeTextFile(tls.caFile, pem.ca);
    const token = generateToken();
    const context: BenchContext = {
      plan,
      tmp,
      tls,
      token,
      tokenHash: await hashToken(token),
      rows: [],
      notes: [],
      profileDir,
      progress: (message) => {
        const seconds = ((performance.now() - began) / 1000).toFixed(0).padStart(4);
        console.error(`[${seconds} s] ${message}`);
      },
    };

    if (sections.has("inspect")) await benchInspection(context);
    if (sections.has("index")) await benchIndexLatency(context);
    if (sections.has("shards")) await benchShardDownload(context);
    if (sections.has("large")) await benchLargeUploads(context);
    if (sections.has("small") || sections.has("startup")) {
      const templates: ChannelTemplate[] = [];
      for (const count of plan.channelSizes) {
        if (!sections.has("small") && count !== Math.max(...plan.channelSizes)) continue;
        context.progress(`building a channel of ${countLabel(count)} packages`);
        templates.push(await buildChannelTemplate(join(tmp, `template-${count}`), count));
      }
      if (sections.has("small")) {
        await _quiesceDisk(context);
        await benchSmallUploads(context, templates);
      }
      if (sections.has("startup")) {
        const largest = templates.reduce((a, b) => a.count >= b.count ? a : b);
        await benchStartup(context, largest);
      }
    }

    if (sections.has("reads")) await benchReads(context);
    if (sections.has("s3")) await benchObjectStorage(context);

    const minutes = (performance.now() - began) / 60_000;
    const header: BenchHeader = {
      title: "artifact-upload-handler benchmark",
      facts: [
        ["date", new Date().toISOString()],
        [
          "machine",
          `${navigator.hardwareConcurrency} CPUs (nproc), ${await _cpuModel()}, ${
            (Deno.systemMemoryInfo().total / 1024 ** 3).toFixed(1)
          } GiB RAM, Linux ${Deno.osRelease()}`,
        ],
        ["deno", `${Deno.version.deno} (V8 ${Deno.version.v8}); curl ${await _curlVersion()}`],
        [
          "mode",
          `${plan.name}${values.only ? ` (only ${values.only})` : ""}${
            values.profile ? ", with --cpu-prof (figures skewed)" : ""
          }; took ${minutes.toFixed(1)} min`,
        ],
        [
          "runs (each figure is the median)",
          `reads ${plan.readRuns} × ${plan.readSeconds} s per figure; large uploads ${plan.largeRuns} per size; small uploads ${plan.smallRuns} × ${plan.smallUploads} uploads per setting; -e ${plan.condaExeRuns} × ${plan.condaExeUploads}; index add() ${plan.indexAdds} per size; start-up ${plan.startupRuns}; index rebuild ${plan.rebuildRuns}; inspection ${plan.inspectRuns}`,
        ],
        ["load average (1 5 15 min)", `${startLoad} at start, ${_loadAverage()} at end`],
      ],
      notes: [
        "ratio = ours ÷ reference; every reference is measured by this script in the same run.",
        "1: reference = scripts/bench/reference_server.ts --mode hash (Deno.serve over TLS, streams the raw body to a file with sha256 + md5, fsync). MB/s = 10^6 bytes of the file per second of curl's time_total; curl --http1.1 without Expect, one fresh server per run.",
        "2: VmHWM of the server process (fresh per run); reference = the reference server's VmHWM.",
        "3: ~100 KiB .conda packages (and .tar.bz2 ones into the smallest channel) by curl processes, each sending its share over one keep-alive HTTP/1.1 connection (`--next`, Nagle off like every CI client: curl, Python requests, rattler-build), after a warm-up request; uploads/s = uploads ÷ the longest time one client spent uploading (sum of its `time_total`); reference = reference_server.ts --mode store (Request.formData(), token check, write + fsync, no hashing, inspection or index). Each run starts from a fresh copy of the channel, in a directory of its own under a `chattr +T` parent, and the copies are removed only when the section ends (so that no run creates files among the inodes an earlier run freed: this ext4 has no journal and skips recently freed inodes when it looks for a free one). Server CPU per upload: user + system time of the server process (all threads; in brackets its main thread alone) from /proc/PID/stat over the run, ÷ uploads. -e uses a stand-in `conda` script that sleeps 300 ms.",
        "4: BuiltinIndex.add() in process (resolves once repodata.json, .zst, the name's shard and the shard index, run_exports.json and .zst are written; index.html and channeldata.json follow behind, at most every 250 ms); reference = one atomic write (write, fsync, rename) of the same repodata.json.",
        "5: start-up = spawn of `deno run main.ts` to its `listening` line (reconcile trusted every package); reference = spawn to listening of the reference server. Rebuild = `main.ts index` after deleting repodata.json; reference = scripts/bench/reference_digest.ts (read + sha256 + md5 of every package).",
        "6: inspectPackage() in process, warm page cache (.conda: with the CRC-32 pass over every zip member).",
        "7: reference = Debian's nginx started by the benchmark on the same channel directory (one worker, TLS with the same certificate, sendfile, gzip, an access log line per request); wrk 1 thread, keep-alive, after a 1 s warm-up; the download with curl --http1.1. Our server's connection layer is whatever main.ts runs. The handler-alone rows call serveChannel() in process, one request at a time, with no server running (median of 200 ms windows).",
        "8: @conda-org/rattler solving one package (two dependencies) over plain HTTP from serveChannel() in process; bytes = response bodies; reference = the same solve after the shard indexes are removed (rattler then fetches repodata.json.zst of linux-64 and noarch).",
        "Other work may share the machine while this runs: trust the ratios more than the absolute figures.",
        "Written by `deno task bench` (scripts/bench.ts): a full run writes this file and bench-results/latest.md, `--quick` only the latter.",
      ],
    };
    // One row order whatever the order the sections ran in: by measurement number.
    const section = (what: string) => Number(/^(\d+)\./.exec(what)?.[1] ?? 99);
    const rows = [...context.rows].sort((a, b) => section(a.what) - section(b.what));
    const latest = join(resultsDir, "latest.md");
    const written = [latest];
    await Deno.mkdir(resultsDir, { recursive: true });
    await Deno.writeTextFile(latest, renderMarkdown(header, rows));
    if (plan === FULL_PLAN && values.only === undefined && !values.profile) {
      const docs = join(REPO_ROOT, "docs", "benchmarks.md");
      await Deno.mkdir(join(REPO_ROOT, "docs"), { recursive: true });
      await Deno.copyFile(latest, docs);
      written.push(docs);
    }
    await _format(written);
    console.log(await Deno.readTextFile(latest));
    console.error(
      `written: ${written.map((path) => relative(REPO_ROOT, path)).join(", ")}${
        written.length === 1 ? " (docs/benchmarks.md only by a complete full run)" : ""
      }`,
    );
    if (profileDir !== undefined) await _printProfiles(profileDir);
  } finally {
    Deno.removeSignalListener("SIGINT", cleanUp);
    await removeAll(tmp);
  }
}

/** Formats the written markdown as `deno fmt` would, so that `deno fmt --check` passes. */
async function _format(paths: string[]): Promise<void> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--quiet", "--config", join(REPO_ROOT, "deno.json"), ...paths],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!output.success) {
    throw new Error(`Cannot format ${paths}: ${new TextDecoder().decode(output.stderr).trim()}`);
  }
}

/** Prints the top functions of the profiles, grouped by section prefix. */
async function _printProfiles(profileDir: string): Promise<void> {
  const groups = new Map<string, string[]>();
  for await (const entry of Deno.readDir(profileDir)) {
    const group = entry.name.replace(/-run\d+$/, "");
    groups.set(group, [...groups.get(group) ?? [], entry.name]);
  }
  for (const [group, dirs] of [...groups].sort()) {
    const merged = join(profileDir, `_${group}`);
    await Deno.mkdir(merged, { recursive: true });
    for (const dir of dirs) await Deno.rename(join(profileDir, dir), join(merged, dir));
    const summary = await summariseProfiles(merged, REPO_ROOT);
    console.log(`\n## CPU profile of our server: ${group} (${dirs.length} runs)\n`);
    console.log("```\n" + formatSummary(summary, 20) + "\n```");
  }
}

if (import.meta.main) await main();

/**
 * Lets the disk settle before a section that measures small synced writes:
 * `sync`, then a pause. The sections before write and delete gigabytes, and
 * the writeback and discards that follow slowed the first small-upload runs
 * (5.1-5.4 ms of main-thread CPU per upload against 3.7 in the third run).
 */
async function _quiesceDisk(context: BenchContext): Promise<void> {
  context.progress("letting the disk settle (sync, 5 s)");
  await new Deno.Command("sync").output().catch(() => undefined);
  await new Promise((resolve) => setTimeout(resolve, 5000));
}
