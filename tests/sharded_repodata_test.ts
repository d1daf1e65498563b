/**
 * Conformance of the sharded repodata (CEP-16) with a real client:
 * @conda-org/rattler (the solver of pixi and rattler-build) solves from the
 * server's URL by the shard index and shards alone, and an upload changes
 * only its own name's shard.
 */

import { decode } from "@msgpack/msgpack";
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { createHash } from "node:crypto";
import { zstdDecompressSync } from "node:zlib";
import type { PackageSpec } from "./helpers/conda_package.ts";
import { solveFromServer } from "./helpers/rattler_solve.ts";
import { startTestServer, type TestServer } from "./helpers/test_server.ts";
import { uploadPackages } from "./helpers/upload_clients.ts";

const CHAIN: PackageSpec[] = [
  { name: "libbase", version: "1.3.0", build: "h0_0", runExports: { weak: ["libbase >=1.3"] } },
  { name: "midware", version: "2.0", build: "h1_0", depends: ["libbase >=1.3", "pyhelper"] },
  { name: "pyhelper", version: "0.5", build: "py_0", format: ".tar.bz2", subdir: "noarch" },
  { name: "topapp", version: "3.1", build: "h2_0", format: ".tar.bz2", depends: ["midware 2.*"] },
  // in the channel, not needed by the solve: its shard must not be fetched
  { name: "unrelated", version: "9.9", build: "0" },
];

/** Paths of the GET requests the server logged from `from` on. */
function requested(server: TestServer, from: number): string[] {
  return server.logs.slice(from)
    .filter((line) => /\brequest\b/.test(line) && /method=GET/.test(line))
    .map((line) => /path=(\S+)/.exec(line)?.[1] ?? "");
}

async function shardIndex(server: TestServer, subdir: string): Promise<Record<string, string>> {
  const response = await server.fetch(`/${subdir}/repodata_shards.msgpack.zst`);
  assertEquals(response.status, 200);
  const data = decode(zstdDecompressSync(new Uint8Array(await response.arrayBuffer()))) as {
    shards: Record<string, Uint8Array>;
  };
  return Object.fromEntries(
    Object.entries(data.shards).map(([name, hash]) => [name, Buffer.from(hash).toString("hex")]),
  );
}

Deno.test("rattler solves by the shard index and shards only, never repodata.json", async () => {
  await using server = await startTestServer();
  await uploadPackages(server, CHAIN);
  const from = server.logs.length;
  const solved = await solveFromServer(server, ["topapp"]);
  assertEquals(solved.map((record) => record.name).sort(), [
    "libbase",
    "midware",
    "pyhelper",
    "topapp",
  ]);
  const paths = requested(server, from);
  assert(paths.includes("/linux-64/repodata_shards.msgpack.zst"), paths.join(" "));
  assert(paths.includes("/noarch/repodata_shards.msgpack.zst"), paths.join(" "));
  assert(!paths.some((path) => /repodata\.json/.test(path)), paths.join(" "));
  const linux = await shardIndex(server, "linux-64");
  const noarch = await shardIndex(server, "noarch");
  for (
    const [subdir, name] of [["linux-64", "topapp"], ["linux-64", "midware"], [
      "linux-64",
      "libbase",
    ], ["noarch", "pyhelper"]]
  ) {
    const hex = (subdir === "noarch" ? noarch : linux)[name!];
    assert(hex, `${name} in the ${subdir} shard index`);
    assert(paths.includes(`/${subdir}/shards/${hex}.msgpack.zst`), `${name}: ${paths.join(" ")}`);
  }
  assert(!paths.includes(`/linux-64/shards/${linux.unrelated}.msgpack.zst`), "unrelated fetched");
  // the solved record carries what repodata.json says
  const libbase = solved.find((record) => record.name === "libbase")!;
  const file = await server.fetch(new URL(libbase.url).pathname);
  const bytes = new Uint8Array(await file.arrayBuffer());
  assertEquals(libbase.sha256, createHash("sha256").update(bytes).digest("hex"));
  assertEquals(libbase.size, bytes.length);
});

Deno.test("an upload changes only its name's entry in the shard index; shards are served immutable", async () => {
  await using server = await startTestServer();
  await uploadPackages(server, CHAIN);
  const before = await shardIndex(server, "linux-64");
  await uploadPackages(server, [{ name: "libbase", version: "1.4.0", build: "h0_0" }]);
  const after = await shardIndex(server, "linux-64");
  assertEquals(Object.keys(after).sort(), Object.keys(before).sort());
  for (const name of Object.keys(before)) {
    if (name === "libbase") assert(after[name] !== before[name], "libbase's shard changed");
    else assertEquals(after[name], before[name], `${name}'s shard kept its name`);
  }
  const index = await server.fetch("/linux-64/repodata_shards.msgpack.zst", { method: "HEAD" });
  assertEquals(index.headers.get("cache-control"), "public, max-age=30");
  const shard = await server.fetch(`/linux-64/shards/${after.libbase}.msgpack.zst`);
  assertEquals(shard.headers.get("cache-control"), "public, max-age=31536000, immutable");
  const records = decode(zstdDecompressSync(new Uint8Array(await shard.arrayBuffer()))) as {
    "packages.conda": Record<string, { version: string }>;
  };
  assertEquals(Object.keys(records["packages.conda"]).sort(), [
    "libbase-1.3.0-h0_0.conda",
    "libbase-1.4.0-h0_0.conda",
  ]);
  // the old shard is still served to clients holding the old index
  const old = await server.fetch(`/linux-64/shards/${before.libbase}.msgpack.zst`);
  await old.body?.cancel();
  assertEquals(old.status, 200);
  const solved = await solveFromServer(server, ["libbase"]);
  assertEquals(solved.map((record) => record.version), ["1.4.0"]);
});
