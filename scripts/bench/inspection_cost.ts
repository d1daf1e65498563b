/**
 * Measurement 6: reading a package's `info/` must not read the payload, so
 * its cost on a big package (a `.tar.bz2` whose `info/` comes first, a
 * `.conda`) should be that on a 1 MiB one of the same format. A `.conda` is
 * then also checked whole (the CRC-32 of every zip member): that pass is
 * timed on its own, as a throughput to compare with the upload speed
 * (measurement 1). Timed in process.
 *
 * @module
 */

import { join } from "node:path";
import { type InspectOptions, inspectPackage } from "../../src/package/inspect_package.ts";
import { writeLargePackage } from "../../tests/helpers/conda_package.ts";
import { type BenchContext, removeAll, sizeLabel } from "./bench_context.ts";
import { figure, times } from "./report_table.ts";
import { median } from "./stats.ts";

const SMALL_BYTES = 1024 * 1024;
/** Big ÷ small inspection time that still counts as "independent of size". */
const TARGET_RATIO = 1.5;

/** Least speed of the `.conda` checksum pass: 10 × the ~140 MB/s of a large upload. */
const TARGET_CHECK_MB_PER_S = 1400;

async function _timeInspect(
  path: string,
  filename: string,
  runs: number,
  options: InspectOptions = {},
): Promise<number> {
  await inspectPackage(path, filename, options); // warm-up: JIT, page cache
  const samples: number[] = [];
  for (let run = 0; run < runs; run++) {
    const started = performance.now();
    await inspectPackage(path, filename, options);
    samples.push(performance.now() - started);
  }
  return median(samples);
}

/** Times inspection of a small and a big package of each format; adds the rows. */
export async function benchInspection(context: BenchContext): Promise<void> {
  const big = context.plan.inspectBytes;
  for (const format of [".tar.bz2", ".conda"] as const) {
    const measured: number[] = [];
    const checked: number[] = [];
    for (const payload of [SMALL_BYTES, big]) {
      const version = String(Math.round(payload / SMALL_BYTES));
      const filename = `bench-inspect-${version}-0${format}`;
      const path = join(context.tmp, filename);
      context.progress(`inspection: generating ${sizeLabel(payload)} ${format}`);
      try {
        await writeLargePackage(
          path,
          { name: "bench-inspect", version, build: "0", format },
          payload,
        );
        const runs = context.plan.inspectRuns;
        measured.push(await _timeInspect(path, filename, runs, { verifyChecksums: false }));
        if (format === ".conda") checked.push(await _timeInspect(path, filename, runs));
      } finally {
        await removeAll(path);
      }
    }
    const [smallMs, bigMs] = measured as [number, number];
    context.rows.push({
      what: `6. inspectPackage() info/ only, ${sizeLabel(big)} vs 1 MiB ${format}${
        format === ".tar.bz2" ? " (info/ first)" : ""
      }`,
      ours: figure(bigMs, "ms"),
      reference: `${figure(smallMs, "ms")} (1 MiB)`,
      ratio: times(bigMs / smallMs),
      target: `≈ ×1 (≤ ×${TARGET_RATIO})`,
      met: bigMs / smallMs <= TARGET_RATIO,
    });
    if (format === ".conda") {
      const checkMs = checked[1]! - bigMs;
      const mbPerSecond = big / 1e6 / (checkMs / 1000);
      context.rows.push({
        what: `6. CRC-32 check of every zip member of the ${sizeLabel(big)} .conda (${
          figure(checked[1]!, "ms")
        } with it)`,
        ours: figure(mbPerSecond, "MB/s"),
        reference: `${figure(checkMs, "ms")} added`,
        ratio: "—",
        target: `≥ ${TARGET_CHECK_MB_PER_S} MB/s`,
        met: mbPerSecond >= TARGET_CHECK_MB_PER_S,
      });
    }
  }
}
