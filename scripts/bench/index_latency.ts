/**
 * Measurement 4: how long the built-in index takes to take in one upload
 * (every index file of the subdir, its name's shard and the shard index included).
 * The server answers 201 only after the index files are written, and logs
 * no index timing, so `BuiltinIndex.add()` is timed in process on channels
 * whose `linux-64/repodata.json` already holds 100, 1,000 and 10,000
 * records. The reference is the least any index must do per upload: write
 * a `repodata.json` of the same size atomically (write, fsync, rename).
 *
 * @module
 */

import { join } from "node:path";
import { BuiltinIndex } from "../../src/index/builtin_index.ts";
import type { PackageRecordSource } from "../../src/package/package_metadata.ts";
import { ChannelStorage } from "../../src/storage/channel_storage.ts";
import { type BenchContext, countLabel, removeAll } from "./bench_context.ts";
import { figure, times } from "./report_table.ts";
import { seedDigest, writeRepodata } from "./synthetic_repodata.ts";
import { median } from "./stats.ts";

const SUBDIR = "linux-64";
const WARM_UP_ADDS = 3;
/** Median add() latency allowed at the largest index. */
const TARGET_MS = 50;

/** `info/index.json` of a package as conda-build writes it. */
function _indexJson(name: string, version: string): Record<string, unknown> {
  return {
    arch: "x86_64",
    build: "0",
    build_number: 0,
    depends: ["python >=3.9", "libfoo >=1.2,<2"],
    license: "MIT",
    name,
    platform: "linux",
    subdir: SUBDIR,
    timestamp: 1700000000000,
    version,
  };
}

/** The repodata record conda-index would write for it. */
function _record(name: string, version: string): Record<string, unknown> {
  const { arch: _arch, platform: _platform, ...record } = _indexJson(name, version);
  const seed = `${name}-${version}`;
  return {
    ...record,
    md5: seedDigest(seed, "md5"),
    sha256: seedDigest(seed, "sha256"),
    size: 123456,
  };
}

function _source(name: string, version: string): PackageRecordSource {
  const seed = `${name}-${version}`;
  return {
    filename: `${name}-${version}-0.conda`,
    size: 123456,
    sha256: seedDigest(seed, "sha256"),
    md5: seedDigest(seed, "md5"),
    metadata: {
      format: ".conda",
      name,
      version,
      build: "0",
      subdir: SUBDIR,
      index: _indexJson(name, version),
      about: { summary: `The ${name} package`, license: "MIT" },
    },
  };
}

/** Writes a channel whose `linux-64/repodata.json` holds `count` records (no package files). */
async function _writeChannel(root: string, count: number): Promise<void> {
  const packages: Record<string, unknown> = {};
  const names = Math.max(1, Math.ceil(count / 5));
  for (let i = 0; i < count; i++) {
    const name = `bench-pkg-${i % names}`;
    const version = `1.${Math.floor(i / names)}`;
    packages[`${name}-${version}-0.conda`] = _record(name, version);
  }
  await writeRepodata(root, SUBDIR, packages);
}

/** The reference: write `bytes` beside `target`, fsync, rename over it. */
async function _atomicWrite(target: string, bytes: Uint8Array): Promise<void> {
  const temporary = `${target}.tmp`;
  {
    using file = await Deno.open(temporary, { create: true, truncate: true, write: true });
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    await file.syncData();
  }
  await Deno.rename(temporary, target);
}

/** Times `add()` and the reference at every index size of the plan; adds the rows. */
export async function benchIndexLatency(context: BenchContext): Promise<void> {
  const medians = new Map<number, number>();
  for (const count of context.plan.indexSizes) {
    const root = await Deno.makeTempDir({ dir: context.tmp, prefix: "index-" });
    try {
      await _writeChannel(root, count);
      const storage = await ChannelStorage.open(root);
      const index = await BuiltinIndex.open(storage);
      const ours: number[] = [];
      const total = WARM_UP_ADDS + context.plan.indexAdds;
      for (let i = 0; i < total; i++) {
        const source = _source(`bench-new-${i}`, "1.0");
        const started = performance.now();
        await index.add(source);
        if (i >= WARM_UP_ADDS) ours.push(performance.now() - started);
      }
      // What the adds left to write behind (index.html, channeldata.json) and
      // to remove (replaced versions), before the directory goes.
      await index.flush();
      await storage.settle();
      storage.close();
      const repodata = await Deno.readFile(join(root, SUBDIR, "repodata.json"));
      const reference: number[] = [];
      const target = join(root, "reference-repodata.json");
      for (let i = 0; i < total; i++) {
        const started = performance.now();
        await _atomicWrite(target, repodata);
        if (i >= WARM_UP_ADDS) reference.push(performance.now() - started);
      }
      const oursMs = median(ours);
      const referenceMs = median(reference);
      medians.set(count, oursMs);
      const largest = count === Math.max(...context.plan.indexSizes);
      context.rows.push({
        what: `4. index add() median (shards, run_exports.json included), ${
          countLabel(count)
        } records (${(repodata.length / 1e6).toFixed(2)} MB repodata.json)`,
        ours: figure(oursMs, "ms"),
        reference: figure(referenceMs, "ms"),
        ratio: times(oursMs / referenceMs),
        target: largest ? `≤ ${TARGET_MS} ms` : "—",
        met: largest ? oursMs <= TARGET_MS : undefined,
      });
      context.progress(
        `index add() ${count} records: ${oursMs.toFixed(1)} ms (reference ${
          referenceMs.toFixed(1)
        } ms)`,
      );
    } finally {
      await removeAll(root);
    }
  }
  const sizes = [...medians.keys()].sort((a, b) => a - b);
  const first = sizes[0]!;
  const last = sizes.at(-1)!;
  if (first !== last) {
    const growth = medians.get(last)! / medians.get(first)!;
    const recordGrowth = last / first;
    context.rows.push({
      what: `4. index add() growth, ${countLabel(first)} → ${countLabel(last)} records`,
      ours: times(growth),
      reference: `${times(recordGrowth)} (records)`,
      ratio: times(growth / recordGrowth),
      target: "≤ records growth",
      met: growth <= recordGrowth,
    });
  }
}
