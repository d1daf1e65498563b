/**
 * End-to-end with the real conda client and the reference indexer
 * (conda 25.11.1, conda-index 0.12.1, see tests/helpers/conda_client.ts):
 * `conda create` installs from the server, and conda-index run over a copy
 * of the channel's packages writes the same index files as the server.
 * Skipped, with the reason, where the tools are not available.
 */

import { decode } from "@msgpack/msgpack";
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import { zstdDecompressSync } from "node:zlib";
import { condaClient, runTool } from "./helpers/conda_client.ts";
import type { PackageSpec } from "./helpers/conda_package.ts";
import { startTestServer } from "./helpers/test_server.ts";
import { uploadPackages } from "./helpers/upload_clients.ts";

const client = await condaClient();
const skip = typeof client === "string";
if (skip) console.warn(`conda_client_test: SKIPPED, ${client}`);

const PATHS = JSON.stringify({
  paths: [
    { _path: "share/foo/x.txt", file_mode: "text", prefix_placeholder: "/opt/p", size_in_bytes: 1 },
    { _path: "bin/.foo-post-link.sh", path_type: "hardlink", size_in_bytes: 1 },
  ],
  paths_version: 1,
});

/** Packages exercising what the index derives: run exports, flags, recipe, old index.json. */
const SPECS: PackageSpec[] = [
  {
    name: "foo",
    version: "1.0",
    build: "h1_0",
    runExports: { weak: ["foo >=1.0"] },
    infoFiles: {
      "info/paths.json": PATHS,
      "info/recipe/meta.yaml":
        "package:\n  name: foo\nsource:\n  url: https://example.org/foo.tgz\n" +
        "  git_url: https://example.org/foo.git\n",
    },
  },
  {
    name: "foo",
    version: "1.1",
    build: "h1_0",
    format: ".tar.bz2",
    about: { summary: "Foo\nnew", home: "https://foo", license: "MIT", description: " a\n b " },
  },
  { name: "bar", version: "2.0", build: "0", depends: ["foo >=1.0"] },
  { name: "pyx", version: "0.1", build: "py_0", subdir: "noarch", format: ".tar.bz2" },
  // an index.json without subdir (only platform and arch), as old packages have
  { name: "oldie", version: "1.0", build: "0", extraIndex: { subdir: undefined } },
  // a subdir name conda does not know yet
  { name: "fake", version: "1.0", build: "0", subdir: "linux-fake" },
];

function unpack(bytes: Uint8Array): Record<string, unknown> {
  return decode(zstdDecompressSync(bytes)) as Record<string, unknown>;
}

/** Each package name's shard records (decoded), by the shard index of `subdir`. */
async function shardRecords(
  subdir: string,
  shardPath: (hex: string) => string,
): Promise<Record<string, unknown>> {
  const index = unpack(await Deno.readFile(join(subdir, "repodata_shards.msgpack.zst")));
  const records: Record<string, unknown> = {};
  for (const [name, hash] of Object.entries(index.shards as Record<string, Uint8Array>)) {
    const shard = unpack(await Deno.readFile(shardPath(Buffer.from(hash).toString("hex"))));
    records[name] = { packages: shard.packages, "packages.conda": shard["packages.conda"] };
  }
  return records;
}

Deno.test({
  name:
    "conda-index over a copy of the channel writes the same repodata, run_exports, shard records and channeldata",
  ignore: skip,
  async fn() {
    const tools = client as Exclude<typeof client, string>;
    await using server = await startTestServer();
    await uploadPackages(server, SPECS);
    const copy = await Deno.makeTempDir({ prefix: "auh-conda-index-" });
    try {
      const subdirs = ["linux-64", "linux-fake", "noarch"];
      for (const subdir of subdirs) {
        await Deno.mkdir(join(copy, subdir));
        for (const entry of Deno.readDirSync(join(server.channelRoot, subdir))) {
          if (entry.name.endsWith(".conda") || entry.name.endsWith(".tar.bz2")) {
            await Deno.copyFile(
              join(server.channelRoot, subdir, entry.name),
              join(copy, subdir, entry.name),
            );
          }
        }
      }
      await runTool(tools.condaIndex, [
        "--channeldata",
        "--zst",
        "--run-exports",
        "--write-shards",
        // conda-index scans only the subdirs conda knows; linux-fake is named explicitly
        ...subdirs.flatMap((subdir) => ["--subdir", subdir]),
        copy,
      ], { env: { HOME: copy } });
      for (const subdir of subdirs) {
        for (const file of ["repodata.json", "run_exports.json"]) {
          const ours = await Deno.readTextFile(join(server.channelRoot, subdir, file));
          const theirs = await Deno.readTextFile(join(copy, subdir, file));
          assertEquals(ours, theirs, `${subdir}/${file} byte for byte`);
        }
        // conda-index writes its shards beside the index (shards_base_url ""), ours in shards/;
        // its map order is Python's insertion order, so shard bytes (and names) differ: compare decoded.
        assertEquals(
          await shardRecords(
            join(server.channelRoot, subdir),
            (hex) => join(server.channelRoot, subdir, "shards", `${hex}.msgpack.zst`),
          ),
          await shardRecords(join(copy, subdir), (hex) => join(copy, subdir, `${hex}.msgpack.zst`)),
          `${subdir} shard records`,
        );
      }
      const ours = JSON.parse(
        await Deno.readTextFile(join(server.channelRoot, "channeldata.json")),
      );
      const theirs = JSON.parse(await Deno.readTextFile(join(copy, "channeldata.json")));
      assertEquals(ours, theirs);
      assertEquals(ours.packages.foo.text_prefix, true);
      assertEquals(ours.packages.foo.post_link, true);
      assertEquals(ours.packages.foo.source_url, "https://example.org/foo.tgz");
    } finally {
      await Deno.remove(copy, { recursive: true });
    }
  },
});

Deno.test({
  name: "conda create installs a package and its dependencies from the server",
  ignore: skip,
  async fn() {
    const tools = client as Exclude<typeof client, string>;
    await using server = await startTestServer();
    await uploadPackages(server, [
      { name: "libbase", version: "1.3.0", build: "h0_0" },
      { name: "pyhelper", version: "0.5", build: "py_0", format: ".tar.bz2", subdir: "noarch" },
      { name: "topapp", version: "3.1", build: "h2_0", depends: ["libbase >=1.3", "pyhelper"] },
    ]);
    const work = await Deno.makeTempDir({ prefix: "auh-conda-create-" });
    try {
      const condarc = join(work, "condarc");
      await Deno.writeTextFile(
        condarc,
        `solver: classic\nssl_verify: ${server.caFile}\nchannels: []\npkgs_dirs: [${
          join(work, "pkgs")
        }]\n`,
      );
      const prefix = join(work, "env");
      const env = {
        CONDARC: condarc,
        HOME: work,
        CONDA_SUBDIR: "linux-64",
        CONDA_PKGS_DIRS: join(work, "pkgs"),
      };
      const output = await runTool(tools.conda, [
        "create",
        "--yes",
        "--json",
        "-p",
        prefix,
        "-c",
        server.url,
        "--override-channels",
        "topapp",
      ], { env });
      const result = JSON.parse(output);
      assert(result.success, output.slice(0, 500));
      for (const name of ["libbase", "pyhelper", "topapp"]) {
        assert(
          (await Deno.readTextFile(join(prefix, "share", name, "README.txt"))).startsWith(name),
          `${name} installed`,
        );
      }
      const meta = [...Deno.readDirSync(join(prefix, "conda-meta"))].map((entry) => entry.name);
      assert(meta.includes("topapp-3.1-h2_0.json"), meta.join(" "));
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  },
});
