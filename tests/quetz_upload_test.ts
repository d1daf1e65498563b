/**
 * The quetz protocol as `rattler-build upload quetz` speaks it:
 * `POST /api/channels/<channel>/upload/<filename>?force=false&sha256=<hex>`
 * with `X-API-Key` and a raw streamed body (no Content-Length, no
 * Content-Type).
 */

import assert from "node:assert/strict";
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

function quetzPath(filename: string, sha256: string, force = "false", channel = "channel"): string {
  return `/api/channels/${channel}/upload/${filename}?force=${force}&sha256=${sha256}`;
}

/** POSTs as rattler does: query `force` then `sha256`, X-API-Key, a streamed body. */
function quetzUpload(
  server: TestServer,
  path: string,
  apiKey: string | undefined,
  bytes: Uint8Array,
): Promise<Response> {
  const headers: Record<string, string> = { "user-agent": "rattler-build/0.40.0" };
  if (apiKey !== undefined) headers["x-api-key"] = apiKey;
  return server.fetch(path, { method: "POST", headers, body: streamOf(bytes, 1000) });
}

/** quetzUpload() of `bytes` as `filename`, with the server's key and the bytes' true sha256. */
function quetzUploadWithKey(
  server: TestServer,
  filename: string,
  bytes: Uint8Array,
  force = "false",
): Promise<Response> {
  return quetzUpload(server, quetzPath(filename, sha256Hex(bytes), force), server.token, bytes);
}

Deno.test("quetz upload stores streamed packages in both formats, and rattler solves them", async () => {
  await using server = await startTestServer();
  const specs: PackageSpec[] = [
    { name: "quetz-app", version: "2.0", depends: ["quetz-data >=1"] },
    { name: "quetz-data", version: "1.1", subdir: "noarch", format: ".tar.bz2" },
  ];
  for (const spec of specs) {
    const bytes = await buildPackage(spec);
    const filename = packageFilename(spec);
    const response = await quetzUploadWithKey(server, filename, bytes);
    assert.equal(response.status, 201, await response.clone().text());
    const stored = await response.json();
    assert.equal(stored.sha256, sha256Hex(bytes));
    assert.equal(stored.size, bytes.length);
    const record = await servedRecord(server, `${spec.subdir ?? "linux-64"}/${filename}`);
    assert.equal(record?.sha256, sha256Hex(bytes));
  }
  const solved = await solveFromServer(server, ["quetz-app"]);
  assert.deepEqual(solved.map((r) => `${r.subdir}/${r.filename}`).sort(), [
    "linux-64/quetz-app-2.0-0.conda",
    "noarch/quetz-data-1.1-0.tar.bz2",
  ]);
});

Deno.test("quetz upload takes an HTTP/1.1 chunked body with no Content-Length (curl)", async () => {
  await using server = await startTestServer();
  const spec: PackageSpec = { name: "quetz-chunked", version: "1.0", format: ".tar.bz2" };
  const bytes = await buildPackage(spec);
  const filename = packageFilename(spec);
  const result = await runCurl(server, [
    "--http1.1",
    "-X",
    "POST",
    "-H",
    `X-API-Key: ${server.token}`,
    "-H",
    "Content-Type:",
    "-T",
    "-",
    `${server.url}${quetzPath(filename, sha256Hex(bytes))}`,
  ], { stdin: bytes });
  assert.equal(result.status, 201, result.body + result.trace);
  const sent = sentHeaders(result.trace);
  assert.equal(sent.get("transfer-encoding"), "chunked");
  assert.equal(sent.has("content-length"), false);
  assert.equal(sent.has("content-type"), false);
  assert.equal(JSON.parse(result.body).sha256, sha256Hex(bytes));
  assert.deepEqual(await channelPackages(server.channelRoot), [`linux-64/${filename}`]);
});

Deno.test("quetz upload answers 406 for a sha256 mismatch and leaves nothing behind", async () => {
  await using server = await startTestServer();
  const bytes = await buildPackage({ name: "quetz-mismatch", version: "1.0" });
  const before = await snapshotDirectory(server.channelRoot);
  const response = await quetzUpload(
    server,
    quetzPath("quetz-mismatch-1.0-0.conda", "ab".repeat(32)),
    server.token,
    bytes,
  );
  assert.equal(response.status, 406);
  assert.match(await response.text(), /^Cannot accept artifact: sha256 mismatch/);
  assert.deepEqual(await snapshotDirectory(server.channelRoot), before);
  assert.deepEqual(await spoolEntries(server.channelRoot), []);
});

Deno.test("quetz upload refuses wrong, missing and malformed credentials before reading the body", async () => {
  await using server = await startTestServer();
  const bytes = await buildPackage({ name: "quetz-auth", version: "1.0" });
  const path = quetzPath("quetz-auth-1.0-0.conda", sha256Hex(bytes));
  const before = await snapshotDirectory(server.channelRoot);

  const wrong = await quetzUpload(server, path, "wrong-key", bytes);
  assert.equal(wrong.status, 401);
  assert.match(wrong.headers.get("www-authenticate") ?? "", /^Bearer realm=/);
  assert.match(await wrong.text(), /the token is not valid/);

  const missing = await quetzUpload(server, path, undefined, bytes);
  assert.equal(missing.status, 401);
  assert.match(await missing.text(), /no token was sent/);

  const malformed = await server.fetch(path, {
    method: "POST",
    headers: { authorization: "ApiKey" },
    body: streamOf(bytes),
  });
  assert.equal(malformed.status, 400);
  await malformed.body?.cancel();

  const stalled = await statusBeforeBody(server, path, {
    method: "POST",
    headers: { "x-api-key": "wrong-key" },
    first: bytes.subarray(0, 100),
  });
  assert.equal(stalled, 401);

  assert.deepEqual(await snapshotDirectory(server.channelRoot), before);
  const log = server.logs.join("\n");
  assert.equal(log.includes(server.token) || log.includes("wrong-key"), false);
});

Deno.test("quetz upload answers 404 for another channel and 413 for a chunked body over the limit", async () => {
  await using server = await startTestServer({ flags: { maxUploadSize: "32K" } });
  const small = await buildPackage({ name: "quetz-where", version: "1.0" });
  const other = await quetzUpload(
    server,
    quetzPath("quetz-where-1.0-0.conda", sha256Hex(small), "false", "other"),
    server.token,
    small,
  );
  assert.equal(other.status, 404);
  assert.equal(await other.text(), 'Cannot upload: no channel named "other" here\n');

  const big = await buildPackage({
    name: "quetz-big",
    version: "1.0",
    files: { "lib/blob.bin": crypto.getRandomValues(new Uint8Array(48 * 1024)) },
  });
  const tooBig = await quetzUploadWithKey(server, "quetz-big-1.0-0.conda", big);
  assert.equal(tooBig.status, 413);
  await tooBig.body?.cancel();
  assert.deepEqual(await channelPackages(server.channelRoot), []);
  assert.deepEqual(await spoolEntries(server.channelRoot), []);
});

Deno.test("quetz upload answers 409 for a duplicate, 403 for a refused force=true, and replaces when allowed", async () => {
  const spec: PackageSpec = { name: "quetz-again", version: "1.0", format: ".tar.bz2" };
  const first = await buildPackage(spec);
  const second = await buildPackage({ ...spec, files: { "bin/tool": "#!/bin/sh\necho 2\n" } });
  const filename = packageFilename(spec);
  {
    await using server = await startTestServer();
    const ok = await quetzUploadWithKey(server, filename, first);
    assert.equal(ok.status, 201);
    await ok.body?.cancel();
    const duplicate = await quetzUploadWithKey(server, filename, second);
    assert.equal(duplicate.status, 409);
    await duplicate.body?.cancel();
    const forced = await quetzUploadWithKey(server, filename, second, "true");
    assert.equal(forced.status, 403);
    await forced.body?.cancel();
    assert.equal((await servedRecord(server, `linux-64/${filename}`))?.sha256, sha256Hex(first));
  }
  {
    await using server = await startTestServer({ flags: { allowOverwrite: true } });
    const ok = await quetzUploadWithKey(server, filename, first);
    assert.equal(ok.status, 201);
    await ok.body?.cancel();
    const etagBefore = await servedEtag(server, `linux-64/${filename}`);
    const forced = await quetzUploadWithKey(server, filename, second, "true");
    await assertReplaced(server, forced, `linux-64/${filename}`, second, etagBefore);
  }
});
