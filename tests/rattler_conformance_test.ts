/**
 * Conformance with a real conda client: packages uploaded with curl are
 * solved by @conda-org/rattler (the solver of pixi and rattler-build) from
 * the server's own HTTPS URL.
 */

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { packageFilename, type PackageSpec, writePackage } from "./helpers/conda_package.ts";
import { solveFromServer } from "./helpers/rattler_solve.ts";
import { startTestServer, type TestServer } from "./helpers/test_server.ts";

async function curlUpload(server: TestServer, file: string): Promise<number> {
  const output = await new Deno.Command("curl", {
    args: [
      "-sS",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "--cacert",
      server.caFile,
      "-F",
      `token=${server.token}`,
      "-F",
      `artifact=@${file}`,
      `${server.url}/`,
    ],
  }).output();
  return Number(new TextDecoder().decode(output.stdout));
}

async function uploadAll(server: TestServer, specs: PackageSpec[]): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "auh-rattler-" });
  try {
    for (const spec of specs) {
      assertEquals(await curlUpload(server, await writePackage(dir, spec)), 201);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const CHAIN: PackageSpec[] = [
  { name: "libbase", version: "1.2.0", build: "h0_0", format: ".tar.bz2" },
  { name: "libbase", version: "1.3.0", build: "h0_0", format: ".conda" },
  {
    name: "midware",
    version: "2.0",
    build: "h1_0",
    format: ".conda",
    depends: ["libbase >=1.3", "pyhelper"],
  },
  {
    name: "pyhelper",
    version: "0.5",
    build: "py_0",
    format: ".tar.bz2",
    subdir: "noarch",
    depends: [],
  },
  { name: "topapp", version: "3.1", build: "h2_0", format: ".tar.bz2", depends: ["midware 2.*"] },
];

Deno.test("rattler solves curl-uploaded packages and their dependencies from the server URL", async () => {
  await using server = await startTestServer();
  await uploadAll(server, CHAIN);
  const solved = await solveFromServer(server, ["topapp"]);
  const byName = new Map(solved.map((record) => [record.name, record]));
  assertEquals([...byName.keys()].sort(), ["libbase", "midware", "pyhelper", "topapp"]);
  assertEquals(byName.get("libbase")?.version, "1.3.0");
  assertEquals(byName.get("pyhelper")?.subdir, "noarch");
  for (const record of solved) {
    const spec = CHAIN.find((candidate) => packageFilename(candidate) === record.filename);
    assert(spec, `solved an unknown file ${record.filename}`);
    const response = await server.fetch(new URL(record.url).pathname);
    assertEquals(response.status, 200);
    const bytes = new Uint8Array(await response.arrayBuffer());
    assertEquals(record.size, bytes.length, `size of ${record.filename}`);
    assertEquals(record.sha256, createHash("sha256").update(bytes).digest("hex"));
    assertEquals(record.md5, createHash("md5").update(bytes).digest("hex"));
    const onDisk = await Deno.readFile(
      join(server.channelRoot, record.subdir ?? "", record.filename),
    );
    assertEquals(bytes, onDisk);
  }
});

Deno.test("rattler solves a channel holding only a linux-64 package (empty noarch is served)", async () => {
  await using server = await startTestServer();
  await uploadAll(server, [{ name: "solo", version: "1.0", build: "0" }]);
  const noarch = await server.fetch("/noarch/repodata.json");
  assertEquals(noarch.status, 200);
  assertEquals((await noarch.json()).info.subdir, "noarch");
  const solved = await solveFromServer(server, ["solo"]);
  assertEquals(solved.map((record) => record.filename), ["solo-1.0-0.conda"]);
});

Deno.test("a package removed by hand disappears from the solve after the index subcommand", async () => {
  await using server = await startTestServer();
  await uploadAll(server, [
    { name: "keepme", version: "1.0", build: "0" },
    { name: "dropme", version: "1.0", build: "0", format: ".tar.bz2" },
  ]);
  const before = await solveFromServer(server, ["dropme"]);
  assertEquals(before.map((record) => record.name), ["dropme"]);
  await Deno.remove(join(server.channelRoot, "linux-64", "dropme-1.0-0.tar.bz2"));
  const index = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      "--config",
      new URL("../deno.json", import.meta.url).pathname,
      new URL("../main.ts", import.meta.url).pathname,
      "index",
      server.channelRoot,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(index.success, new TextDecoder().decode(index.stderr));
  const repodata = await (await server.fetch("/linux-64/repodata.json")).json();
  assertEquals(Object.keys(repodata.packages), []);
  assertEquals(Object.keys(repodata["packages.conda"]), ["keepme-1.0-0.conda"]);
  let error: unknown;
  try {
    await solveFromServer(server, ["dropme"]);
  } catch (caught) {
    error = caught;
  }
  assert(error instanceof Error && /dropme/.test(error.message), String(error));
  const kept = await solveFromServer(server, ["keepme"]);
  assertEquals(kept.map((record) => record.name), ["keepme"]);
});
