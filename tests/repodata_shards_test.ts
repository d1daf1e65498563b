/**
 * The index's sharded repodata (CEP-16), run_exports.json (CEP-12) and the
 * channeldata fields conda-index derives from paths.json and the recipe,
 * kept incrementally by the built-in index.
 */

import { decode, encode } from "@msgpack/msgpack";
import assert from "node:assert/strict";
import { join } from "node:path";
import { zstdDecompressSync } from "node:zlib";
import { BuiltinIndex, type BuiltinIndexOptions } from "../src/index/builtin_index.ts";
import { buildShard, buildShardIndex } from "../src/index/repodata_shards.ts";
import { indexedPackage } from "../src/index/subdir_index.ts";
import { hexDigest, publish, type TempChannel, tempChannel } from "./helpers/temp_channel.ts";

interface ShardIndex {
  version: number;
  info: { base_url: string; shards_base_url: string; created_at: string; subdir: string };
  shards: Record<string, Uint8Array>;
}

async function readShardIndex(channel: TempChannel, subdir: string): Promise<ShardIndex> {
  const bytes = await Deno.readFile(join(channel.root, subdir, "repodata_shards.msgpack.zst"));
  return decode(zstdDecompressSync(bytes)) as ShardIndex;
}

type Records = Record<string, Record<string, unknown>>;

async function readShard(channel: TempChannel, subdir: string, sha256: Uint8Array) {
  const name = `${Buffer.from(sha256).toString("hex")}.msgpack.zst`;
  const bytes = await Deno.readFile(join(channel.root, subdir, "shards", name));
  assert.equal(hexDigest("sha256", bytes), hexOf(sha256));
  return decode(zstdDecompressSync(bytes)) as {
    packages: Records;
    "packages.conda": Records;
    removed: string[];
  };
}

async function readJson(channel: TempChannel, relative: string) {
  return JSON.parse(await Deno.readTextFile(join(channel.root, relative)));
}

function hexOf(bytes: Uint8Array | undefined): string | undefined {
  return bytes && Buffer.from(bytes).toString("hex");
}

async function open(channel: TempChannel, options: BuiltinIndexOptions = {}) {
  return await BuiltinIndex.open(channel.storage, options);
}

Deno.test("add() writes a shard per package name and a shard index as rattler reads them", async () => {
  await using channel = await tempChannel("repodata-shards-");
  const index = await open(channel);
  await index.add(
    await publish(channel, { name: "foo", version: "1.0", runExports: { weak: ["foo"] } }),
  );
  await index.add(await publish(channel, { name: "foo", version: "1.1", format: ".tar.bz2" }));
  await index.add(await publish(channel, { name: "bar", version: "2.0" }));

  const shardIndex = await readShardIndex(channel, "linux-64");
  assert.equal(shardIndex.version, 1);
  assert.equal(shardIndex.info.subdir, "linux-64");
  assert.equal(shardIndex.info.base_url, "");
  assert.equal(shardIndex.info.shards_base_url, "./shards/");
  assert.match(shardIndex.info.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  assert.deepEqual(Object.keys(shardIndex.shards).sort(), ["bar", "foo"]);
  for (const hash of Object.values(shardIndex.shards)) assert.equal(hash.length, 32);

  const repodata = await readJson(channel, "linux-64/repodata.json");
  const foo = await readShard(channel, "linux-64", shardIndex.shards.foo!);
  assert.deepEqual(foo.removed, []);
  assert.deepEqual(Object.keys(foo.packages), ["foo-1.1-0.tar.bz2"]);
  assert.deepEqual(Object.keys(foo["packages.conda"]), ["foo-1.0-0.conda"]);
  for (
    const [section, records] of [["packages", foo.packages], [
      "packages.conda",
      foo["packages.conda"],
    ]] as const
  ) {
    for (const [filename, record] of Object.entries(records)) {
      const expected = repodata[section][filename];
      const { md5, sha256, run_exports: runExports, ...rest } = record;
      assert.equal(hexOf(md5 as Uint8Array), expected.md5);
      assert.equal(hexOf(sha256 as Uint8Array), expected.sha256);
      assert.deepEqual({ ...rest, md5: expected.md5, sha256: expected.sha256 }, expected);
      assert.deepEqual(runExports, filename === "foo-1.0-0.conda" ? { weak: ["foo"] } : {});
    }
  }
});

Deno.test("add() changes only that name's shard index entry; shard bytes are deterministic", async () => {
  await using channel = await tempChannel("repodata-shards-");
  const index = await open(channel);
  for (const name of ["alpha", "beta", "gamma"]) {
    await index.add(await publish(channel, { name, version: "1.0" }));
  }
  const before = await readShardIndex(channel, "linux-64");
  await index.add(await publish(channel, { name: "beta", version: "1.1" }));
  const after = await readShardIndex(channel, "linux-64");
  assert.deepEqual(after.shards.alpha, before.shards.alpha);
  assert.deepEqual(after.shards.gamma, before.shards.gamma);
  assert.notDeepEqual(after.shards.beta, before.shards.beta);
  // the old shard of beta stays for clients holding the old index
  await readShard(channel, "linux-64", before.shards.beta!);

  // A rebuild from scratch (another process, files removed) gives the same names.
  await Deno.remove(join(channel.root, "linux-64/shards"), { recursive: true });
  await Deno.remove(join(channel.root, "linux-64/repodata_shards.msgpack.zst"));
  const reopened = await open(channel);
  assert.ok(reopened.writeCount >= 1);
  const rebuilt = await readShardIndex(channel, "linux-64");
  assert.deepEqual(rebuilt.shards, after.shards);
});

Deno.test("remove() drops the name from the shard index; old shards are collected after the grace period", async () => {
  await using channel = await tempChannel("repodata-shards-");
  const index = await open(channel, { shardGraceMs: 0, shardCollectIntervalMs: 0 });
  await index.add(await publish(channel, { name: "foo", version: "1.0" }));
  await index.add(await publish(channel, { name: "bar", version: "1.0" }));
  const before = await readShardIndex(channel, "linux-64");
  assert.equal(await index.remove("linux-64", "foo-1.0-0.conda"), true);
  const after = await readShardIndex(channel, "linux-64");
  assert.deepEqual(Object.keys(after.shards), ["bar"]);
  const files = [...Deno.readDirSync(join(channel.root, "linux-64/shards"))].map((e) => e.name);
  assert.deepEqual(files, [`${hexOf(after.shards.bar)}.msgpack.zst`]);
  assert.deepEqual(after.shards.bar, before.shards.bar);

  // With the default grace period the unnamed shard stays.
  const kept = await open(channel);
  await kept.add(await publish(channel, { name: "bar", version: "1.1" }));
  await readShard(channel, "linux-64", before.shards.bar!);
});

Deno.test("run_exports.json lists every package's run exports and survives a restart", async () => {
  await using channel = await tempChannel("repodata-shards-");
  const index = await open(channel);
  await index.add(
    await publish(channel, { name: "foo", version: "1.0", runExports: { strong: ["foo >=1.0"] } }),
  );
  await index.add(await publish(channel, { name: "bar", version: "1.0", format: ".tar.bz2" }));
  const expected = {
    info: { subdir: "linux-64", version: 1 },
    packages: { "bar-1.0-0.tar.bz2": { run_exports: {} } },
    "packages.conda": { "foo-1.0-0.conda": { run_exports: { strong: ["foo >=1.0"] } } },
  };
  assert.deepEqual(await readJson(channel, "linux-64/run_exports.json"), expected);
  const zst = await Deno.readFile(join(channel.root, "linux-64/run_exports.json.zst"));
  assert.deepEqual(JSON.parse(new TextDecoder().decode(zstdDecompressSync(zst))), expected);

  // A restart knows them from run_exports.json: nothing is read again.
  const reopened = await open(channel);
  const report = await reopened.reconcile();
  assert.equal(report.unchanged, 2);
  assert.deepEqual(report.added, []);
  await reopened.add(await publish(channel, { name: "baz", version: "1.0" }));
  const after = await readJson(channel, "linux-64/run_exports.json");
  assert.deepEqual(after["packages.conda"]["foo-1.0-0.conda"], {
    run_exports: { strong: ["foo >=1.0"] },
  });
  const shard = await readShard(
    channel,
    "linux-64",
    (await readShardIndex(channel, "linux-64")).shards.foo!,
  );
  assert.deepEqual(shard["packages.conda"]["foo-1.0-0.conda"]?.run_exports, {
    strong: ["foo >=1.0"],
  });
});

Deno.test("reconcile() reads again the packages whose run exports are not known", async () => {
  await using channel = await tempChannel("repodata-shards-");
  const index = await open(channel);
  await index.add(
    await publish(channel, { name: "foo", version: "1.0", runExports: { weak: ["foo"] } }),
  );
  // A channel indexed before run_exports.json existed.
  for (const name of ["run_exports.json", "run_exports.json.zst"]) {
    await Deno.remove(join(channel.root, "linux-64", name));
  }
  const reopened = await open(channel);
  const report = await reopened.reconcile();
  assert.deepEqual(report.added, ["linux-64/foo-1.0-0.conda"]);
  const runExports = await readJson(channel, "linux-64/run_exports.json");
  assert.deepEqual(runExports["packages.conda"]["foo-1.0-0.conda"], {
    run_exports: { weak: ["foo"] },
  });
});

Deno.test("BuiltinIndex.open() takes the shards from the shard index on disk, and writes a missing one again", async () => {
  await using channel = await tempChannel("repodata-shards-");
  const index = await open(channel);
  await index.add(await publish(channel, { name: "foo", version: "1.0" }));
  await index.add(await publish(channel, { name: "bar", version: "1.0" }));
  await index.flush(); // as a server does when it stops
  const { shards } = await readShardIndex(channel, "linux-64");
  // nothing to do: nothing written
  assert.equal((await open(channel)).writeCount, 0);
  const path = join(channel.root, "linux-64/shards", `${hexOf(shards.foo)}.msgpack.zst`);
  const bytes = await Deno.readFile(path);
  await Deno.remove(path);
  const reopened = await open(channel);
  assert.equal(reopened.writeCount, 1);
  assert.deepEqual(await Deno.readFile(path), bytes);
  assert.deepEqual((await readShardIndex(channel, "linux-64")).shards, shards);
});

Deno.test("the index takes a new subdir name, and reconcile leaves other directories alone", async () => {
  await using channel = await tempChannel("repodata-shards-");
  const index = await open(channel);
  await index.add(await publish(channel, { name: "foo", version: "1.0", subdir: "linux-fake" }));
  assert.deepEqual(
    Object.keys((await readJson(channel, "linux-fake/repodata.json"))["packages.conda"]),
    ["foo-1.0-0.conda"],
  );
  assert.deepEqual((await readJson(channel, "channeldata.json")).subdirs, ["linux-fake", "noarch"]);
  await Deno.mkdir(join(channel.root, "my-docs"));
  // packages copied by hand into a new subdir are found by reconcile
  await publish(channel, { name: "bar", version: "1.0", subdir: "wasi-wasm32" });
  const report = await (await open(channel)).reconcile();
  assert.deepEqual(report.subdirs, ["linux-fake", "noarch", "wasi-wasm32"]);
  assert.deepEqual(report.added, ["wasi-wasm32/bar-1.0-0.conda"]);
  assert.deepEqual([...Deno.readDirSync(join(channel.root, "my-docs"))], []);
});

Deno.test("channeldata.json takes the prefix and link-script flags and the recipe's source, as conda-index", async () => {
  await using channel = await tempChannel("repodata-shards-");
  const index = await open(channel);
  const paths = {
    paths: [
      { _path: "share/foo.txt", file_mode: "text", prefix_placeholder: "/opt/placeholder" },
      { _path: "bin/.foo-pre-unlink.sh" },
    ],
    paths_version: 1,
  };
  const recipe =
    "source:\n  url: https://example.org/foo.tar.gz\n  git_url: https://example.org/foo.git\n";
  await index.add(
    await publish(channel, {
      name: "foo",
      version: "1.0",
      infoFiles: { "info/paths.json": JSON.stringify(paths), "info/recipe/meta.yaml": recipe },
    }),
  );
  const entry = (await readJson(channel, "channeldata.json")).packages.foo;
  assert.equal(entry.text_prefix, true);
  assert.equal(entry.binary_prefix, false);
  assert.equal(entry.pre_unlink, true);
  assert.equal(entry.post_link, false);
  assert.equal(entry.source_url, "https://example.org/foo.tar.gz");
  assert.equal(entry.source_git_url, "https://example.org/foo.git");
  // A restart keeps them (from the channeldata.json on disk).
  const reopened = await open(channel);
  await reopened.add(await publish(channel, { name: "bar", version: "1.0" }));
  const again = (await readJson(channel, "channeldata.json")).packages.foo;
  assert.deepEqual(again, entry);
});

Deno.test("the shard index is byte for byte the msgpack encoding of its map with sorted keys, at every map size", () => {
  const names = [
    "zlib",
    "_libgcc_mutex",
    "123",
    "9",
    "éclair",
    "a",
    "python-dateutil",
    "py",
    ...Array.from({ length: 300 }, (_, i) => `name-${i}`),
  ];
  for (const count of [0, 1, 8, 15, 16, 17, 308]) {
    const shards = names.slice(0, count).map((name) =>
      buildShard(name, [
        indexedPackage(`${name}-1.0-0.conda`, {
          name,
          version: "1.0",
          md5: hexDigest("md5", new TextEncoder().encode(name)),
          sha256: hexDigest("sha256", new TextEncoder().encode(name)),
        }),
      ])
    );
    const createdAt = "2026-12-01T00:00:00Z";
    const byName: Record<string, Uint8Array> = {};
    for (const shard of shards) byName[shard.name] = shard.sha256;
    const expected = encode({
      version: 1,
      info: {
        base_url: "",
        shards_base_url: "./shards/",
        created_at: createdAt,
        subdir: "linux-64",
      },
      shards: byName,
    }, { sortKeys: true });
    for (const order of [shards, [...shards].reverse()]) {
      const built = buildShardIndex("linux-64", order, { createdAt });
      assert.deepEqual(new Uint8Array(zstdDecompressSync(built)), expected, `${count} shards`);
    }
  }
});
