/**
 * Measurement 9 (`--only s3`): the channel in object storage. Starts a
 * single-node Ceph RGW (`scripts/ceph_rgw.ts`, installed with apt-get when
 * missing) and measures, in the same run:
 *
 * - a 512 MiB `.conda` uploaded with curl through a replica (spool, hashes,
 *   inspection, parts sent to the store while it arrives) against a direct
 *   multipart put of the same file to the store (64 MiB parts, 2 in flight)
 *   and against the same upload into our server on a local directory, and
 *   the replica's peak RSS;
 * - the CPU seconds every process spent on each of these three paths
 *   (`/proc/PID/stat`: the replica or server, the RGW daemons, curl or this
 *   process), and from them the bound the machine's cores put on the upload
 *   through a replica: its bytes over (its CPU seconds / cores), against the
 *   direct put's measured rate. Between runs the uploaded objects are
 *   deleted and the gateway's garbage collection is run and waited for, so
 *   that no window holds the store's cleaning of an earlier one;
 * - small uploads/s (~100 KiB packages, 8 clients) into 1 replica and into
 *   3 replicas on one bucket, against our server on a local directory;
 * - index latency: one client uploading one package at a time (the answer
 *   comes after the index files are in the bucket), against the local
 *   directory.
 *
 * @module
 */

import { join } from "node:path";
import {
  buildPackage,
  packageFilename,
  writeLargePackage,
} from "../../tests/helpers/conda_package.ts";
import {
  listenArgs,
  type ServerProcess,
  startServerProcess,
} from "../../tests/helpers/server_process.ts";
import { cephDaemonPids, collectGarbage, startCephRgw, stopCephRgw } from "../ceph_rgw.ts";
import { S3ObjectStore } from "../../src/storage/s3_object_store.ts";
import { s3SettingsFromEnv } from "../../src/storage/s3_location.ts";
import type { BenchContext } from "./bench_context.ts";
import {
  type AccountedProcess,
  type CpuWindow,
  type GroupCpu,
  startCpuWindow,
  totalCpu,
  waitUntilIdle,
} from "./process_cpu.ts";
import { figure, percent } from "./report_table.ts";
import { median, percentile } from "./stats.ts";
import { curlUpload, type UploadItem, uploadMany } from "./upload_clients.ts";

const MIB = 1024 * 1024;
const LARGE_BYTES = 512 * MIB;
const THROUGHPUT_TARGET = 0.7;
const MEMORY_TARGET_KIB = 256 * 1024;
const SMALL_UPLOADS = 120;
const SMALL_CONCURRENCY = 8;
const LATENCY_UPLOADS = 30;
const BUCKET = "auh-bench";

/** Runs the object-storage measurements and adds their rows. */
export async function benchObjectStorage(context: BenchContext): Promise<void> {
  context.progress("s3: starting Ceph RGW");
  const rgw = await startCephRgw({ dir: join(context.tmp, "ceph") });
  try {
    const env = { ...rgw.env, AWS_ENDPOINT_URL: rgw.endpoint };
    const settings = s3SettingsFromEnv(env);
    await new S3ObjectStore(settings, { bucket: BUCKET, prefix: "" }).createBucket();
    await _largeUpload(context, env, settings, rgw.dir);
    await _smallUploads(context, env);
  } finally {
    await stopCephRgw(rgw.dir);
  }
}

let _prefixes = 0;

async function _replica(
  context: BenchContext,
  env: Record<string, string>,
  prefix: string,
  name: string,
): Promise<ServerProcess> {
  const work = join(context.tmp, `replica-${prefix}-${name}`);
  await Deno.mkdir(work, { recursive: true });
  return await startServerProcess([
    ...listenArgs(work, context.tls),
    "--storage",
    `s3://${BUCKET}/${prefix}`,
    "-t",
    context.tokenHash,
    "--max_upload_size",
    "1G",
  ], { env, startTimeoutMs: 120_000 });
}

async function _fsServer(context: BenchContext, name: string): Promise<ServerProcess> {
  const channel = join(context.tmp, `fs-${name}`);
  await Deno.mkdir(channel, { recursive: true });
  return await startServerProcess([
    ...listenArgs(channel, context.tls),
    "-t",
    context.tokenHash,
  ], { startTimeoutMs: 120_000 });
}

/** CPU seconds of one path of the large upload, scaled to 512 MiB. */
interface _PathCpu {
  /** The accounted processes' groups. */
  groups: GroupCpu;
  /** The machine's busy CPU seconds in the window, ours and other jobs'. */
  machineBusy: number;
  /** The fraction of all cores' time in the window that was busy. */
  busyShare: number;
}

async function _largeUpload(
  context: BenchContext,
  env: Record<string, string>,
  settings: ReturnType<typeof s3SettingsFromEnv>,
  cephDir: string,
): Promise<void> {
  const runs = context.plan.name === "quick" ? 1 : 2;
  const ours: number[] = [];
  const direct: number[] = [];
  const local: number[] = [];
  const peaks: number[] = [];
  const cpu = { direct: [] as _PathCpu[], replica: [] as _PathCpu[], local: [] as _PathCpu[] };
  const rgwDaemons: AccountedProcess[] = (await cephDaemonPids(cephDir)).map(({ pid }) => ({
    group: "RGW daemons",
    pid,
  }));
  // curl is the bench's child: its CPU shows in the bench's reaped-children time.
  const curl: AccountedProcess = { group: "curl", pid: "self", count: "children" };
  for (let run = 0; run < runs; run++) {
    const spec = { name: `s3-large-${run}`, version: "1.0" };
    const file = join(context.tmp, packageFilename(spec));
    context.progress(`s3: writing a 512 MiB package (run ${run + 1}/${runs})`);
    const size = await writeLargePackage(file, spec, LARGE_BYTES - 64 * 1024);
    const per512 = (window: CpuWindow): _PathCpu => ({
      groups: window.groups.map(([group, seconds]) => [group, seconds * LARGE_BYTES / size]),
      machineBusy: window.machineBusy * LARGE_BYTES / size,
      busyShare: window.machineTotal > 0 ? window.machineBusy / window.machineTotal : 0,
    });
    const store = new S3ObjectStore(settings, { bucket: BUCKET, prefix: `direct-${run}` });
    const directWindow = startCpuWindow([
      { group: "bench (client)", pid: "self" },
      ...rgwDaemons,
    ]);
    const started = performance.now();
    await store.putFile(file, `linux-64/${packageFilename(spec)}`, {
      createOnly: true,
      multipartThreshold: 64 * MIB,
      partSize: 64 * MIB,
      concurrency: 2,
    });
    direct.push(size / 1e6 / ((performance.now() - started) / 1000));
    cpu.direct.push(per512(directWindow()));

    const replicaPrefix = `large-${_prefixes++}`;
    const replica = await _replica(context, env, replicaPrefix, "a");
    try {
      const window = startCpuWindow([
        curl,
        { group: "replica", pid: replica.pid },
        ...rgwDaemons,
      ]);
      const upload = await curlUpload(replica.url, {
        file,
        token: context.token,
        caFile: context.tls.caFile,
      });
      cpu.replica.push(per512(window()));
      if (upload.status !== 201) {
        throw new Error(`s3 large upload: ${upload.status} ${upload.body}`);
      }
      ours.push(size / 1e6 / upload.seconds);
      peaks.push(await replica.rssPeakKiB());
    } finally {
      await replica[Symbol.asyncDispose]();
    }
    const fs = await _fsServer(context, `large-${run}`);
    try {
      const window = startCpuWindow([curl, { group: "server", pid: fs.pid }]);
      const upload = await curlUpload(fs.url, {
        file,
        token: context.token,
        caFile: context.tls.caFile,
      });
      cpu.local.push(per512(window()));
      if (upload.status !== 201) throw new Error(`local large upload: ${upload.status}`);
      local.push(size / 1e6 / upload.seconds);
    } finally {
      await fs[Symbol.asyncDispose]();
    }
    await Deno.remove(file);
    // Free the store's memory and let its cleaning finish before the next window.
    await store.delete(`linux-64/${packageFilename(spec)}`);
    await new S3ObjectStore(settings, { bucket: BUCKET, prefix: replicaPrefix })
      .delete(`linux-64/${packageFilename(spec)}`);
    await collectGarbage(cephDir);
    await waitUntilIdle(rgwDaemons);
    context.progress(
      `s3: 512 MiB through a replica ${ours.at(-1)!.toFixed(0)} MB/s, direct multipart put ${
        direct.at(-1)!.toFixed(0)
      } MB/s, local directory ${local.at(-1)!.toFixed(0)} MB/s, replica peak RSS ${
        (peaks.at(-1)! / 1024).toFixed(0)
      } MiB; CPU-s per 512 MiB: direct ${_cpuText(cpu.direct.at(-1)!.groups)}; replica ${
        _cpuText(cpu.replica.at(-1)!.groups)
      } (machine ${percent(cpu.replica.at(-1)!.busyShare)} busy); local ${
        _cpuText(cpu.local.at(-1)!.groups)
      }`,
    );
  }
  const oursRate = median(ours);
  const directRate = median(direct);
  context.rows.push({
    what: "9. upload 512 MiB .conda through an S3 replica (curl) vs a direct multipart put, MB/s",
    ours: figure(oursRate, "MB/s"),
    reference: figure(directRate, "MB/s"),
    ratio: percent(oursRate / directRate),
    target: `≥ ${percent(THROUGHPUT_TARGET)}`,
    met: oursRate / directRate >= THROUGHPUT_TARGET,
  });
  const localRate = median(local);
  context.rows.push({
    what:
      "9. the same 512 MiB upload through an S3 replica vs into one server on a local directory",
    ours: figure(oursRate, "MB/s"),
    reference: figure(localRate, "MB/s"),
    ratio: percent(oursRate / localRate),
    target: "—",
    met: undefined,
  });
  context.rows.push({
    what: "9. S3 replica peak RSS (VmHWM), 512 MiB upload",
    ours: figure(Math.max(...peaks) / 1024, "MiB"),
    reference: "—",
    ratio: "—",
    target: "≤ 256 MiB",
    met: Math.max(...peaks) <= MEMORY_TARGET_KIB,
  });
  const paths: [string, _PathCpu[]][] = [
    ["through an S3 replica (curl)", cpu.replica],
    ["direct multipart put (this process)", cpu.direct],
    ["into one server on a local directory (curl)", cpu.local],
  ];
  for (const [path, windows] of paths) {
    context.rows.push({
      what:
        `9. CPU-s per 512 MiB (/proc/PID/stat, median of ${runs}), ${path}; reference: the whole machine in the same window (/proc/stat, other jobs included)`,
      ours: _cpuText(_medianGroups(windows.map((window) => window.groups))),
      reference: `machine ${median(windows.map((window) => window.machineBusy)).toFixed(2)} (${
        percent(median(windows.map((window) => window.busyShare)))
      } of its cores busy)`,
      ratio: "—",
      target: "—",
      met: undefined,
    });
  }
  // Where the cores are saturated (other jobs included), rates go as the
  // inverse of the CPU seconds each byte costs.
  const directCpu = median(cpu.direct.map((window) => totalCpu(window.groups)));
  const replicaCpu = median(cpu.replica.map((window) => totalCpu(window.groups)));
  context.rows.push({
    what:
      "9. CPU-s per 512 MiB, upload through an S3 replica vs the direct multipart put; ratio = direct ÷ through a replica, what the rate ratio comes to where the cores are saturated",
    ours: figure(replicaCpu, "CPU-s"),
    reference: figure(directCpu, "CPU-s"),
    ratio: percent(directCpu / replicaCpu),
    target: `≥ ${percent(THROUGHPUT_TARGET)} needed for the target`,
    met: directCpu / replicaCpu >= THROUGHPUT_TARGET,
  });
  // If all cores did nothing but this upload, it could not go faster than
  // its bytes over (its CPU-s / cores): the bound the machine puts on it.
  const cores = navigator.hardwareConcurrency;
  const bounds = cpu.replica.map((window) => LARGE_BYTES / 1e6 / (totalCpu(window.groups) / cores));
  const bound = median(bounds);
  context.rows.push({
    what:
      `9. CPU bound of the upload through an S3 replica on ${cores} cores, 512 MiB / (its CPU-s / ${cores}), vs the direct multipart put`,
    ours: figure(bound, "MB/s"),
    reference: figure(directRate, "MB/s"),
    ratio: percent(bound / directRate),
    target: `≥ ${percent(THROUGHPUT_TARGET)} needed for the target`,
    met: bound / directRate >= THROUGHPUT_TARGET,
  });
}

/** "replica 2.2 + RGW daemons 1.6 + curl 0.5 = 4.3". */
function _cpuText(groups: GroupCpu): string {
  const parts = groups.map(([group, seconds]) => `${group} ${seconds.toFixed(2)}`);
  return `${parts.join(" + ")} = ${totalCpu(groups).toFixed(2)}`;
}

/** Each group's median over the windows. */
function _medianGroups(windows: GroupCpu[]): GroupCpu {
  return (windows[0] ?? []).map(([group], i) => [
    group,
    median(windows.map((groups) => groups[i]?.[1] ?? 0)),
  ]);
}

async function _smallUploads(context: BenchContext, env: Record<string, string>): Promise<void> {
  context.progress(`s3: building ${SMALL_UPLOADS} small packages`);
  const items = await _smallPackages("s3-bench-upload", SMALL_UPLOADS);
  const latencyItems = await _smallPackages("s3-bench-latency", LATENCY_UPLOADS);

  const fs = await _fsServer(context, "small");
  let fsRate: number;
  let fsLatency: number[];
  try {
    fsRate = await _rate(context, [fs.url], items);
    fsLatency = await _latencies(context, fs.url, latencyItems);
  } finally {
    await fs[Symbol.asyncDispose]();
  }

  for (const count of [1, 3]) {
    const prefix = `small-${_prefixes++}`;
    const replicas: ServerProcess[] = [];
    try {
      for (let i = 0; i < count; i++) replicas.push(await _replica(context, env, prefix, `r${i}`));
      const rate = await _rate(context, replicas.map((replica) => replica.url), items);
      context.progress(
        `s3: ${count} replica(s) ${rate.toFixed(0)} uploads/s, local ${fsRate.toFixed(0)}/s`,
      );
      context.rows.push({
        what:
          `9. uploads/s, ${items.length} × 100 KiB, ${SMALL_CONCURRENCY} clients, ${count} S3 replica${
            count > 1 ? "s on one bucket" : ""
          } vs one server on a local directory`,
        ours: figure(rate, "/s"),
        reference: figure(fsRate, "/s"),
        ratio: percent(rate / fsRate),
        target: "—",
        met: undefined,
      });
      if (count === 1) {
        const latencies = await _latencies(context, replicas[0]!.url, latencyItems);
        context.rows.push({
          what:
            `9. index latency with S3: one upload at a time, answer after the index files are in the bucket, p50 / p99`,
          ours: `${percentile(latencies, 50).toFixed(1)} / ${
            percentile(latencies, 99).toFixed(1)
          } ms`,
          reference: `${percentile(fsLatency, 50).toFixed(1)} / ${
            percentile(fsLatency, 99).toFixed(1)
          } ms`,
          ratio: "—",
          target: "—",
          met: undefined,
        });
      }
    } finally {
      for (const replica of replicas) await replica[Symbol.asyncDispose]();
    }
  }
}

/** Uploads every item once, spread over `urls`, `SMALL_CONCURRENCY` clients in all. */
async function _rate(context: BenchContext, urls: string[], items: UploadItem[]): Promise<number> {
  const started = performance.now();
  await Promise.all(
    urls.map((url, i) =>
      uploadMany(url, items.filter((_, j) => j % urls.length === i), {
        concurrency: Math.max(1, Math.round(SMALL_CONCURRENCY / urls.length)),
        token: context.token,
        caPem: context.tls.caPem,
      })
    ),
  );
  return items.length / ((performance.now() - started) / 1000);
}

async function _latencies(
  context: BenchContext,
  url: string,
  items: UploadItem[],
): Promise<number[]> {
  const result = await uploadMany(url, items, {
    concurrency: 1,
    token: context.token,
    caPem: context.tls.caPem,
  });
  return result.latenciesMs;
}

/** `count` distinct ~100 KiB `.conda` packages named `<name>-<i>`. */
async function _smallPackages(name: string, count: number): Promise<UploadItem[]> {
  const payload = new Uint8Array(100 * 1024);
  for (let at = 0; at < payload.length; at += 65536) {
    crypto.getRandomValues(payload.subarray(at, Math.min(at + 65536, payload.length)));
  }
  const items: UploadItem[] = [];
  for (let i = 0; i < count; i++) {
    const spec = { name: `${name}-${i}`, version: "1.0", files: { "lib/data.bin": payload } };
    items.push({ filename: packageFilename(spec), bytes: await buildPackage(spec) });
  }
  return items;
}
