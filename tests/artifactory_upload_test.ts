/**
 * The Artifactory protocol as `rattler-build upload artifactory` and
 * `curl -T` speak it: `PUT /<channel>/<subdir>/<filename>` (or
 * `PUT /<subdir>/<filename>`) with a raw streamed body and Bearer or Basic
 * credentials.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { buildPackage, packageFilename, type PackageSpec } from "./helpers/conda_package.ts";
import { solveFromServer } from "./helpers/rattler_solve.ts";
import { snapshotDirectory, startTestServer, type TestServer } from "./helpers/test_server.ts";
import {
  assertReplaced,
  channelPackages,
  runCurl,
  sentHeaders,
  servedEtag,
  servedRecord,
  sha256Hex,
  spoolEntries,
  statusBeforeBody,
  streamOf,
} from "./helpers/upload_clients.ts";

function basic(user: string, password: string): string {
  return `Basic ${btoa(`${user}:${password}`)}`;
}

/** PUTs as rattler does: a streamed body (no Content-Length, no Content-Type). */
function artifactoryPut(
  server: TestServer,
  path: string,
  authorization: string | undefined,
  bytes: Uint8Array,
): Promise<Response> {
  const headers: Record<string, string> = { "user-agent": "rattler-build/0.40.0" };
  if (authorization !== undefined) headers.authorization = authorization;
  return server.fetch(path, { method: "PUT", headers, body: streamOf(bytes, 1500) });
}

Deno.test("PUT /<channel>/<subdir>/<file> and PUT /<subdir>/<file> store packages, and rattler solves them", async () => {
  await using server = await startTestServer();
  const app: PackageSpec = { name: "art-app", version: "3.0", depends: ["art-lib"] };
  const lib: PackageSpec = {
    name: "art-lib",
    version: "1.0",
    subdir: "noarch",
    format: ".tar.bz2",
  };
  const appBytes = await buildPackage(app);
  const libBytes = await buildPackage(lib);

  const withChannel = await artifactoryPut(
    server,
    `/channel/linux-64/${packageFilename(app)}`,
    `Bearer ${server.token}`,
    appBytes,
  );
  assert.equal(withChannel.status, 201, await withChannel.clone().text());
  assert.equal((await withChannel.json()).sha256, sha256Hex(appBytes));

  const withoutChannel = await artifactoryPut(
    server,
    `/noarch/${packageFilename(lib)}`,
    basic("ci-user", server.token),
    libBytes,
  );
  assert.equal(withoutChannel.status, 201, await withoutChannel.clone().text());
  assert.equal((await withoutChannel.json()).subdir, "noarch");

  assert.equal(
    (await servedRecord(server, `noarch/${packageFilename(lib)}`))?.sha256,
    sha256Hex(libBytes),
  );
  const solved = await solveFromServer(server, ["art-app"]);
  assert.deepEqual(solved.map((r) => r.filename).sort(), [
    "art-app-3.0-0.conda",
    "art-lib-1.0-0.tar.bz2",
  ]);
});

Deno.test("PUT takes curl -T with Content-Length and an HTTP/1.1 chunked body", async () => {
  await using server = await startTestServer();
  const dir = await Deno.makeTempDir({ prefix: "auh-art-" });
  try {
    const spec: PackageSpec = { name: "art-curl", version: "1.0" };
    const bytes = await buildPackage(spec);
    const file = join(dir, packageFilename(spec));
    await Deno.writeFile(file, bytes);
    const sized = await runCurl(server, [
      "-u",
      `ci:${server.token}`,
      "-T",
      file,
      `${server.url}/channel/linux-64/`,
    ]);
    assert.equal(sized.status, 201, sized.body + sized.trace);
    assert.equal(sentHeaders(sized.trace).get("content-length"), String(bytes.length));

    const chunkedSpec: PackageSpec = { name: "art-chunked", version: "1.0", format: ".tar.bz2" };
    const chunkedBytes = await buildPackage(chunkedSpec);
    const chunked = await runCurl(server, [
      "--http1.1",
      "-H",
      `Authorization: Bearer ${server.token}`,
      "-T",
      "-",
      `${server.url}/linux-64/${packageFilename(chunkedSpec)}`,
    ], { stdin: chunkedBytes });
    assert.equal(chunked.status, 201, chunked.body + chunked.trace);
    const sent = sentHeaders(chunked.trace);
    assert.equal(sent.get("transfer-encoding"), "chunked");
    assert.equal(sent.has("content-length"), false);
    assert.deepEqual(await channelPackages(server.channelRoot), [
      "linux-64/art-chunked-1.0-0.tar.bz2",
      "linux-64/art-curl-1.0-0.conda",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("PUT answers 422 when the path's subdir disagrees with index.json, 404 for an unknown subdir or channel", async () => {
  await using server = await startTestServer();
  const bytes = await buildPackage({ name: "art-where", version: "1.0" });
  const before = await snapshotDirectory(server.channelRoot);
  const auth = `Bearer ${server.token}`;

  const wrongSubdir = await artifactoryPut(server, "/osx-arm64/art-where-1.0-0.conda", auth, bytes);
  assert.equal(wrongSubdir.status, 422);
  assert.match(await wrongSubdir.text(), /it is for subdir linux-64, not "osx-arm64"/);

  const unknown = await artifactoryPut(
    server,
    "/channel/linux64/art-where-1.0-0.conda",
    auth,
    bytes,
  );
  assert.equal(unknown.status, 404);
  assert.match(await unknown.text(), /"linux64" is not a conda subdir/);

  const other = await artifactoryPut(
    server,
    "/conda-local/linux-64/art-where-1.0-0.conda",
    auth,
    bytes,
  );
  assert.equal(other.status, 404);
  assert.match(await other.text(), /no channel named "conda-local" here/);

  assert.deepEqual(await snapshotDirectory(server.channelRoot), before);
  assert.deepEqual(await spoolEntries(server.channelRoot), []);
});

Deno.test("PUT refuses wrong, missing and malformed credentials before reading the body", async () => {
  await using server = await startTestServer();
  const bytes = await buildPackage({ name: "art-auth", version: "1.0" });
  const path = "/channel/linux-64/art-auth-1.0-0.conda";
  const before = await snapshotDirectory(server.channelRoot);

  for (
    const authorization of ["Bearer wrong-token", basic(server.token, "wrong-token"), undefined]
  ) {
    const response = await artifactoryPut(server, path, authorization, bytes);
    assert.equal(response.status, 401, String(authorization));
    assert.match(response.headers.get("www-authenticate") ?? "", /^Bearer realm=/);
    await response.body?.cancel();
  }
  for (const authorization of ["Basic not*base64", `Basic ${btoa("no-colon")}`, "Digest x"]) {
    const response = await artifactoryPut(server, path, authorization, bytes);
    assert.equal(response.status, 400, authorization);
    assert.match(await response.text(), /^Cannot read Authorization header/);
  }
  const stalled = await statusBeforeBody(server, path, {
    method: "PUT",
    headers: { authorization: "Bearer wrong-token" },
    first: bytes.subarray(0, 64),
  });
  assert.equal(stalled, 401);

  assert.deepEqual(await snapshotDirectory(server.channelRoot), before);
  const log = server.logs.join("\n");
  assert.equal(log.includes(server.token) || log.includes("wrong-token"), false);
});

Deno.test("PUT verifies X-Checksum-Sha256 or X-File-Sha256 and leaves nothing behind on a mismatch", async () => {
  await using server = await startTestServer();
  const spec: PackageSpec = { name: "art-sum", version: "1.0" };
  const bytes = await buildPackage(spec);
  const path = `/linux-64/${packageFilename(spec)}`;
  const before = await snapshotDirectory(server.channelRoot);
  const mismatch = await server.fetch(path, {
    method: "PUT",
    headers: { authorization: `Bearer ${server.token}`, "x-checksum-sha256": "f".repeat(64) },
    body: streamOf(bytes),
  });
  assert.equal(mismatch.status, 400);
  assert.match(await mismatch.text(), /sha256 mismatch/);
  assert.deepEqual(await snapshotDirectory(server.channelRoot), before);
  assert.deepEqual(await spoolEntries(server.channelRoot), []);

  // pixi upload --method put <url>/linux-64 <file>: X-File-Sha256, Content-Length, octet-stream.
  const pixiHeaders = (sha256: string) => ({
    authorization: `Bearer ${server.token}`,
    "x-file-sha256": sha256,
    "content-length": String(bytes.length),
    "content-type": "application/octet-stream",
  });
  const pixiMismatch = await server.fetch(path, {
    method: "PUT",
    headers: pixiHeaders("0".repeat(64)),
    body: bytes as Uint8Array<ArrayBuffer>,
  });
  assert.equal(pixiMismatch.status, 400);
  assert.match(await pixiMismatch.text(), /sha256 mismatch/);
  assert.deepEqual(await snapshotDirectory(server.channelRoot), before);

  const match = await server.fetch(path, {
    method: "PUT",
    headers: pixiHeaders(sha256Hex(bytes)),
    body: bytes as Uint8Array<ArrayBuffer>,
  });
  assert.equal(match.status, 201);
  await match.body?.cancel();
});

Deno.test("PUT answers 409 for a duplicate, 403 for a refused ?force=true, and replaces when allowed", async () => {
  const spec: PackageSpec = { name: "art-again", version: "1.0" };
  const first = await buildPackage(spec);
  const second = await buildPackage({ ...spec, files: { "etc/art-again.conf": "v2 = true\n" } });
  const path = `/channel/linux-64/${packageFilename(spec)}`;
  {
    await using server = await startTestServer();
    const auth = `Bearer ${server.token}`;
    const ok = await artifactoryPut(server, path, auth, first);
    assert.equal(ok.status, 201);
    await ok.body?.cancel();
    const duplicate = await artifactoryPut(server, path, auth, second);
    assert.equal(duplicate.status, 409);
    await duplicate.body?.cancel();
    const forced = await artifactoryPut(server, `${path}?force=true`, auth, second);
    assert.equal(forced.status, 403);
    await forced.body?.cancel();
    const served = await (await server.fetch(`/linux-64/${packageFilename(spec)}`)).bytes();
    assert.equal(sha256Hex(served), sha256Hex(first));
  }
  {
    await using server = await startTestServer({ flags: { allowOverwrite: true } });
    const auth = `Bearer ${server.token}`;
    const ok = await artifactoryPut(server, path, auth, first);
    assert.equal(ok.status, 201);
    await ok.body?.cancel();
    const etagBefore = await servedEtag(server, `linux-64/${packageFilename(spec)}`);
    const unforced = await artifactoryPut(server, path, auth, second);
    assert.equal(unforced.status, 409);
    await unforced.body?.cancel();
    const forced = await artifactoryPut(server, `${path}?force=true`, auth, second);
    await assertReplaced(server, forced, `linux-64/${packageFilename(spec)}`, second, etagBefore);
  }
});

Deno.test("PUT refuses encoded path traversal and index file names", async () => {
  await using server = await startTestServer();
  const bytes = await buildPackage({ name: "escape", version: "1.0" });
  const before = await snapshotDirectory(server.channelRoot);
  const auth = `Bearer ${server.token}`;
  const cases: [string, number][] = [
    ["/linux-64/..%2F..%2Fescape-1.0-0.conda", 400],
    ["/linux-64/%2E%2E%2Fescape-1.0-0.conda", 400],
    ["/linux-64/.hidden-1.0-0.conda", 400],
    ["/linux-64/repodata.json", 415],
    ["/..%2F..%2Ftmp/linux-64/escape-1.0-0.conda", 404],
  ];
  for (const [path, status] of cases) {
    const response = await artifactoryPut(server, path, auth, bytes);
    assert.equal(response.status, status, path);
    await response.body?.cancel();
  }
  assert.deepEqual(await snapshotDirectory(server.channelRoot), before);
});
