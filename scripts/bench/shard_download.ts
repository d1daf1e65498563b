/**
 * Measurement 8: bytes a client downloads to solve one package from a
 * subdir of 10,000 packages, with sharded repodata (the shard indexes of
 * `linux-64` and `noarch` plus the shards of the names the solve needs)
 * against the reference of the same client without shards (it then fetches
 * `repodata.json.zst` of both subdirs). The client is @conda-org/rattler
 * (pixi's solver), run against the channel served by `serveChannel()` over
 * plain HTTP in process; the bytes are the bodies the server sent.
 *
 * @module
 */

import { join } from "node:path";
import { errorResponse } from "../../src/http/http_error.ts";
import { BuiltinIndex } from "../../src/index/builtin_index.ts";
import { serveChannel } from "../../src/serve/serve_channel.ts";
import { ChannelStorage } from "../../src/storage/channel_storage.ts";
import { solveWithRattler } from "../../tests/helpers/rattler_solve.ts";
import { type BenchContext, countLabel, removeAll } from "./bench_context.ts";
import { figure, times } from "./report_table.ts";
import { seedDigest, writeRepodata } from "./synthetic_repodata.ts";

const SUBDIR = "linux-64";
const PACKAGES = 10_000;
const VERSIONS_PER_NAME = 5;

/** A channel of `PACKAGES` records (no package files: solving needs none). */
async function _writeChannel(root: string): Promise<void> {
  const packages: Record<string, unknown> = {};
  const names = PACKAGES / VERSIONS_PER_NAME;
  for (let i = 0; i < PACKAGES; i++) {
    const name = `bench-pkg-${i % names}`;
    const version = `1.${Math.floor(i / names)}`;
    // the one solved depends on two others
    const depends = name === "bench-pkg-0" ? ["bench-pkg-1 >=1.1", "bench-pkg-2"] : [];
    const seed = `${name}-${version}`;
    packages[`${name}-${version}-0.conda`] = {
      build: "0",
      build_number: 0,
      depends,
      license: "MIT",
      md5: seedDigest(seed, "md5"),
      name,
      sha256: seedDigest(seed, "sha256"),
      size: 123456,
      subdir: SUBDIR,
      timestamp: 1700000000000,
      version,
    };
  }
  await writeRepodata(root, SUBDIR, packages);
}

/** Serves `root` and counts the body bytes sent per path while `solve` runs. */
async function _downloaded(root: string, solve: (url: string) => Promise<void>) {
  const storage = await ChannelStorage.open(root);
  const sent = new Map<string, number>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    let response: Response;
    try {
      response = await serveChannel(request, storage);
    } catch (error) {
      response = errorResponse(error);
    }
    const path = new URL(request.url).pathname;
    if (response.status === 200) {
      sent.set(path, (sent.get(path) ?? 0) + Number(response.headers.get("content-length") ?? 0));
    }
    return response;
  });
  try {
    await solve(`http://127.0.0.1:${server.addr.port}/`);
  } finally {
    await server.shutdown();
    storage.close();
  }
  return sent;
}

/** Adds the rows of measurement 8. */
export async function benchShardDownload(context: BenchContext): Promise<void> {
  const root = await Deno.makeTempDir({ dir: context.tmp, prefix: "shards-" });
  try {
    await _writeChannel(root);
    const started = performance.now();
    const storage = await ChannelStorage.open(root);
    await BuiltinIndex.open(storage); // writes the shards, run_exports.json, ...
    storage.close();
    const shardingMs = performance.now() - started;
    const solve = async (url: string) => {
      const solved = await solveWithRattler(["bench-pkg-0"], url, [SUBDIR, "noarch"], undefined);
      if (solved.length !== 3) throw new Error(`Cannot bench shards: solved ${solved.length}`);
    };
    const sharded = await _downloaded(root, solve);
    if (![...sharded.keys()].some((path) => path.includes("/shards/"))) {
      throw new Error("Cannot bench shards: the client fetched no shard");
    }
    for (const subdir of [SUBDIR, "noarch"]) {
      await Deno.remove(join(root, subdir, "repodata_shards.msgpack.zst"));
    }
    const monolithic = await _downloaded(root, solve);
    const total = (sent: Map<string, number>) => [...sent.values()].reduce((a, b) => a + b, 0);
    const ours = total(sharded);
    const reference = total(monolithic);
    context.rows.push({
      what: `8. bytes downloaded to solve 1 package (3 names) from ${
        countLabel(PACKAGES)
      } packages: shard indexes + ${
        [...sharded.keys()].filter((path) => path.includes("/shards/")).length
      } shards vs repodata.json.zst`,
      ours: figure(ours / 1000, "kB"),
      reference: figure(reference / 1000, "kB"),
      ratio: times(ours / reference),
      target: "< reference",
      met: ours < reference,
    });
    context.rows.push({
      what: `8. writing the shards of ${
        countLabel(PACKAGES)
      } packages at start-up (BuiltinIndex.open)`,
      ours: figure(shardingMs / 1000, "s"),
      reference: "—",
      ratio: "—",
      target: "seconds",
      met: shardingMs < 10_000,
    });
    context.progress(
      `shards: ${ours} bytes vs ${reference} bytes of repodata.json.zst; sharding took ${
        shardingMs.toFixed(0)
      } ms`,
    );
  } finally {
    await removeAll(root);
  }
}
