/**
 * Deleting packages (`DELETE /[<channel>/]<subdir>/<filename>`), replacing
 * them (`force` with `--allow_overwrite`), the `/t/<token>/` path token, and
 * the router's answers for methods it does not take.
 */

import assert from "node:assert/strict";
import { BuiltinIndex } from "../src/index/builtin_index.ts";
import { digestChannelFile } from "../src/index/file_digest.ts";
import { inspectPackage } from "../src/package/inspect_package.ts";
import { ChannelStorage } from "../src/storage/channel_storage.ts";
import { buildPackage, packageFilename, type PackageSpec } from "./helpers/conda_package.ts";
import { solveFromServer } from "./helpers/rattler_solve.ts";
import { startTestServer, type TestServer } from "./helpers/test_server.ts";
import {
  channelPackages,
  runCurl,
  servedEtag,
  servedRecord,
  sha256Hex,
  streamOf,
} from "./helpers/upload_clients.ts";

function randomBytes(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let at = 0; at < size; at += 65536) crypto.getRandomValues(bytes.subarray(at, at + 65536));
  return bytes;
}

async function put(
  server: TestServer,
  spec: PackageSpec,
  bytes: Uint8Array,
  query = "",
): Promise<Response> {
  const response = await server.fetch(
    `/${spec.subdir ?? "linux-64"}/${packageFilename(spec)}${query}`,
    {
      method: "PUT",
      headers: { authorization: `Bearer ${server.token}` },
      body: streamOf(bytes),
    },
  );
  return response;
}

async function putOk(server: TestServer, spec: PackageSpec): Promise<Uint8Array> {
  const bytes = await buildPackage(spec);
  const response = await put(server, spec, bytes);
  assert.equal(response.status, 201, await response.clone().text());
  await response.body?.cancel();
  return bytes;
}

Deno.test("DELETE /<subdir>/<file> removes the package and its index record, and rattler no longer finds it", async () => {
  await using server = await startTestServer();
  const gone: PackageSpec = { name: "to-delete", version: "1.0" };
  const kept: PackageSpec = { name: "to-keep", version: "1.0", subdir: "noarch" };
  await putOk(server, gone);
  await putOk(server, kept);
  const etag = await servedEtag(server, `linux-64/${packageFilename(gone)}`);
  assert.notEqual(etag, null);

  const response = await server.fetch(`/linux-64/${packageFilename(gone)}`, {
    method: "DELETE",
    headers: { authorization: `Bearer ${server.token}` },
  });
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), {
    subdir: "linux-64",
    filename: packageFilename(gone),
    deleted: true,
  });
  assert.deepEqual(await channelPackages(server.channelRoot), [
    `noarch/${packageFilename(kept)}`,
  ]);
  assert.equal(await servedRecord(server, `linux-64/${packageFilename(gone)}`), undefined);
  assert.equal(await servedEtag(server, `linux-64/${packageFilename(gone)}`), null);
  assert.notEqual(await servedRecord(server, `noarch/${packageFilename(kept)}`), undefined);

  await assert.rejects(
    solveFromServer(server, ["to-delete"]),
    /No candidates were found for to-delete/,
  );
  const solved = await solveFromServer(server, ["to-keep"]);
  assert.deepEqual(solved.map((r) => r.filename), [packageFilename(kept)]);
});

Deno.test("DELETE /<channel>/<subdir>/<file> works with Basic credentials; a second DELETE is a 404", async () => {
  await using server = await startTestServer();
  const spec: PackageSpec = { name: "delete-twice", version: "2.0", format: ".tar.bz2" };
  await putOk(server, spec);
  const path = `/channel/linux-64/${packageFilename(spec)}`;
  const init = {
    method: "DELETE",
    headers: { authorization: `Basic ${btoa(`u:${server.token}`)}` },
  };
  const first = await server.fetch(path, init);
  assert.equal(first.status, 200);
  await first.body?.cancel();
  const second = await server.fetch(path, init);
  assert.equal(second.status, 404);
  assert.equal(
    await second.text(),
    `Cannot delete: linux-64/${packageFilename(spec)} does not exist\n`,
  );
  assert.deepEqual(await channelPackages(server.channelRoot), []);
});

Deno.test("DELETE answers 404 for another channel or an unknown subdir, 400 for a non-package name", async () => {
  await using server = await startTestServer();
  const spec: PackageSpec = { name: "delete-where", version: "1.0" };
  await putOk(server, spec);
  const init = { method: "DELETE", headers: { authorization: `Bearer ${server.token}` } };
  const other = await server.fetch(`/other/linux-64/${packageFilename(spec)}`, init);
  assert.equal(other.status, 404);
  assert.equal(await other.text(), 'Cannot delete: no channel named "other" here\n');
  const subdir = await server.fetch(`/linux-63/${packageFilename(spec)}`, init);
  assert.equal(subdir.status, 404);
  await subdir.body?.cancel();
  const index = await server.fetch("/linux-64/repodata.json", init);
  assert.ok(index.status === 400 || index.status === 415, String(index.status));
  await index.body?.cancel();
  assert.deepEqual(await channelPackages(server.channelRoot), [
    `linux-64/${packageFilename(spec)}`,
  ]);
  assert.notEqual(await servedRecord(server, `linux-64/${packageFilename(spec)}`), undefined);
});

Deno.test("DELETE refuses wrong, missing and malformed credentials and keeps the package", async () => {
  await using server = await startTestServer();
  const spec: PackageSpec = { name: "delete-auth", version: "1.0" };
  const bytes = await putOk(server, spec);
  const path = `/linux-64/${packageFilename(spec)}`;
  for (
    const headers of [{ authorization: "Bearer nope-token" }, { "x-api-key": "nope-token" }, {}]
  ) {
    const response = await server.fetch(path, { method: "DELETE", headers });
    assert.equal(response.status, 401, JSON.stringify(headers));
    assert.match(response.headers.get("www-authenticate") ?? "", /^Bearer realm=/);
    await response.body?.cancel();
  }
  const malformed = await server.fetch(path, {
    method: "DELETE",
    headers: { authorization: "Bearer two words" },
  });
  assert.equal(malformed.status, 400);
  await malformed.body?.cancel();
  assert.equal((await servedRecord(server, path.slice(1)))?.sha256, sha256Hex(bytes));
  assert.equal(server.logs.join("\n").includes("nope-token"), false);
});

Deno.test("DELETE and GET work under /t/<token>/, and the token never reaches the log", async () => {
  await using server = await startTestServer();
  const spec: PackageSpec = { name: "path-token", version: "1.0" };
  const bytes = await putOk(server, spec);
  const prefix = `/t/${encodeURIComponent(server.token)}`;
  const served = await server.fetch(`${prefix}/linux-64/${packageFilename(spec)}`);
  assert.equal(served.status, 200);
  assert.equal(sha256Hex(await served.bytes()), sha256Hex(bytes));
  const wrong = await server.fetch(`/t/not-it/linux-64/${packageFilename(spec)}`, {
    method: "DELETE",
  });
  assert.equal(wrong.status, 401);
  await wrong.body?.cancel();
  const deleted = await server.fetch(`${prefix}/linux-64/${packageFilename(spec)}`, {
    method: "DELETE",
  });
  assert.equal(deleted.status, 200);
  await deleted.body?.cancel();
  assert.deepEqual(await channelPackages(server.channelRoot), []);
  const log = server.logs.join("\n");
  assert.equal(log.includes(server.token), false);
  assert.equal(log.includes("not-it"), false);
  assert.match(log, /path="\/t\/<redacted>\/linux-64\/path-token-1\.0-0\.conda"/);
});

Deno.test("a deleted package can be uploaded again without force", async () => {
  await using server = await startTestServer();
  const spec: PackageSpec = { name: "phoenix", version: "1.0" };
  await putOk(server, spec);
  const deleted = await server.fetch(`/linux-64/${packageFilename(spec)}`, {
    method: "DELETE",
    headers: { authorization: `Bearer ${server.token}` },
  });
  assert.equal(deleted.status, 200);
  await deleted.body?.cancel();
  const rebuilt = await buildPackage({ ...spec, files: { "share/phoenix/ash": "rebuilt\n" } });
  const again = await put(server, spec, rebuilt);
  assert.equal(again.status, 201);
  assert.equal((await again.json()).replaced, false);
  assert.equal(
    (await servedRecord(server, `linux-64/${packageFilename(spec)}`))?.sha256,
    sha256Hex(rebuilt),
  );
});

Deno.test("a forced replacement is atomic: readers get the old or the new package whole, then the index and ETag change", async () => {
  await using server = await startTestServer({ flags: { allowOverwrite: true } });
  const spec: PackageSpec = { name: "swap", version: "1.0" };
  const old = await putOk(server, spec);
  const replacement = await buildPackage({
    ...spec,
    files: { "lib/swap.bin": randomBytes(200_000) },
  });
  const path = `/linux-64/${packageFilename(spec)}`;
  const etagBefore = await servedEtag(server, path.slice(1));
  const allowed = new Set([sha256Hex(old), sha256Hex(replacement)]);
  let replacing = true;
  const readers = Array.from({ length: 2 }, async () => {
    let reads = 0;
    while (replacing || reads === 0) {
      const response = await server.fetch(path);
      assert.equal(response.status, 200);
      assert.ok(allowed.has(sha256Hex(await response.bytes())), "a torn read");
      reads++;
    }
    return reads;
  });
  const response = await put(server, spec, replacement, "?force=true");
  replacing = false;
  assert.equal(response.status, 201);
  assert.equal((await response.json()).replaced, true);
  const reads = await Promise.all(readers);
  assert.ok(reads.every((n) => n > 0));
  assert.equal((await servedRecord(server, path.slice(1)))?.sha256, sha256Hex(replacement));
  assert.equal((await servedRecord(server, path.slice(1)))?.size, replacement.length);
  assert.notEqual(await servedEtag(server, path.slice(1)), etagBefore);
  const served = await (await server.fetch(path)).bytes();
  assert.equal(sha256Hex(served), sha256Hex(replacement));
});

Deno.test("force=maybe is a 400, not a silent false", async () => {
  await using server = await startTestServer({ flags: { allowOverwrite: true } });
  const spec: PackageSpec = { name: "typo", version: "1.0" };
  const bytes = await buildPackage(spec);
  const response = await put(server, spec, bytes, "?force=maybe");
  assert.equal(response.status, 400);
  assert.equal(
    await response.text(),
    'Cannot read query parameter force: "maybe" is not true or false\n',
  );
  assert.deepEqual(await channelPackages(server.channelRoot), []);
});

Deno.test("methods a path does not take are a 405 with Allow", async () => {
  await using server = await startTestServer();
  const cases: [string, string, string][] = [
    ["PATCH", "/linux-64/x-1.0-0.conda", "GET, HEAD, PUT, DELETE"],
    ["PUT", "/", "GET, HEAD, POST"],
    ["PATCH", "/api/channels/channel/upload/x-1.0-0.conda", "GET, HEAD, POST, PUT, DELETE"],
    ["POST", "/linux-64/x-1.0-0.conda", "GET, HEAD, PUT, DELETE"],
  ];
  for (const [method, path, allow] of cases) {
    const result = await runCurl(server, ["-X", method, "-i", `${server.url}${path}`]);
    assert.equal(result.status, 405, `${method} ${path}`);
    assert.match(result.body, new RegExp(`^allow: ${allow}\\r?$`, "mi"), `${method} ${path}`);
  }
});

Deno.test("a replacement cut short between the rename and the index write is re-read at the next start, even when the old record's size matches and the index is newer", async () => {
  const root = await Deno.makeTempDir({ prefix: "auh-replace-crash-" });
  try {
    const spec = (text: string): PackageSpec => ({
      name: "cut-short",
      version: "1.0",
      files: { "share/cut-short/v.txt": text },
    });
    // Two different packages of one size, so that size alone cannot give the replacement away.
    const before = await buildPackage(spec("v1"));
    let after: Uint8Array | undefined;
    for (let i = 2; i < 200 && after === undefined; i++) {
      const candidate = await buildPackage(spec(`v${i}`));
      if (candidate.length === before.length) after = candidate;
    }
    assert.ok(after !== undefined, "the test needs two packages of one size");
    const filename = packageFilename(spec("v1"));
    const other: PackageSpec = { name: "other", version: "1.0" };

    const storage = await ChannelStorage.open(root);
    const index = await BuiltinIndex.open(storage);
    await index.reconcile();
    const place = async (bytes: Uint8Array, name: string, replace: boolean) => {
      const spool = await storage.createSpoolFile();
      spool.file.writeSync(bytes);
      spool.file.close();
      await storage.publish(spool.path, "linux-64", name, { replace });
    };
    const recordOf = async (name: string) => {
      const source = await Deno.readTextFile(`${root}/linux-64/repodata.json`);
      return (JSON.parse(source)["packages.conda"] ?? {})[name] as { sha256: string } | undefined;
    };
    await place(before, filename, false);
    await index.reconcile();
    assert.equal((await recordOf(filename))?.sha256, sha256Hex(before));

    // The upload path of a replacement, cut short after the rename: the note is written,
    // the file replaced, and then another upload's index write lands, newer than the file.
    await storage.markReplacing("linux-64", filename);
    await place(after, filename, true);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const otherName = packageFilename(other);
    await place(await buildPackage(other), otherName, false);
    await index.add({
      filename: otherName,
      metadata: await inspectPackage(storage.localPath(`linux-64/${otherName}`), otherName),
      ...await digestChannelFile(storage, `linux-64/${otherName}`),
    });
    assert.equal(
      (await recordOf(filename))?.sha256,
      sha256Hex(before),
      "stale, as a crash leaves it",
    );
    await storage.settle();
    storage.close();

    // The next start.
    const restarted = await ChannelStorage.open(root);
    assert.equal((await restarted.removeLeftoverSpoolFiles()).length, 1);
    const reopened = await BuiltinIndex.open(restarted);
    const report = await reopened.reconcile();
    assert.deepEqual(report.added, [`linux-64/${filename}`]);
    assert.equal((await recordOf(filename))?.sha256, sha256Hex(after));
    await restarted.settle();
    restarted.close();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
