import assert from "node:assert/strict";
import { join } from "node:path";
import { zstdCompressSync, zstdDecompressSync } from "node:zlib";
import { BuiltinIndex } from "../src/index/builtin_index.ts";
import { AUXILIARY_INTERVAL_MS } from "../src/index/index_write_cycle.ts";
import { canonicalJson } from "../src/index/repodata_record.ts";
import { createLogger } from "../src/log.ts";
import type { PackageRecordSource } from "../src/package/package_metadata.ts";
import { ChannelStorage } from "../src/storage/channel_storage.ts";
import {
  buildPackage,
  indexJson,
  packageFilename,
  type PackageSpec,
  writePackage,
} from "./helpers/conda_package.ts";
import { hexDigest, publish, type TempChannel, tempChannel } from "./helpers/temp_channel.ts";

const EMPTY_NOARCH =
  '{"info":{"subdir":"noarch"},"packages":{},"packages.conda":{},"removed":[],"repodata_version":1}';

/** A record source without a package file (for bulk tests where the bytes do not matter). */
function syntheticSource(spec: PackageSpec): PackageRecordSource {
  const filename = packageFilename(spec);
  const index = indexJson(spec);
  return {
    filename,
    size: 1000 + filename.length,
    sha256: hexDigest("sha256", new TextEncoder().encode(filename)),
    md5: hexDigest("md5", new TextEncoder().encode(filename)),
    metadata: {
      format: spec.format ?? ".conda",
      name: spec.name,
      version: spec.version,
      build: spec.build ?? "0",
      subdir: spec.subdir ?? "linux-64",
      index,
    },
  };
}

async function readText(channel: TempChannel, relative: string): Promise<string> {
  return await Deno.readTextFile(join(channel.root, relative));
}

async function readRepodata(channel: TempChannel, subdir: string) {
  return JSON.parse(await readText(channel, `${subdir}/repodata.json`)) as {
    info: { subdir: string };
    packages: Record<string, Record<string, unknown>>;
    "packages.conda": Record<string, Record<string, unknown>>;
    removed: string[];
    repodata_version: number;
  };
}

async function readChanneldata(channel: TempChannel) {
  return JSON.parse(await readText(channel, "channeldata.json")) as {
    channeldata_version: number;
    packages: Record<string, Record<string, unknown>>;
    subdirs: string[];
  };
}

/** Sets a file's mtime an hour into the past. */
async function makeOld(path: string): Promise<void> {
  const old = new Date(Date.now() - 3600_000);
  await Deno.utime(path, old, old);
}

Deno.test("BuiltinIndex.open() creates noarch and channeldata.json in an empty channel", async () => {
  await using channel = await tempChannel("builtin-index-");
  await BuiltinIndex.open(channel.storage);
  assert.equal(await readText(channel, "noarch/repodata.json"), EMPTY_NOARCH);
  const zst = await Deno.readFile(join(channel.root, "noarch/repodata.json.zst"));
  assert.equal(new TextDecoder().decode(zstdDecompressSync(zst)), EMPTY_NOARCH);
  assert.match(await readText(channel, "noarch/index.html"), /<title>noarch<\/title>/);
  assert.equal(
    await readText(channel, "channeldata.json"),
    '{"channeldata_version":1,"packages":{},"subdirs":["noarch"]}\n',
  );
});

Deno.test("BuiltinIndex.open() leaves an existing index alone and writes nothing", async () => {
  await using channel = await tempChannel("builtin-index-");
  const first = await BuiltinIndex.open(channel.storage);
  await first.add(await publish(channel, { name: "foo", version: "1.0" }));
  await first.flush();
  const before = await Deno.stat(join(channel.root, "linux-64/repodata.json"));
  const second = await BuiltinIndex.open(channel.storage);
  assert.equal(second.writeCount, 0);
  const after = await Deno.stat(join(channel.root, "linux-64/repodata.json"));
  assert.equal(after.mtime?.getTime(), before.mtime?.getTime());
});

Deno.test("BuiltinIndex.open() rewrites a .zst older than repodata.json and a missing index.html", async () => {
  await using channel = await tempChannel("builtin-index-");
  const first = await BuiltinIndex.open(channel.storage);
  await first.add(syntheticSource({ name: "foo", version: "1.0" }));
  // As a crash between the two renames (or a `conda index` without --zst) leaves it.
  const zst = join(channel.root, "linux-64/repodata.json.zst");
  await Deno.writeFile(zst, zstdCompressSync(new TextEncoder().encode("{}")));
  await makeOld(zst);
  await Deno.remove(join(channel.root, "noarch/index.html"));

  const second = await BuiltinIndex.open(channel.storage);
  assert.equal(second.writeCount, 2);
  const json = await Deno.readFile(join(channel.root, "linux-64/repodata.json"));
  assert.deepEqual(new Uint8Array(zstdDecompressSync(await Deno.readFile(zst))), json);
  assert.match(await readText(channel, "noarch/index.html"), /<title>noarch<\/title>/);
});

Deno.test("add() resolves once repodata.json and .zst hold the record; index.html and channeldata.json follow", async () => {
  await using channel = await tempChannel("builtin-index-");
  const index = await BuiltinIndex.open(channel.storage);
  const source = await publish(channel, {
    name: "foo",
    version: "1.0",
    depends: ["python >=3.9"],
  });
  await index.add(source);

  const text = await readText(channel, "linux-64/repodata.json");
  const repodata = JSON.parse(text);
  const record = repodata["packages.conda"]["foo-1.0-0.conda"];
  const bytes = await Deno.readFile(join(channel.root, "linux-64/foo-1.0-0.conda"));
  assert.equal(record.size, bytes.length);
  assert.equal(record.sha256, hexDigest("sha256", bytes));
  assert.equal(record.md5, hexDigest("md5", bytes));
  // index.json minus arch/platform (dropped), plus the digests
  const { arch: _arch, platform: _platform, ...kept } = indexJson({
    name: "foo",
    version: "1.0",
    depends: ["python >=3.9"],
  });
  assert.deepEqual(record, { ...kept, md5: record.md5, sha256: record.sha256, size: bytes.length });
  assert.deepEqual(repodata.info, { subdir: "linux-64" });
  assert.deepEqual(repodata.packages, {});
  assert.deepEqual(repodata.removed, []);
  assert.equal(repodata.repodata_version, 1);

  const zst = await Deno.readFile(join(channel.root, "linux-64/repodata.json.zst"));
  assert.deepEqual(zstdDecompressSync(zst), Buffer.from(new TextEncoder().encode(text)));
  await index.flush();
  assert.match(await readText(channel, "linux-64/index.html"), /foo-1\.0-0\.conda/);
  const channeldata = await readChanneldata(channel);
  assert.deepEqual(channeldata.packages.foo?.subdirs, ["linux-64"]);
  assert.deepEqual(channeldata.subdirs, ["linux-64", "noarch"]);
});

Deno.test("add() writes sorted, deterministic bytes with .tar.bz2 in packages and .conda in packages.conda", async () => {
  const specs: PackageSpec[] = [
    { name: "zeta", version: "2.0", format: ".tar.bz2" },
    { name: "alpha", version: "1.0", format: ".conda" },
    { name: "alpha", version: "1.0", format: ".tar.bz2" },
    { name: "mid", version: "0.1", format: ".conda", extraIndex: { zz: 1, aa: { y: 1, b: 2 } } },
    { name: "émoji", version: "1.0", format: ".conda", about: { summary: "naïve ☃" } },
  ];
  const texts: string[] = [];
  for (const order of [specs, [...specs].reverse()]) {
    await using channel = await tempChannel("builtin-index-");
    const index = await BuiltinIndex.open(channel.storage);
    for (const spec of order) await index.add(syntheticSource(spec));
    texts.push(await readText(channel, "linux-64/repodata.json"));
  }
  assert.equal(texts[0], texts[1]);
  const text = texts[0]!;
  const repodata = JSON.parse(text);
  assert.equal(canonicalJson(repodata), text, "compact, sorted at every level");
  assert.deepEqual(Object.keys(repodata.packages), ["alpha-1.0-0.tar.bz2", "zeta-2.0-0.tar.bz2"]);
  assert.deepEqual(Object.keys(repodata["packages.conda"]), [
    "alpha-1.0-0.conda",
    "mid-0.1-0.conda",
    "émoji-1.0-0.conda",
  ]);
  assert.ok(text.includes('"\\u00e9moji-1.0-0.conda"'), "non-ASCII escaped like Python");
});

Deno.test("add() coalesces 200 concurrent adds into fewer writes, and all are on disk", async () => {
  await using channel = await tempChannel("builtin-index-");
  const index = await BuiltinIndex.open(channel.storage);
  const before = index.writeCount;
  const sources = Array.from(
    { length: 200 },
    (_, i) => syntheticSource({ name: `pkg${i}`, version: "1.0" }),
  );
  await Promise.all(sources.map((source) => index.add(source)));
  const writes = index.writeCount - before;
  assert.ok(writes >= 1 && writes < 200, `writes: ${writes}`);
  const repodata = await readRepodata(channel, "linux-64");
  assert.equal(Object.keys(repodata["packages.conda"]).length, 200);
  await index.flush();
  const channeldata = await readChanneldata(channel);
  assert.equal(Object.keys(channeldata.packages).length, 200);
});

Deno.test("index.html and channeldata.json follow adds one at a time within about 250 ms, written at most every 250 ms", async () => {
  await using channel = await tempChannel("builtin-index-");
  const index = await BuiltinIndex.open(channel.storage);
  const before = index.auxiliaryWriteCount;
  const started = performance.now();
  for (let i = 0; i < 5; i++) {
    await index.add(syntheticSource({ name: `solo${i}`, version: "1.0" }));
  }
  const lastAdd = performance.now();
  const addsMs = lastAdd - started;
  // No flush: a timer writes them once the last write of them is 250 ms old.
  const holdsAll = async () => {
    const html = await readText(channel, "linux-64/index.html").catch(() => "");
    const channeldata = await readChanneldata(channel);
    return [0, 1, 2, 3, 4].every((i) =>
      html.includes(`solo${i}-1.0-0.conda`) && channeldata.packages[`solo${i}`] !== undefined
    );
  };
  while (!await holdsAll()) {
    assert.ok(performance.now() - started < 5000, "index.html and channeldata.json caught up");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  // 250 ms after their last write at most, plus slack for a loaded test machine.
  const lagMs = performance.now() - lastAdd;
  assert.ok(
    lagMs <= AUXILIARY_INTERVAL_MS + 1000,
    `caught up ${lagMs.toFixed(0)} ms after the last add`,
  );
  const writes = index.auxiliaryWriteCount - before;
  assert.ok(writes >= 1, `auxiliary writes: ${writes}`);
  assert.ok(
    writes <= Math.ceil(addsMs / 250) + 1,
    `${writes} auxiliary writes for 5 adds in ${addsMs.toFixed(0)} ms`,
  );
});

Deno.test("under a backlog index.html and channeldata.json are written less often, and completely at the end", async () => {
  await using channel = await tempChannel("builtin-index-");
  const index = await BuiltinIndex.open(channel.storage);
  const writesBefore = index.writeCount;
  const auxiliaryBefore = index.auxiliaryWriteCount;
  // Waves of concurrent adds keep requests queued behind every cycle.
  const waves: Promise<unknown>[] = [];
  for (let wave = 0; wave < 20; wave++) {
    waves.push(Promise.all(
      Array.from(
        { length: 10 },
        (_, i) => index.add(syntheticSource({ name: `wave${wave}x${i}`, version: "1.0" })),
      ),
    ));
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  await Promise.all(waves);
  const writes = index.writeCount - writesBefore;
  const auxiliary = index.auxiliaryWriteCount - auxiliaryBefore;
  assert.ok(writes >= 2, `index writes: ${writes}`);
  assert.ok(auxiliary < writes, `auxiliary writes ${auxiliary} of ${writes} index writes`);
  await index.flush();
  const html = await readText(channel, "linux-64/index.html");
  const channeldata = await readChanneldata(channel);
  for (let wave = 0; wave < 20; wave++) {
    for (let i = 0; i < 10; i++) {
      assert.ok(html.includes(`wave${wave}x${i}-1.0-0.conda`), `wave${wave}x${i} in index.html`);
      assert.ok(channeldata.packages[`wave${wave}x${i}`], `wave${wave}x${i} in channeldata`);
    }
  }
});

Deno.test("add() replaces the record of the same filename", async () => {
  await using channel = await tempChannel("builtin-index-");
  const index = await BuiltinIndex.open(channel.storage);
  await index.add(syntheticSource({ name: "foo", version: "1.0", license: "MIT" }));
  await index.add(syntheticSource({ name: "foo", version: "1.0", license: "BSD-3-Clause" }));
  const repodata = await readRepodata(channel, "linux-64");
  assert.deepEqual(Object.keys(repodata["packages.conda"]), ["foo-1.0-0.conda"]);
  assert.equal(repodata["packages.conda"]["foo-1.0-0.conda"]?.license, "BSD-3-Clause");
});

Deno.test("add() refuses a malformed subdir and a non-package filename", async () => {
  await using channel = await tempChannel("builtin-index-");
  const index = await BuiltinIndex.open(channel.storage);
  const badSubdir = syntheticSource({ name: "foo", version: "1.0" });
  badSubdir.metadata.subdir = "../linux-64";
  await assert.rejects(index.add(badSubdir), TypeError);
  const badName = { ...syntheticSource({ name: "foo", version: "1.0" }), filename: "../foo.conda" };
  await assert.rejects(index.add(badName), TypeError);
});

Deno.test("remove() drops the record, and returns false when there is none", async () => {
  await using channel = await tempChannel("builtin-index-");
  const index = await BuiltinIndex.open(channel.storage);
  await index.add(syntheticSource({ name: "foo", version: "1.0" }));
  await index.add(syntheticSource({ name: "bar", version: "1.0" }));
  assert.equal(await index.remove("linux-64", "foo-1.0-0.conda"), true);
  const repodata = await readRepodata(channel, "linux-64");
  assert.deepEqual(Object.keys(repodata["packages.conda"]), ["bar-1.0-0.conda"]);
  await index.flush();
  const channeldata = await readChanneldata(channel);
  assert.deepEqual(Object.keys(channeldata.packages), ["bar"]);
  const writes = index.writeCount;
  assert.equal(await index.remove("linux-64", "foo-1.0-0.conda"), false);
  assert.equal(await index.remove("osx-64", "bar-1.0-0.conda"), false);
  assert.equal(await index.remove("linux-64", "not-a-package.txt"), false);
  assert.equal(index.writeCount, writes, "nothing to remove, nothing written");
});

Deno.test("BuiltinIndex.open() loads the existing state", async () => {
  await using channel = await tempChannel("builtin-index-");
  const first = await BuiltinIndex.open(channel.storage);
  await first.add(syntheticSource({ name: "foo", version: "1.0" }));
  await first.add(syntheticSource({ name: "bar", version: "1.0", subdir: "noarch" }));

  const second = await BuiltinIndex.open(channel.storage);
  await second.add(syntheticSource({ name: "baz", version: "1.0" }));
  assert.equal(await second.remove("noarch", "bar-1.0-0.conda"), true);
  const linux = await readRepodata(channel, "linux-64");
  assert.deepEqual(Object.keys(linux["packages.conda"]), ["baz-1.0-0.conda", "foo-1.0-0.conda"]);
  assert.deepEqual((await readRepodata(channel, "noarch"))["packages.conda"], {});
});

Deno.test("two BuiltinIndex instances on one channel keep each other's records", async () => {
  await using channel = await tempChannel("builtin-index-");
  const a = await BuiltinIndex.open(channel.storage);
  const bStorage = await ChannelStorage.open(channel.root);
  const b = await BuiltinIndex.open(bStorage);
  const adds: Promise<void>[] = [];
  for (let i = 0; i < 20; i++) {
    adds.push(a.add(syntheticSource({ name: `from-a${i}`, version: "1.0" })));
    adds.push(b.add(syntheticSource({ name: `from-b${i}`, version: "1.0" })));
    if (i % 5 === 0) await new Promise((resolve) => setTimeout(resolve, 1));
  }
  adds.push(b.add(syntheticSource({ name: "only-b", version: "1.0", subdir: "noarch" })));
  await Promise.all(adds);
  const names = Object.keys((await readRepodata(channel, "linux-64"))["packages.conda"]);
  assert.equal(names.length, 40);
  for (let i = 0; i < 20; i++) {
    assert.ok(names.includes(`from-a${i}-1.0-0.conda`), `from-a${i}`);
    assert.ok(names.includes(`from-b${i}-1.0-0.conda`), `from-b${i}`);
  }
  // The instance that wrote last knows everything, channeldata included.
  await b.flush();
  await a.add(syntheticSource({ name: "last", version: "1.0" }));
  await a.flush();
  const channeldata = await readChanneldata(channel);
  assert.equal(Object.keys(channeldata.packages).length, 42);
  assert.deepEqual(channeldata.packages["only-b"]?.subdirs, ["noarch"]);
  await bStorage.settle();
  bStorage.close();
});

Deno.test("add() rejects when the write fails and leaves the record out of memory", async () => {
  await using channel = await tempChannel("builtin-index-");
  const index = await BuiltinIndex.open(channel.storage);
  await index.add(syntheticSource({ name: "ok", version: "1.0" }));
  // A directory where repodata.json.zst should go makes the next write fail.
  const zst = join(channel.root, "linux-64/repodata.json.zst");
  await Deno.remove(zst);
  await Deno.mkdir(join(zst, "blocker"), { recursive: true });
  await assert.rejects(index.add(syntheticSource({ name: "failed", version: "1.0" })));
  const afterFailure = await readRepodata(channel, "linux-64");
  assert.deepEqual(Object.keys(afterFailure["packages.conda"]), ["ok-1.0-0.conda"]);
  await Deno.remove(zst, { recursive: true });

  await index.add(syntheticSource({ name: "later", version: "1.0" }));
  const text = await readText(channel, "linux-64/repodata.json");
  assert.deepEqual(Object.keys(JSON.parse(text)["packages.conda"]), [
    "later-1.0-0.conda",
    "ok-1.0-0.conda",
  ]);
  const zstText = new TextDecoder().decode(zstdDecompressSync(await Deno.readFile(zst)));
  assert.equal(zstText, text);
  assert.equal("failed" in (await readChanneldata(channel)).packages, false);
});

Deno.test("reconcile() indexes a package copied in by hand with digests computed from the file", async () => {
  await using channel = await tempChannel("builtin-index-");
  const index = await BuiltinIndex.open(channel.storage);
  await Deno.mkdir(join(channel.root, "osx-arm64"));
  const path = await writePackage(join(channel.root, "osx-arm64"), {
    name: "copied",
    version: "2.1",
    subdir: "osx-arm64",
    format: ".tar.bz2",
  });
  const report = await index.reconcile();
  assert.deepEqual(report.added, ["osx-arm64/copied-2.1-0.tar.bz2"]);
  assert.deepEqual(report.subdirs, ["noarch", "osx-arm64"]);
  assert.deepEqual(report.failed, []);
  assert.equal(report.unchanged, 0);
  const bytes = await Deno.readFile(path);
  const record = (await readRepodata(channel, "osx-arm64")).packages["copied-2.1-0.tar.bz2"];
  assert.equal(record?.size, bytes.length);
  assert.equal(record?.sha256, hexDigest("sha256", bytes));
  assert.equal(record?.md5, hexDigest("md5", bytes));
  assert.equal(record?.subdir, "osx-arm64");
});

Deno.test("reconcile() drops the record of a package deleted by hand", async () => {
  await using channel = await tempChannel("builtin-index-");
  const index = await BuiltinIndex.open(channel.storage);
  await index.add(await publish(channel, { name: "keep", version: "1.0" }));
  await index.add(await publish(channel, { name: "gone", version: "1.0" }));
  await Deno.remove(join(channel.root, "linux-64/gone-1.0-0.conda"));
  const report = await index.reconcile();
  assert.deepEqual(report.removed, ["linux-64/gone-1.0-0.conda"]);
  assert.deepEqual(report.added, []);
  assert.equal(report.unchanged, 1);
  const repodata = await readRepodata(channel, "linux-64");
  assert.deepEqual(Object.keys(repodata["packages.conda"]), ["keep-1.0-0.conda"]);
});

Deno.test("reconcile() reports a corrupt package in failed and indexes the rest", async () => {
  await using channel = await tempChannel("builtin-index-");
  const lines: string[] = [];
  const logger = createLogger({ write: (line) => lines.push(line) });
  const index = await BuiltinIndex.open(channel.storage, { logger });
  const dir = join(channel.root, "noarch");
  await Deno.writeFile(join(dir, "broken-1.0-0.conda"), new TextEncoder().encode("not a zip"));
  await writePackage(dir, { name: "fine", version: "1.0", subdir: "noarch" });
  // A package filed under the wrong subdir is not indexed there either.
  await writePackage(dir, { name: "misfiled", version: "1.0", subdir: "linux-64" });
  const report = await index.reconcile();
  assert.deepEqual(report.added, ["noarch/fine-1.0-0.conda"]);
  assert.deepEqual(report.failed.map((failure) => failure.path).sort(), [
    "noarch/broken-1.0-0.conda",
    "noarch/misfiled-1.0-0.conda",
  ]);
  for (const failure of report.failed) assert.ok(failure.reason.length > 0);
  assert.deepEqual(Object.keys((await readRepodata(channel, "noarch"))["packages.conda"]), [
    "fine-1.0-0.conda",
  ]);
  assert.ok(lines.some((line) => line.includes("broken-1.0-0.conda")), lines.join("\n"));
});

Deno.test("reconcile() trusts a consistent channel without reading any package", async () => {
  await using channel = await tempChannel("builtin-index-");
  const index = await BuiltinIndex.open(channel.storage);
  const sources = [
    await publish(channel, { name: "a", version: "1.0" }),
    await publish(channel, { name: "b", version: "1.0", format: ".tar.bz2" }),
    await publish(channel, { name: "c", version: "1.0", subdir: "noarch" }),
  ];
  for (const source of sources) await index.add(source);
  // Garbage of the same size with an old mtime: only a re-read would notice.
  const trusted = join(channel.root, "linux-64/a-1.0-0.conda");
  await Deno.writeFile(trusted, new Uint8Array(sources[0]!.size).fill(0x21));
  await makeOld(trusted);
  const before = await readText(channel, "linux-64/repodata.json");
  await index.flush();
  const writes = index.writeCount;

  const reopened = await BuiltinIndex.open(channel.storage);
  for (const indexer of [index, reopened]) {
    const report = await indexer.reconcile();
    assert.equal(report.unchanged, 3);
    assert.deepEqual(report.added, []);
    assert.deepEqual(report.removed, []);
    assert.deepEqual(report.failed, []);
  }
  assert.equal(index.writeCount, writes);
  assert.equal(reopened.writeCount, 0);
  assert.equal(await readText(channel, "linux-64/repodata.json"), before);
});

Deno.test("reconcile() re-reads a package whose size changed or that is newer than the index", async () => {
  await using channel = await tempChannel("builtin-index-");
  const index = await BuiltinIndex.open(channel.storage);
  await index.add(await publish(channel, { name: "grows", version: "1.0" }));
  await index.add(await publish(channel, { name: "touched", version: "1.0" }));
  // Same names, different content (and size) written by hand.
  const dir = join(channel.root, "linux-64");
  await writePackage(dir, {
    name: "grows",
    version: "1.0",
    files: { "big.txt": "x".repeat(5000) },
  });
  await makeOld(join(dir, "grows-1.0-0.conda"));
  const touched = join(dir, "touched-1.0-0.conda");
  await Deno.writeFile(
    touched,
    await buildPackage({ name: "touched", version: "1.0", license: "GPL" }),
  );
  const future = new Date(Date.now() + 60_000);
  await Deno.utime(touched, future, future);

  const report = await index.reconcile();
  assert.deepEqual(report.added, ["linux-64/grows-1.0-0.conda", "linux-64/touched-1.0-0.conda"]);
  const records = (await readRepodata(channel, "linux-64"))["packages.conda"];
  const grows = await Deno.readFile(join(dir, "grows-1.0-0.conda"));
  assert.equal(records["grows-1.0-0.conda"]?.sha256, hexDigest("sha256", grows));
  assert.equal(records["touched-1.0-0.conda"]?.license, "GPL");
});

Deno.test("BuiltinIndex.open() treats an unreadable repodata.json as empty until reconcile rebuilds it", async () => {
  await using channel = await tempChannel("builtin-index-");
  const dir = join(channel.root, "linux-64");
  await Deno.mkdir(dir);
  await writePackage(dir, { name: "foo", version: "1.0" });
  await Deno.writeTextFile(join(dir, "repodata.json"), "{ not json");
  const lines: string[] = [];
  const index = await BuiltinIndex.open(channel.storage, {
    logger: createLogger({ write: (line) => lines.push(line) }),
  });
  assert.ok(lines.some((line) => line.includes("linux-64/repodata.json")), lines.join("\n"));
  assert.equal(await readText(channel, "linux-64/repodata.json"), "{ not json");
  const report = await index.reconcile();
  assert.deepEqual(report.added, ["linux-64/foo-1.0-0.conda"]);
  const repodata = await readRepodata(channel, "linux-64");
  assert.deepEqual(Object.keys(repodata["packages.conda"]), ["foo-1.0-0.conda"]);
});

Deno.test("reconcile() writes the index of a subdir that has packages but no repodata.json", async () => {
  await using channel = await tempChannel("builtin-index-");
  const index = await BuiltinIndex.open(channel.storage);
  await Deno.mkdir(join(channel.root, "win-64"));
  await Deno.mkdir(join(channel.root, "not-a-subdir"));
  await writePackage(join(channel.root, "not-a-subdir"), { name: "ignored", version: "1.0" });
  const report = await index.reconcile();
  assert.deepEqual(report.subdirs, ["noarch", "win-64"]);
  const repodata = await readRepodata(channel, "win-64");
  assert.deepEqual(repodata["packages.conda"], {});
  await Deno.stat(join(channel.root, "win-64/repodata.json.zst"));
  await Deno.stat(join(channel.root, "win-64/index.html"));
});

Deno.test("channeldata.json describes each package by its newest version, as conda-index does", async () => {
  await using channel = await tempChannel("builtin-index-");
  const index = await BuiltinIndex.open(channel.storage);
  const about = (version: string) => ({
    summary: `Foo ${version}`,
    description: `  Foo does\nthings ${version}  `,
    home: "https://example.org/foo",
    dev_url: "https://example.org/foo/dev",
    doc_url: version === "1.9" ? "https://example.org/foo/doc" : undefined,
    license: "about-license-is-overridden",
  });
  await index.add(
    await publish(channel, {
      name: "foo",
      version: "1.10",
      license: "BSD-3-Clause",
      about: about("1.10"),
      runExports: { weak: ["foo >=1.10,<2"] },
    }),
  );
  await index.add(
    await publish(channel, {
      name: "foo",
      version: "1.9",
      subdir: "noarch",
      about: about("1.9"),
      runExports: { weak: ["foo >=1.9,<2"] },
    }),
  );
  await index.flush();
  const text = await readText(channel, "channeldata.json");
  assert.ok(text.endsWith("}\n"));
  const channeldata = JSON.parse(text);
  assert.equal(canonicalJson(channeldata) + "\n", text);
  assert.equal(channeldata.channeldata_version, 1);
  assert.deepEqual(channeldata.subdirs, ["linux-64", "noarch"]);
  assert.deepEqual(channeldata.packages.foo, {
    "activate.d": false,
    "binary_prefix": false,
    "deactivate.d": false,
    "description": "Foo does things 1.10",
    "dev_url": "https://example.org/foo/dev",
    "doc_url": "https://example.org/foo/doc",
    "home": "https://example.org/foo",
    "license": "BSD-3-Clause",
    "post_link": false,
    "pre_link": false,
    "pre_unlink": false,
    "run_exports": { "1.10": { weak: ["foo >=1.10,<2"] }, "1.9": { weak: ["foo >=1.9,<2"] } },
    "subdirs": ["linux-64", "noarch"],
    "summary": "Foo 1.10",
    "text_prefix": false,
    "timestamp": 1700000000,
    "version": "1.10",
  });
});

Deno.test("channeldata.json keeps about.json fields of packages indexed before a restart", async () => {
  await using channel = await tempChannel("builtin-index-");
  const first = await BuiltinIndex.open(channel.storage);
  await first.add(
    await publish(channel, {
      name: "foo",
      version: "1.0",
      about: { summary: "Foo", home: "https://example.org/foo" },
      runExports: { strong: ["foo"] },
    }),
  );
  await first.flush(); // as a server does when it stops
  const second = await BuiltinIndex.open(channel.storage);
  await second.add(await publish(channel, { name: "bar", version: "1.0", about: {} }));
  await second.add(await publish(channel, { name: "foo", version: "0.9", about: {} }));
  await second.flush();
  const foo = (await readChanneldata(channel)).packages.foo;
  assert.equal(foo?.summary, "Foo");
  assert.equal(foo?.home, "https://example.org/foo");
  assert.equal(foo?.version, "1.0");
  assert.deepEqual(foo?.run_exports, { "1.0": { strong: ["foo"] } });
});

/**
 * The channel's storage, whose listDirectories() (the first call of every
 * write cycle) waits for `gate` once `hold()` was called: a cycle is then
 * running while the test queues more requests.
 */
function heldStorage(storage: ChannelStorage) {
  let held: { started: () => void; gate: Promise<void> } | undefined;
  const proxy = new Proxy(storage, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (property === "listDirectories") {
        return async () => {
          const hold = held;
          held = undefined;
          if (hold) {
            hold.started();
            await hold.gate;
          }
          return await target.listDirectories();
        };
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return {
    storage: proxy,
    /** The next cycle waits in its first step until `release` is called; resolves once it does. */
    hold(): { running: Promise<void>; release: () => void } {
      let release!: () => void;
      let started!: () => void;
      const gate = new Promise<void>((resolve) => release = resolve);
      const running = new Promise<void>((resolve) => started = resolve);
      held = { started, gate };
      return { running, release };
    },
  };
}

/**
 * An index of `channel` holding `first`, whose write of `during` has started
 * and waits in its first step until `release()`.
 */
async function indexWithWriteHeld(channel: TempChannel, first: string, during: string) {
  const held = heldStorage(channel.storage);
  const index = await BuiltinIndex.open(held.storage);
  await index.add(syntheticSource({ name: first, version: "1.0" }));
  const { running, release } = held.hold();
  const inCycle = index.add(syntheticSource({ name: during, version: "1.0" }));
  await running;
  return { index, inCycle, release };
}

Deno.test("flush() resolves once index.html and channeldata.json hold adds queued behind a running write", async () => {
  await using channel = await tempChannel("builtin-index-");
  const { index, inCycle, release } = await indexWithWriteHeld(channel, "first", "running");
  // Queued while that write runs: they make the next cycle.
  const queued = index.add(syntheticSource({ name: "queued", version: "1.0" }));
  const flushed = index.flush();
  const writes = index.writeCount;
  release();
  await Promise.all([inCycle, queued, flushed]);
  assert.equal(index.writeCount, writes + 2, "two cycles");
  const html = await readText(channel, "linux-64/index.html");
  const channeldata = await readChanneldata(channel);
  for (const name of ["first", "running", "queued"]) {
    assert.ok(html.includes(`${name}-1.0-0.conda`), `${name} in index.html`);
    assert.ok(channeldata.packages[name], `${name} in channeldata.json`);
  }
});

Deno.test("close() writes what was queued before it, index.html and channeldata.json included, and refuses what comes after", async () => {
  await using channel = await tempChannel("builtin-index-");
  const { index, inCycle, release } = await indexWithWriteHeld(channel, "one", "two");
  const queued = index.add(syntheticSource({ name: "three", version: "1.0" }));
  const closed = index.close();
  const late = index.add(syntheticSource({ name: "late", version: "1.0" }));
  late.catch(() => {}); // asserted below
  release();
  await Promise.all([inCycle, queued, closed]);
  await assert.rejects(late, /Cannot update index: it is closed/);
  await assert.rejects(index.flush(), /Cannot update index: it is closed/);
  const html = await readText(channel, "linux-64/index.html");
  for (const name of ["one", "two", "three"]) {
    assert.ok(html.includes(`${name}-1.0-0.conda`), `${name} in index.html`);
  }
  assert.doesNotMatch(html, /late-1\.0-0/);
  assert.equal(await index.close(), undefined, "a second close() is the first one");
});

Deno.test("add() of an unchanged record still writes the subdir, so that the package's new name is synced", async () => {
  await using channel = await tempChannel("builtin-index-");
  const index = await BuiltinIndex.open(channel.storage);
  const source = syntheticSource({ name: "same", version: "1.0" });
  await index.add(source);
  const writes = index.writeCount;
  await index.add(source);
  assert.equal(index.writeCount, writes + 1);
});

Deno.test("BuiltinIndex.open() rewrites index.html and channeldata.json left older than repodata.json", async () => {
  await using channel = await tempChannel("builtin-index-");
  const first = await BuiltinIndex.open(channel.storage);
  await first.add(syntheticSource({ name: "early", version: "1.0" }));
  await first.flush();
  const stale = {
    html: await readText(channel, "linux-64/index.html"),
    channeldata: await readText(channel, "channeldata.json"),
  };
  await first.add(syntheticSource({ name: "late", version: "1.0" }));
  await first.close();
  // What a process killed before it wrote them leaves: both one write behind.
  await Deno.writeTextFile(join(channel.root, "linux-64/index.html"), stale.html);
  await Deno.writeTextFile(join(channel.root, "channeldata.json"), stale.channeldata);
  const past = new Date(Date.now() - 60_000);
  for (const path of ["linux-64/index.html", "channeldata.json"]) {
    await Deno.utime(join(channel.root, path), past, past);
  }
  assert.doesNotMatch(await readText(channel, "linux-64/index.html"), /late-1\.0-0/);

  const second = await BuiltinIndex.open(channel.storage);
  assert.equal(second.writeCount, 0, "repodata.json and its companions were in step");
  assert.match(await readText(channel, "linux-64/index.html"), /late-1\.0-0\.conda/);
  assert.ok((await readChanneldata(channel)).packages.late, "late in channeldata.json");
  await second.close();
});
