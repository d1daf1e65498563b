/**
 * Measurements 1 and 2: large upload throughput and our server's peak
 * memory, for generated `.conda` artifacts, against the reference server
 * that only streams the body into a file while hashing it.
 *
 * Every run starts a fresh server of each kind (ours on an empty channel),
 * uploads the artifact once with curl and reads the server's `VmHWM`.
 *
 * @module
 */

import { join } from "node:path";
import { writeLargePackage } from "../../tests/helpers/conda_package.ts";
import { type BenchContext, removeAll, sizeLabel } from "./bench_context.ts";
import { type BenchServer, startOurServer, startReferenceServer } from "./bench_process.ts";
import { figure, percent, times } from "./report_table.ts";
import { median } from "./stats.ts";
import { curlUpload } from "./upload_clients.ts";

const MIB = 1024 * 1024;
/** Largest peak memory allowed at every size. */
const MEMORY_TARGET_KIB = 128 * 1024;
/** Throughput target at the largest size, as a share of the reference. */
const THROUGHPUT_TARGET = 0.7;

interface _Run {
  mbPerSecond: number;
  peakKiB: number;
  /** VmHWM right after start-up, before the upload. */
  idleKiB: number;
}

/** Measures every large size of the plan and adds its rows. */
export async function benchLargeUploads(context: BenchContext): Promise<void> {
  const { plan } = context;
  const largest = Math.max(...plan.largeSizes);
  const idleOurs: number[] = [];
  const idleReference: number[] = [];
  for (const size of plan.largeSizes) {
    const label = sizeLabel(size);
    const name = "bench-large";
    const version = String(Math.round(size / MIB));
    const filename = `${name}-${version}-0.conda`;
    const file = join(context.tmp, filename);
    context.progress(`large upload ${label}: generating ${filename}`);
    const fileSize = await writeLargePackage(file, { name, version, build: "0" }, size);
    const ours: _Run[] = [];
    const reference: _Run[] = [];
    try {
      for (let run = 0; run < plan.largeRuns; run++) {
        reference.push(await _referenceRun(context, file, fileSize));
        ours.push(await _ourRun(context, file, fileSize, `large-${version}mib-run${run}`));
        context.progress(
          `large upload ${label} run ${run + 1}/${plan.largeRuns}: ours ${
            ours.at(-1)!.mbPerSecond.toFixed(0)
          } MB/s ${(ours.at(-1)!.peakKiB / 1024).toFixed(0)} MiB, reference ${
            reference.at(-1)!.mbPerSecond.toFixed(0)
          } MB/s`,
        );
      }
    } finally {
      await removeAll(file);
    }
    idleOurs.push(...ours.map((run) => run.idleKiB));
    idleReference.push(...reference.map((run) => run.idleKiB));
    const oursRate = median(ours.map((run) => run.mbPerSecond));
    const referenceRate = median(reference.map((run) => run.mbPerSecond));
    const ratio = oursRate / referenceRate;
    const targeted = size === largest;
    context.rows.push({
      what: `1. upload ${label} .conda (curl), MB/s`,
      ours: figure(oursRate, "MB/s"),
      reference: figure(referenceRate, "MB/s"),
      ratio: percent(ratio),
      target: targeted ? `≥ ${percent(THROUGHPUT_TARGET)}` : "—",
      met: targeted ? ratio >= THROUGHPUT_TARGET : undefined,
    });
    const oursPeak = median(ours.map((run) => run.peakKiB));
    const oursMax = Math.max(...ours.map((run) => run.peakKiB));
    const referencePeak = median(reference.map((run) => run.peakKiB));
    context.rows.push({
      what: `2. server peak RSS (VmHWM), ${label} upload`,
      ours: `${figure(oursPeak / 1024, "MiB")} (max ${(oursMax / 1024).toFixed(1)})`,
      reference: figure(referencePeak / 1024, "MiB"),
      ratio: times(oursPeak / referencePeak),
      target: "≤ 128 MiB",
      met: oursMax <= MEMORY_TARGET_KIB,
    });
  }
  if (idleOurs.length > 0) {
    const oursIdle = median(idleOurs);
    const referenceIdle = median(idleReference);
    context.rows.push({
      what: "2. server peak RSS (VmHWM) after start-up, before any upload (empty channel)",
      ours: figure(oursIdle / 1024, "MiB"),
      reference: figure(referenceIdle / 1024, "MiB"),
      ratio: times(oursIdle / referenceIdle),
      target: "—",
      met: undefined,
    });
  }
}

async function _measure(
  server: BenchServer,
  context: BenchContext,
  file: string,
  fileSize: number,
): Promise<_Run> {
  const idleKiB = await server.peakRssKiB();
  const upload = await curlUpload(server.url, {
    file,
    token: context.token,
    caFile: context.tls.caFile,
  });
  if (upload.status !== 201) {
    throw new Error(
      `Cannot upload ${file}: HTTP ${upload.status} ${upload.body.slice(0, 300)}; server log:\n${
        server.lines.slice(-10).join("\n")
      }`,
    );
  }
  const answer = JSON.parse(upload.body) as { size?: unknown };
  if (typeof answer.size === "number" && answer.size < fileSize) {
    throw new Error(`Cannot upload ${file}: the server received ${answer.size} of ${fileSize}`);
  }
  return {
    mbPerSecond: fileSize / upload.seconds / 1e6,
    peakKiB: await server.peakRssKiB(),
    idleKiB,
  };
}

async function _referenceRun(
  context: BenchContext,
  file: string,
  fileSize: number,
): Promise<_Run> {
  const dir = await Deno.makeTempDir({ dir: context.tmp, prefix: "reference-" });
  try {
    const server = await startReferenceServer(dir, {
      mode: "hash",
      tls: context.tls,
      token: context.token,
    });
    try {
      return await _measure(server, context, file, fileSize);
    } finally {
      await server.stop();
    }
  } finally {
    await removeAll(dir);
  }
}

async function _ourRun(
  context: BenchContext,
  file: string,
  fileSize: number,
  label: string,
): Promise<_Run> {
  const channel = await Deno.makeTempDir({ dir: context.tmp, prefix: "channel-" });
  try {
    const server = await startOurServer(channel, {
      tls: context.tls,
      tokenHash: context.tokenHash,
      ...(context.profileDir === undefined ? {} : { cpuProfDir: join(context.profileDir, label) }),
    });
    try {
      return await _measure(server, context, file, fileSize);
    } finally {
      await server.stop();
    }
  } finally {
    await removeAll(channel);
  }
}
