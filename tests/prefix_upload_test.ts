/**
 * The prefix.dev protocols: the current one (`rattler-build upload prefix`,
 * `pixi upload` ≥0.61: multipart `POST /api/v1/upload/<channel>`) and the
 * legacy one (old pixi / rattler-build: raw `POST` with `X-File-Name`),
 * each request built as the client builds it.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { hashToken } from "../src/auth/token_hash.ts";
import { TokenVerifier } from "../src/auth/token_verifier.ts";
import { BuiltinIndex } from "../src/index/builtin_index.ts";
import { silentLogger } from "../src/log.ts";
import { AuthThrottle } from "../src/auth/auth_throttle.ts";
import { Metrics } from "../src/observability/metrics.ts";
import { UploadGate } from "../src/upload/upload_gate.ts";
import { createHandler } from "../src/server.ts";
import { ChannelStorage } from "../src/storage/channel_storage.ts";
import { UploadService } from "../src/upload/upload_service.ts";
import { buildPackage, packageFilename, type PackageSpec } from "./helpers/conda_package.ts";
import { solveFromServer } from "./helpers/rattler_solve.ts";
import { snapshotDirectory, startTestServer, type TestServer } from "./helpers/test_server.ts";
import {
  assertReplaced,
  channelPackages,
  rattlerPrefixForm,
  servedEtag,
  servedRecord,
  sha256Hex,
  spoolEntries,
  statusBeforeBody,
  streamOf,
} from "./helpers/upload_clients.ts";

/** The test server's channel root is `<tmp>/channel`, so its default name is "channel". */
const UPLOAD_PATH = "/api/v1/upload/channel";
const USER_AGENT = "rattler_upload/0.3.0";

/** POSTs a package exactly as rattler's prefix backend does. */
function rattlerUpload(
  fetcher: (path: string, init?: RequestInit) => Promise<Response>,
  path: string,
  token: string | undefined,
  filename: string,
  bytes: Uint8Array,
  options: Parameters<typeof rattlerPrefixForm>[2] = {},
): Promise<Response> {
  const form = rattlerPrefixForm(filename, bytes, options);
  const headers: Record<string, string> = {
    "content-type": form.contentType,
    "content-length": String(form.body.length),
    "user-agent": USER_AGENT,
  };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  return fetcher(path, { method: "POST", headers, body: form.body as Uint8Array<ArrayBuffer> });
}

/** rattlerUpload() to the test server with its own token (at UPLOAD_PATH unless `path` says). */
function uploadWithToken(
  server: TestServer,
  filename: string,
  bytes: Uint8Array,
  options: Parameters<typeof rattlerPrefixForm>[2] = {},
  path = UPLOAD_PATH,
): Promise<Response> {
  return rattlerUpload(server.fetch, path, server.token, filename, bytes, options);
}

Deno.test("POST /api/v1/upload/<channel> stores packages sent as rattler-build sends them, and rattler solves them", async () => {
  await using server = await startTestServer();
  const conda: PackageSpec = { name: "prefix-app", version: "1.2.0", depends: ["prefix-lib"] };
  const bz2: PackageSpec = {
    name: "prefix-lib",
    version: "0.5",
    subdir: "noarch",
    format: ".tar.bz2",
  };
  for (const spec of [conda, bz2]) {
    const bytes = await buildPackage(spec);
    const response = await uploadWithToken(server, packageFilename(spec), bytes);
    assert.equal(response.status, 201, await response.clone().text());
    const stored = await response.json();
    assert.equal(stored.filename, packageFilename(spec));
    assert.equal(stored.sha256, sha256Hex(bytes));
    assert.equal(stored.replaced, false);
    const subdir = spec.subdir ?? "linux-64";
    const record = await servedRecord(server, `${subdir}/${packageFilename(spec)}`);
    assert.equal(record?.sha256, sha256Hex(bytes));
    assert.equal(record?.size, bytes.length);
  }
  const solved = await solveFromServer(server, ["prefix-app"]);
  assert.deepEqual(solved.map((r) => r.filename).sort(), [
    "prefix-app-1.2.0-0.conda",
    "prefix-lib-0.5-0.tar.bz2",
  ]);
  const app = solved.find((r) => r.name === "prefix-app")!;
  assert.equal(app.url, `${server.url}/linux-64/prefix-app-1.2.0-0.conda`);
});

Deno.test("POST /api/v1/upload/<channel> ignores an attestation part and keeps nothing of it", async () => {
  await using server = await startTestServer();
  const spec: PackageSpec = { name: "attested", version: "1.0" };
  const bytes = await buildPackage(spec);
  const attestation = JSON.stringify({ mediaType: "application/vnd.dev.sigstore.bundle+json" });
  const response = await uploadWithToken(server, packageFilename(spec), bytes, { attestation });
  assert.equal(response.status, 201, await response.clone().text());
  await response.body?.cancel();
  for (const line of await snapshotDirectory(server.channelRoot)) {
    const path = join(server.channelRoot, line.slice(0, line.lastIndexOf(" ")));
    const text = new TextDecoder().decode(await Deno.readFile(path));
    assert.equal(text.includes("sigstore"), false, `${path} holds the attestation`);
  }
  assert.deepEqual(await channelPackages(server.channelRoot), ["linux-64/attested-1.0-0.conda"]);
});

Deno.test("POST /api/v1/upload/<channel> takes a streamed multipart body without Content-Length", async () => {
  await using server = await startTestServer();
  const spec: PackageSpec = { name: "streamed-form", version: "1.0", format: ".tar.bz2" };
  const bytes = await buildPackage(spec);
  const form = rattlerPrefixForm(packageFilename(spec), bytes);
  const response = await server.fetch(UPLOAD_PATH, {
    method: "POST",
    headers: { "content-type": form.contentType, authorization: `Bearer ${server.token}` },
    body: streamOf(form.body, 100),
  });
  assert.equal(response.status, 201, await response.clone().text());
  await response.body?.cancel();
  assert.equal(
    (await servedRecord(server, `linux-64/${packageFilename(spec)}`))?.sha256,
    sha256Hex(bytes),
  );
});

Deno.test("POST /api/v1/upload/<channel> refuses wrong, missing and malformed credentials before reading the body", async () => {
  await using server = await startTestServer();
  const spec: PackageSpec = { name: "unauthorized", version: "1.0" };
  const bytes = await buildPackage(spec);
  const before = await snapshotDirectory(server.channelRoot);

  const wrong = await rattlerUpload(
    server.fetch,
    UPLOAD_PATH,
    "not-the-token",
    "x-1-0.conda",
    bytes,
  );
  assert.equal(wrong.status, 401);
  assert.match(wrong.headers.get("www-authenticate") ?? "", /^Bearer realm=/);
  assert.match(await wrong.text(), /^Cannot upload: the token is not valid/);

  const missing = await rattlerUpload(server.fetch, UPLOAD_PATH, undefined, "x-1-0.conda", bytes);
  assert.equal(missing.status, 401);
  assert.match(missing.headers.get("www-authenticate") ?? "", /^Bearer realm=/);
  await missing.body?.cancel();

  const form = rattlerPrefixForm(packageFilename(spec), bytes);
  for (const authorization of ["Bearer", "Token abc", "Basic %%%"]) {
    const malformed = await server.fetch(UPLOAD_PATH, {
      method: "POST",
      headers: { "content-type": form.contentType, authorization },
      body: form.body as Uint8Array<ArrayBuffer>,
    });
    assert.equal(malformed.status, 400, authorization);
    await malformed.body?.cancel();
  }

  // The answer comes while the body is still open: no body byte was needed.
  const stalled = await statusBeforeBody(server, UPLOAD_PATH, {
    method: "POST",
    headers: { "content-type": form.contentType, authorization: "Bearer not-the-token" },
    first: form.body.subarray(0, 300),
  });
  assert.equal(stalled, 401);

  assert.deepEqual(await snapshotDirectory(server.channelRoot), before);
  assert.equal(server.logs.join("\n").includes(server.token), false);
  assert.equal(server.logs.join("\n").includes("not-the-token"), false);
});

Deno.test("POST /api/v1/upload/<channel> refuses a sha256 mismatch and leaves nothing behind", async () => {
  await using server = await startTestServer();
  const spec: PackageSpec = { name: "mismatch", version: "1.0" };
  const bytes = await buildPackage(spec);
  const before = await snapshotDirectory(server.channelRoot);
  const response = await uploadWithToken(server, packageFilename(spec), bytes, {
    sha256: "0".repeat(64),
  });
  assert.equal(response.status, 400);
  assert.match(await response.text(), /^Cannot accept artifact: sha256 mismatch/);
  assert.deepEqual(await snapshotDirectory(server.channelRoot), before);
  assert.deepEqual(await spoolEntries(server.channelRoot), []);
});

Deno.test("POST /api/v1/upload/<channel> checks the part's X-File-Name and Content-Length", async () => {
  await using server = await startTestServer({ flags: { maxUploadSize: "64K" } });
  const spec: PackageSpec = { name: "partcheck", version: "1.0" };
  const bytes = await buildPackage(spec);
  const filename = packageFilename(spec);

  const renamed = await uploadWithToken(server, filename, bytes, {
    fileNameHeader: "other-1.0-0.conda",
  });
  assert.equal(renamed.status, 400);
  assert.match(await renamed.text(), /X-File-Name "other-1.0-0.conda" differs/);

  const short = await uploadWithToken(server, filename, bytes, {
    partLength: String(bytes.length + 1),
  });
  assert.equal(short.status, 400);
  assert.match(await short.text(), /declared \d+ bytes but \d+ arrived/);

  const huge = await uploadWithToken(server, filename, bytes, {
    partLength: String(10 * 1024 * 1024),
  });
  assert.equal(huge.status, 413);
  await huge.body?.cancel();

  assert.deepEqual(await channelPackages(server.channelRoot), []);
  assert.deepEqual(await spoolEntries(server.channelRoot), []);
});

Deno.test("POST /api/v1/upload/<channel> answers 404 for another channel", async () => {
  await using server = await startTestServer();
  const bytes = await buildPackage({ name: "elsewhere", version: "1.0" });
  const response = await uploadWithToken(
    server,
    "elsewhere-1.0-0.conda",
    bytes,
    {},
    "/api/v1/upload/conda-forge",
  );
  assert.equal(response.status, 404);
  assert.equal(await response.text(), 'Cannot upload: no channel named "conda-forge" here\n');
});

Deno.test("POST /api/v1/upload/<channel> answers 409 for a duplicate, 403 for a refused force, and replaces with force when allowed", async () => {
  const spec: PackageSpec = { name: "again", version: "1.0" };
  const first = await buildPackage(spec);
  const second = await buildPackage({
    ...spec,
    files: { "share/again/NEW.txt": "rebuilt\n".repeat(50) },
  });
  const filename = packageFilename(spec);
  {
    await using server = await startTestServer();
    assert.equal(
      (await uploadWithToken(server, filename, first)).status,
      201,
    );
    const duplicate = await uploadWithToken(server, filename, second);
    assert.equal(duplicate.status, 409);
    assert.match(await duplicate.text(), /already exists/);
    const forced = await uploadWithToken(server, filename, second, {}, `${UPLOAD_PATH}?force=true`);
    assert.equal(forced.status, 403);
    assert.match(await forced.text(), /--allow_overwrite/);
    assert.equal((await servedRecord(server, `linux-64/${filename}`))?.sha256, sha256Hex(first));
  }
  {
    await using server = await startTestServer({ flags: { allowOverwrite: true } });
    assert.equal(
      (await uploadWithToken(server, filename, first)).status,
      201,
    );
    const etagBefore = await servedEtag(server, `linux-64/${filename}`);
    const unforced = await uploadWithToken(server, filename, second);
    assert.equal(unforced.status, 409);
    await unforced.body?.cancel();
    const forced = await uploadWithToken(server, filename, second, {}, `${UPLOAD_PATH}?force=true`);
    await assertReplaced(server, forced, `linux-64/${filename}`, second, etagBefore);
    const served = await (await server.fetch(`/linux-64/${filename}`)).bytes();
    assert.equal(sha256Hex(served), sha256Hex(second));
  }
});

Deno.test("POST /api/v1/upload/<channel> takes a channel name with slashes (--channel_name)", async () => {
  const root = await Deno.makeTempDir({ prefix: "auh-prefix-" });
  const storage = await ChannelStorage.open(root);
  try {
    const token = "direct-token";
    const indexer = await BuiltinIndex.open(storage);
    const uploads = new UploadService(storage, indexer, {
      maxUploadBytes: 1 << 20,
      allowOverwrite: false,
      logger: silentLogger,
    });
    const handler = createHandler({
      storage,
      uploads,
      verifier: new TokenVerifier([await hashToken(token)]),
      logger: silentLogger,
      serve: true,
      channelName: "team/main",
      gate: new UploadGate(4),
      throttle: new AuthThrottle(),
      metrics: new Metrics(),
      bodyIdleMs: 10_000,
    });
    const info = {
      remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
      completed: Promise.resolve(),
    } as unknown as Deno.ServeHandlerInfo;
    const fetcher = (path: string, init?: RequestInit) =>
      handler(new Request(new URL(path, "http://localhost"), init), info);
    const bytes = await buildPackage({ name: "slashed", version: "1.0" });
    const ok = await rattlerUpload(
      fetcher,
      "/api/v1/upload/team/main",
      token,
      "slashed-1.0-0.conda",
      bytes,
    );
    assert.equal(ok.status, 201, await ok.clone().text());
    const other = await rattlerUpload(
      fetcher,
      "/api/v1/upload/team",
      token,
      "slashed-1.0-0.conda",
      bytes,
    );
    assert.equal(other.status, 404);
    await other.body?.cancel();
    assert.deepEqual(await channelPackages(root), ["linux-64/slashed-1.0-0.conda"]);
  } finally {
    await storage.settle();
    storage.close();
    await Deno.remove(root, { recursive: true });
  }
});

/** POSTs a raw package as old pixi and rattler-build ≤0.35 did. */
function legacyUpload(
  server: Awaited<ReturnType<typeof startTestServer>>,
  path: string,
  headers: Record<string, string>,
  bytes: Uint8Array,
): Promise<Response> {
  return server.fetch(path, {
    method: "POST",
    headers: {
      "content-type": "application/octet-stream",
      "content-length": String(bytes.length),
      ...headers,
    },
    body: bytes as Uint8Array<ArrayBuffer>,
  });
}

Deno.test("legacy raw POST (old pixi upload) answers 200 on /, /api/v1/upload/<channel> and /t/<token>/...", async () => {
  await using server = await startTestServer();
  const specs: PackageSpec[] = [
    { name: "legacy-root", version: "1.0" },
    { name: "legacy-api", version: "1.0", format: ".tar.bz2" },
    { name: "legacy-path-token", version: "1.0", subdir: "noarch" },
  ];
  const paths = ["/", UPLOAD_PATH, `/t/${encodeURIComponent(server.token)}${UPLOAD_PATH}`];
  for (const [index, spec] of specs.entries()) {
    const bytes = await buildPackage(spec);
    const path = paths[index]!;
    const headers: Record<string, string> = {
      "x-file-name": packageFilename(spec),
      "x-file-sha256": sha256Hex(bytes),
    };
    if (!path.startsWith("/t/")) headers.authorization = `Bearer ${server.token}`;
    const response = await legacyUpload(server, path, headers, bytes);
    assert.equal(response.status, 200, `${path}: ${await response.clone().text()}`);
    assert.equal((await response.json()).sha256, sha256Hex(bytes));
  }
  assert.deepEqual(await channelPackages(server.channelRoot), [
    "linux-64/legacy-api-1.0-0.tar.bz2",
    "linux-64/legacy-root-1.0-0.conda",
    "noarch/legacy-path-token-1.0-0.conda",
  ]);
  const log = server.logs.join("\n");
  assert.equal(log.includes(server.token), false);
  assert.match(log, /\/t\/<redacted>\/api\/v1\/upload\/channel/);
});

Deno.test("legacy raw POST refuses bad tokens, a missing X-File-Name and a sha256 mismatch", async () => {
  await using server = await startTestServer();
  const spec: PackageSpec = { name: "legacy-bad", version: "1.0" };
  const bytes = await buildPackage(spec);
  const filename = packageFilename(spec);
  const before = await snapshotDirectory(server.channelRoot);

  const wrong = await legacyUpload(server, UPLOAD_PATH, {
    authorization: "Bearer wrong",
    "x-file-name": filename,
  }, bytes);
  assert.equal(wrong.status, 401);
  assert.match(wrong.headers.get("www-authenticate") ?? "", /^Bearer/);
  await wrong.body?.cancel();

  const stalled = await statusBeforeBody(server, "/", {
    method: "POST",
    headers: {
      authorization: "Bearer wrong",
      "content-type": "application/octet-stream",
      "x-file-name": filename,
    },
    first: bytes.subarray(0, 100),
  });
  assert.equal(stalled, 401);

  const wrongPath = await legacyUpload(server, "/t/wrong/", { "x-file-name": filename }, bytes);
  assert.equal(wrongPath.status, 401);
  await wrongPath.body?.cancel();

  const missing = await legacyUpload(server, "/", { "x-file-name": filename }, bytes);
  assert.equal(missing.status, 401);
  await missing.body?.cancel();

  const noName = await legacyUpload(
    server,
    "/",
    { authorization: `Bearer ${server.token}` },
    bytes,
  );
  assert.equal(noName.status, 400);
  assert.equal(await noName.text(), "Cannot upload: the X-File-Name header is missing\n");

  const mismatch = await legacyUpload(server, "/", {
    authorization: `Bearer ${server.token}`,
    "x-file-name": filename,
    "x-file-sha256": sha256Hex(new Uint8Array([1])),
  }, bytes);
  assert.equal(mismatch.status, 400);
  assert.match(await mismatch.text(), /sha256 mismatch/);

  const duplicateOk = await legacyUpload(server, "/", {
    authorization: `Bearer ${server.token}`,
    "x-file-name": filename,
  }, bytes);
  assert.equal(duplicateOk.status, 200);
  await duplicateOk.body?.cancel();
  const duplicate = await legacyUpload(server, "/", {
    authorization: `Bearer ${server.token}`,
    "x-file-name": filename,
  }, bytes);
  assert.equal(duplicate.status, 409);
  await duplicate.body?.cancel();

  assert.deepEqual(
    (await snapshotDirectory(server.channelRoot)).filter((line) => line.includes(".conda ")),
    [`linux-64/${filename} ${sha256Hex(bytes)}`],
  );
  assert.equal(before.some((line) => line.includes(".conda ")), false);
  assert.equal(server.logs.join("\n").includes(server.token), false);
});

Deno.test("POST / still takes the original multipart form next to the legacy raw body", async () => {
  await using server = await startTestServer();
  const spec: PackageSpec = { name: "form-still", version: "1.0" };
  const bytes = await buildPackage(spec);
  const form = new FormData();
  form.append("token", server.token);
  form.append("artifact", new Blob([bytes as Uint8Array<ArrayBuffer>]), packageFilename(spec));
  const response = await server.fetch("/", { method: "POST", body: form });
  assert.equal(response.status, 201);
  await response.body?.cancel();
  assert.deepEqual(await channelPackages(server.channelRoot), [
    `linux-64/${packageFilename(spec)}`,
  ]);
});
