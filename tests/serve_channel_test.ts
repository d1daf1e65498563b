import assert from "node:assert/strict";
import { zstdCompressSync } from "node:zlib";
import { errorResponse, HttpError } from "../src/http/http_error.ts";
import { STATUS } from "../src/http/status.ts";
import { ChannelStorage, SERVABLE_REFRESH_MS } from "../src/storage/channel_storage.ts";
import { serveChannel, type ServeChannelOptions } from "../src/serve/serve_channel.ts";
import { buildPackage } from "./helpers/conda_package.ts";
import { startTestServer, uploadForm } from "./helpers/test_server.ts";

/** Fixed mtime of every fixture file, so validators are predictable. */
const MTIME = new Date("2024-01-02T03:04:05.678Z");
const LAST_MODIFIED = "Tue, 02 Jan 2024 03:04:05 GMT";
const PACKAGE = "linux-64/foo-1.0-0.conda";
const PACKAGE_SIZE = 600_000;
const ORIGIN = "http://channel.test";
const encoder = new TextEncoder();

/** Waits until serving looks at the files again (another process's change shows). */
function pastRefresh(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, SERVABLE_REFRESH_MS + 10));
}

interface Channel extends AsyncDisposable {
  /** Parent temp dir holding `channel/` and `secret.txt` (outside the channel). */
  parent: string;
  root: string;
  storage: ChannelStorage;
  /** Fixture contents by channel-relative path. */
  files: Map<string, Uint8Array>;
}

/**
 * A test with the resource and op sanitizers on (opt-in since Deno 2.x), so a
 * file left open by serveChannel() fails the test that caused it.
 */
function test(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, sanitizeResources: true, sanitizeOps: true, fn });
}

function randomBytes(length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let offset = 0; offset < length; offset += 65536) {
    crypto.getRandomValues(bytes.subarray(offset, Math.min(length, offset + 65536)));
  }
  return bytes;
}

function repodata(subdir: string, count: number): Uint8Array {
  const packages: Record<string, unknown> = {};
  for (let i = 0; i < count; i++) {
    packages[`pkg${i}-1.0-0.tar.bz2`] = {
      name: `pkg${i}`,
      version: "1.0",
      build: "0",
      build_number: 0,
      depends: ["python >=3.9"],
      subdir,
      sha256: "0".repeat(64),
      size: 1234 + i,
    };
  }
  return encoder.encode(JSON.stringify({ info: { subdir }, packages, "packages.conda": {} }));
}

async function makeChannel(): Promise<Channel> {
  const parent = await Deno.makeTempDir({ prefix: "serve_channel_test_" });
  const root = `${parent}/channel`;
  await Deno.mkdir(`${root}/linux-64`, { recursive: true });
  await Deno.mkdir(`${root}/noarch`);
  await Deno.mkdir(`${root}/stuff`);
  await Deno.mkdir(`${parent}/outside`);
  const storage = await ChannelStorage.open(root);

  const linuxRepodata = repodata("linux-64", 300);
  const files = new Map<string, Uint8Array>([
    ["linux-64/repodata.json", linuxRepodata],
    ["linux-64/repodata.json.zst", new Uint8Array(zstdCompressSync(linuxRepodata))],
    [PACKAGE, randomBytes(PACKAGE_SIZE)],
    ["linux-64/bar-2.0-1.tar.bz2", randomBytes(5000)],
    ["linux-64/index.html", encoder.encode("<html><body>linux-64 packages</body></html>\n")],
    ["linux-64/notes.bin", randomBytes(100)],
    ["linux-64/empty.json", new Uint8Array()],
    ["linux-64/.hidden", encoder.encode("hidden")],
    ["linux-64/.repodata.json.123.tmp", encoder.encode("{}")],
    ["noarch/repodata.json", repodata("noarch", 3)],
    ["channeldata.json", encoder.encode('{"channeldata_version":1,"packages":{}}')],
    [".upload-spool/x.part", encoder.encode("partial upload")],
    [".artifact-upload-handler.lock", new Uint8Array()],
  ]);
  for (const [path, bytes] of files) {
    await Deno.writeFile(`${root}/${path}`, bytes);
    await Deno.utime(`${root}/${path}`, MTIME, MTIME);
  }
  await Deno.writeTextFile(`${parent}/secret.txt`, "secret outside the channel\n");
  await Deno.writeTextFile(`${parent}/outside/secret.txt`, "secret outside the channel\n");
  return {
    parent,
    root,
    storage,
    files,
    async [Symbol.asyncDispose]() {
      await Deno.remove(parent, { recursive: true });
    },
  };
}

function request(path: string, init: RequestInit = {}): Request {
  return new Request(ORIGIN + path, init);
}

/** Like the router: a thrown HttpError becomes its response. */
async function respond(
  channel: Channel,
  path: string,
  init: RequestInit = {},
  options: ServeChannelOptions = {},
): Promise<Response> {
  try {
    return await serveChannel(request(path, init), channel.storage, options);
  } catch (error) {
    return errorResponse(error);
  }
}

async function bytesOf(response: Response): Promise<Uint8Array> {
  return new Uint8Array(await response.arrayBuffer());
}

async function gunzip(response: Response): Promise<Uint8Array> {
  assert.ok(response.body, "expected a body");
  const stream = response.body.pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function fileOf(channel: Channel, path: string): Uint8Array {
  const bytes = channel.files.get(path);
  assert.ok(bytes, `fixture ${path} exists`);
  return bytes;
}

function identityTag(size: number): string {
  return `"${size.toString(16)}-${MTIME.getTime().toString(16)}"`;
}

/** Asserts an exact 404 with a one-line body, consuming the body. */
async function assertNotFound(response: Response, label: string): Promise<void> {
  const body = await response.text();
  assert.equal(response.status, STATUS.NotFound, `${label}: status`);
  assert.match(body, /^Cannot [^\n]+\n$/, `${label}: one-line body`);
}

async function rejectsWith(promise: Promise<Response>, status: number): Promise<HttpError> {
  try {
    const response = await promise;
    await response.body?.cancel();
  } catch (error) {
    assert.ok(error instanceof HttpError, `expected an HttpError, got ${error}`);
    assert.equal(error.status, status);
    return error;
  }
  assert.fail(`expected an HttpError ${status}`);
}

test("serveChannel() serves a file with length, type, validators and cache headers", async () => {
  await using channel = await makeChannel();
  const expected = fileOf(channel, "linux-64/repodata.json");
  const response = await serveChannel(request("/linux-64/repodata.json"), channel.storage);
  assert.equal(response.status, STATUS.OK);
  assert.equal(response.headers.get("content-length"), String(expected.length));
  assert.equal(response.headers.get("content-type"), "application/json");
  assert.equal(response.headers.get("etag"), identityTag(expected.length));
  assert.equal(response.headers.get("last-modified"), LAST_MODIFIED);
  assert.equal(response.headers.get("accept-ranges"), "bytes");
  assert.equal(response.headers.get("cache-control"), "public, max-age=30");
  assert.equal(response.headers.get("vary"), "Accept-Encoding");
  assert.equal(response.headers.get("content-encoding"), null);
  assert.deepEqual(await bytesOf(response), expected);
});

test("serveChannel() picks content type and cache lifetime by file name", async () => {
  await using channel = await makeChannel();
  const cases: Array<[path: string, type: string, cacheControl: string]> = [
    ["linux-64/repodata.json.zst", "application/zstd", "public, max-age=120"],
    [PACKAGE, "application/octet-stream", "public, max-age=31536000, immutable"],
    ["linux-64/bar-2.0-1.tar.bz2", "application/x-bzip2", "public, max-age=31536000, immutable"],
    ["linux-64/index.html", "text/html; charset=utf-8", "public, max-age=120"],
    ["linux-64/notes.bin", "application/octet-stream", "public, max-age=120"],
    ["channeldata.json", "application/json", "public, max-age=120"],
  ];
  for (const [path, type, cacheControl] of cases) {
    const response = await serveChannel(request(`/${path}`), channel.storage, {
      indexMaxAgeSeconds: 120,
    });
    assert.equal(response.status, STATUS.OK, path);
    assert.equal(response.headers.get("content-type"), type, path);
    assert.equal(response.headers.get("cache-control"), cacheControl, path);
    assert.deepEqual(await bytesOf(response), fileOf(channel, path), path);
  }
  const packageVary = await serveChannel(request(`/${PACKAGE}`), channel.storage);
  await packageVary.body?.cancel();
  assert.equal(packageVary.headers.get("vary"), null);
});

test("serveChannel() serves an empty file", async () => {
  await using channel = await makeChannel();
  const response = await serveChannel(request("/linux-64/empty.json"), channel.storage);
  assert.equal(response.status, STATUS.OK);
  assert.equal(response.headers.get("content-length"), "0");
  assert.equal((await bytesOf(response)).length, 0);
});

test("serveChannel() changes the ETag when another process changes the file", async () => {
  await using channel = await makeChannel();
  const before = await serveChannel(request("/noarch/repodata.json"), channel.storage);
  await before.body?.cancel();
  const oldTag = before.headers.get("etag");
  assert.ok(oldTag);
  const replacement = repodata("noarch", 4);
  const later = new Date(MTIME.getTime() + 60_000);
  await Deno.writeFile(`${channel.root}/noarch/repodata.json`, replacement);
  await Deno.utime(`${channel.root}/noarch/repodata.json`, later, later);
  await pastRefresh();
  const after = await serveChannel(
    request("/noarch/repodata.json", { headers: { "if-none-match": oldTag } }),
    channel.storage,
  );
  assert.equal(after.status, STATUS.OK);
  assert.notEqual(after.headers.get("etag"), oldTag);
  assert.equal(after.headers.get("last-modified"), later.toUTCString());
  assert.deepEqual(await bytesOf(after), replacement);
});

test("serveChannel() answers 404 to the rattler probes on a channel that lacks them", async () => {
  await using channel = await makeChannel();
  const probes = [
    "/noarch/repodata_shards.msgpack.zst",
    "/noarch/repodata.json.zst",
    "/noarch/repodata.json.bz2",
    "/linux-64/repodata_shards.msgpack.zst",
    "/linux-64/repodata.json.bz2",
  ];
  for (const probe of probes) {
    for (const method of ["GET", "HEAD"]) {
      await rejectsWith(serveChannel(request(probe, { method }), channel.storage), 404);
      await assertNotFound(await respond(channel, probe, { method }), `${method} ${probe}`);
    }
  }
});

test("serveChannel() answers 405 with Allow to other methods", async () => {
  await using channel = await makeChannel();
  for (const method of ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"]) {
    for (const path of ["/linux-64/repodata.json", "/missing", "/"]) {
      const error = await rejectsWith(
        serveChannel(request(path, { method }), channel.storage),
        STATUS.MethodNotAllowed,
      );
      assert.equal(error.headers["allow"], "GET, HEAD");
      assert.match(error.message, /^Cannot [^\n]+$/);
    }
  }
});

test("serveChannel() answers 400 to a path that is not valid percent-encoding", async () => {
  await using channel = await makeChannel();
  for (const path of ["/linux-64/%E0%A4%A.json", "/%", "/linux-64/%ZZ", "/%C0%AF"]) {
    await rejectsWith(serveChannel(request(path), channel.storage), STATUS.BadRequest);
    const response = await respond(channel, path);
    assert.equal(response.status, STATUS.BadRequest, path);
    assert.match(await response.text(), /^Cannot [^\n]+\n$/);
  }
});

test("serveChannel() decodes the path exactly once", async () => {
  await using channel = await makeChannel();
  const expected = fileOf(channel, "linux-64/repodata.json");
  // One level of encoding is undone...
  for (const path of ["/linux-64%2Frepodata.json", "/linux%2D64/repodata%2Ejson"]) {
    const response = await serveChannel(request(path), channel.storage);
    assert.equal(response.status, STATUS.OK, path);
    assert.deepEqual(await bytesOf(response), expected);
  }
  // ...but not two: "%252e%252e%252f" is the literal name "%2e%2e%2f".
  await assertNotFound(await respond(channel, "/%252e%252e%252fsecret.txt"), "double");
  await assertNotFound(await respond(channel, "/linux-64/repodata%252Ejson"), "double");
});

test("serveChannel() does not traverse an encoded %2F.. path", async () => {
  await using channel = await makeChannel();
  // The targets exist right outside the channel root.
  assert.ok((await Deno.stat(`${channel.parent}/secret.txt`)).isFile);
  const attempts = [
    "/..%2Fsecret.txt",
    "/..%2F..%2Fetc/passwd",
    "/..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/linux-64/..%2F..%2Fsecret.txt",
    "/linux-64%2F..%2F..%2Fsecret.txt",
    "/linux-64/..%2F.upload-spool/x.part",
    "/%2e%2e%2Fsecret.txt",
    "/%2E%2E/secret.txt",
    "/linux-64/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/..%5Csecret.txt",
    "/linux-64%5C..%5C..%5Csecret.txt",
    "/%2Fetc%2Fpasswd",
    "//etc/passwd",
    `/${encodeURIComponent(`${channel.parent}/secret.txt`)}`,
    `/${channel.parent}/secret.txt`,
    "/../etc/passwd",
    "/linux-64%00/x",
    "/linux-64/repodata.json%00",
    "/linux-64/repodata.json%00.zst",
    "/linux-64/./repodata.json/..%2F..%2F..%2Fsecret.txt",
  ];
  for (const path of attempts) {
    for (const method of ["GET", "HEAD"]) {
      await assertNotFound(await respond(channel, path, { method }), `${method} ${path}`);
    }
  }
});

test("serveChannel() refuses a symlink that leads out of the channel", async () => {
  await using channel = await makeChannel();
  await Deno.symlink(`${channel.parent}/secret.txt`, `${channel.root}/linux-64/escape.json`);
  await Deno.symlink("../../secret.txt", `${channel.root}/linux-64/relative-escape.json`);
  await Deno.symlink("/etc/passwd", `${channel.root}/linux-64/passwd.json`);
  await Deno.symlink(`${channel.parent}/outside`, `${channel.root}/noarch/linked`);
  await Deno.symlink(`${channel.parent}/outside`, `${channel.root}/win-64`);
  // A symlink that stays inside the channel is an ordinary file.
  await Deno.symlink("repodata.json", `${channel.root}/linux-64/current.json`);
  for (
    const path of [
      "/linux-64/escape.json",
      "/linux-64/relative-escape.json",
      "/linux-64/passwd.json",
      "/noarch/linked/secret.txt",
      "/win-64/secret.txt",
      "/win-64/",
    ]
  ) {
    for (const method of ["GET", "HEAD"]) {
      await assertNotFound(await respond(channel, path, { method }), `${method} ${path}`);
    }
  }
  const inside = await serveChannel(request("/linux-64/current.json"), channel.storage);
  assert.equal(inside.status, STATUS.OK);
  assert.deepEqual(await bytesOf(inside), fileOf(channel, "linux-64/repodata.json"));
});

test("serveChannel() refuses a symlink inside the channel that resolves to a dotfile", async () => {
  // Where a path resolves is checked, not only what was asked: these names
  // are plain, but they lead to the spool, the lock and hidden files.
  await using channel = await makeChannel();
  const links: Array<[target: string, link: string]> = [
    ["../.upload-spool/x.part", "linux-64/spool-0.1-0.conda"],
    ["../.artifact-upload-handler.lock", "linux-64/lock.json"],
    [".hidden", "linux-64/hidden.json"],
    [".repodata.json.123.tmp", "linux-64/temporary.json"],
    ["../.upload-spool", "noarch/spool"],
    [".upload-spool", "spool"],
  ];
  for (const [target, link] of links) await Deno.symlink(target, `${channel.root}/${link}`);
  for (
    const path of [
      "/linux-64/spool-0.1-0.conda",
      "/linux-64/lock.json",
      "/linux-64/hidden.json",
      "/linux-64/temporary.json",
      "/noarch/spool/x.part",
      "/spool/x.part",
      "/spool/",
    ]
  ) {
    for (const method of ["GET", "HEAD"]) {
      await assertNotFound(await respond(channel, path, { method }), `${method} ${path}`);
    }
  }
  // Served once as a plain file, then turned into such a link: refused too.
  const plain = await serveChannel(request("/linux-64/notes.bin"), channel.storage);
  assert.deepEqual(await bytesOf(plain), fileOf(channel, "linux-64/notes.bin"));
  const repodataPath = `${channel.root}/linux-64/repodata.json`;
  assert.equal(
    (await serveChannel(request("/linux-64/repodata.json"), channel.storage)).status,
    200,
  );
  const spooled = fileOf(channel, ".upload-spool/x.part");
  for (const path of ["linux-64/notes.bin", "linux-64/repodata.json"]) {
    const before = fileOf(channel, path);
    await Deno.remove(`${channel.root}/${path}`);
    await Deno.symlink("../.upload-spool/x.part", `${channel.root}/${path}`);
    // Within the refresh window the old bytes may still be served, never the link's target.
    const meanwhile = await respond(channel, `/${path}`);
    if (meanwhile.status === STATUS.OK) {
      const bytes = await bytesOf(meanwhile);
      assert.deepEqual(bytes, before, `${path}: the old bytes or nothing`);
      assert.notDeepEqual(bytes, spooled);
    } else {
      await assertNotFound(meanwhile, path);
    }
    await pastRefresh();
    await assertNotFound(await respond(channel, `/${path}`), path);
  }
  assert.equal(await channel.storage.readFile("linux-64/repodata.json"), undefined);
  assert.ok((await Deno.lstat(repodataPath)).isSymlink);
});

test("serveChannel() does not call packages immutable when they may be replaced", async () => {
  await using channel = await makeChannel();
  for (const path of [PACKAGE, "linux-64/bar-2.0-1.tar.bz2"]) {
    for (const method of ["GET", "HEAD"]) {
      const mutable = await serveChannel(request(`/${path}`, { method }), channel.storage, {
        mutablePackages: true,
        indexMaxAgeSeconds: 60,
      });
      assert.equal(mutable.headers.get("cache-control"), "public, max-age=60", path);
      await mutable.body?.cancel();
      const fixed = await serveChannel(request(`/${path}`, { method }), channel.storage);
      assert.equal(fixed.headers.get("cache-control"), "public, max-age=31536000, immutable");
      await fixed.body?.cancel();
    }
  }
});

test("serveChannel() answers from memory only while the file is unchanged", async () => {
  await using channel = await makeChannel();
  const path = "linux-64/repodata.json";
  const gzipped = { headers: { "accept-encoding": "gzip" } };
  const first = await serveChannel(request(`/${path}`), channel.storage);
  assert.deepEqual(await bytesOf(first), fileOf(channel, path));

  // Replaced through the storage, as the index does: seen at once.
  const second = repodata("linux-64", 301);
  await channel.storage.writeFileAtomic(path, second);
  const afterWrite = await serveChannel(request(`/${path}`), channel.storage);
  assert.deepEqual(await bytesOf(afterWrite), second);
  assert.ok(afterWrite.headers.get("etag")!.startsWith(`"${second.length.toString(16)}-`));
  assert.deepEqual(
    await gunzip(await serveChannel(request(`/${path}`, gzipped), channel.storage)),
    second,
  );

  // Replaced by another process (rename over it): seen within the refresh window.
  const third = repodata("linux-64", 302);
  await Deno.writeFile(`${channel.root}/linux-64/.other.tmp`, third);
  await Deno.rename(`${channel.root}/linux-64/.other.tmp`, `${channel.root}/${path}`);
  await pastRefresh();
  assert.deepEqual(await bytesOf(await serveChannel(request(`/${path}`), channel.storage)), third);
  assert.deepEqual(
    await gunzip(await serveChannel(request(`/${path}`, gzipped), channel.storage)),
    third,
  );

  // Rewritten in place (same inode) with the same size: the mtime tells.
  await new Promise((resolve) => setTimeout(resolve, 20));
  const fourth = third.slice();
  fourth[new TextDecoder().decode(third).indexOf('"sha256":"') + 10] = "1".charCodeAt(0);
  const before = await Deno.stat(`${channel.root}/${path}`);
  await Deno.writeFile(`${channel.root}/${path}`, fourth);
  assert.equal((await Deno.stat(`${channel.root}/${path}`)).ino, before.ino);
  await pastRefresh();
  const rewritten = await serveChannel(request(`/${path}`), channel.storage);
  assert.deepEqual(await bytesOf(rewritten), fourth);

  // Removed: 404, not the bytes held.
  await Deno.remove(`${channel.root}/${path}`);
  await pastRefresh();
  await assertNotFound(await respond(channel, `/${path}`), path);
});

test("serveChannel() never serves spool, lock, dotfiles or temporary files", async () => {
  await using channel = await makeChannel();
  const hidden = [
    ".upload-spool/x.part",
    ".artifact-upload-handler.lock",
    "linux-64/.hidden",
    "linux-64/.repodata.json.123.tmp",
  ];
  for (const path of hidden) {
    assert.ok((await Deno.stat(`${channel.root}/${path}`)).isFile, `${path} exists`);
  }
  const paths = [
    ...hidden.map((path) => `/${path}`),
    "/.upload-spool/",
    "/.upload-spool",
    "/%2Eupload-spool/x.part",
    "/%2eartifact-upload-handler.lock",
    "/linux-64/%2Ehidden",
    "/linux-64/%2erepodata.json.123.tmp",
    "/linux-64/./.hidden",
  ];
  for (const path of paths) {
    for (const method of ["GET", "HEAD"]) {
      await assertNotFound(await respond(channel, path, { method }), `${method} ${path}`);
    }
  }
});

test("serveChannel() answers 304 to a matching If-None-Match", async () => {
  await using channel = await makeChannel();
  const size = fileOf(channel, PACKAGE).length;
  const etag = identityTag(size);
  for (const ifNoneMatch of [etag, `"nope", ${etag}`, `W/${etag}`, "*", ` ${etag} `]) {
    for (const method of ["GET", "HEAD"]) {
      const response = await serveChannel(
        request(`/${PACKAGE}`, { method, headers: { "if-none-match": ifNoneMatch } }),
        channel.storage,
      );
      assert.equal(response.status, STATUS.NotModified, `${method} ${ifNoneMatch}`);
      assert.equal(response.body, null);
      assert.equal(response.headers.get("etag"), etag);
      assert.equal(response.headers.get("cache-control"), "public, max-age=31536000, immutable");
      assert.equal(response.headers.get("content-length"), null);
    }
  }
  for (const ifNoneMatch of ['"nope"', `"${size.toString(16)}-0"`, `${etag.slice(0, -1)}-gzip"`]) {
    const response = await serveChannel(
      request(`/${PACKAGE}`, { headers: { "if-none-match": ifNoneMatch } }),
      channel.storage,
    );
    assert.equal(response.status, STATUS.OK, ifNoneMatch);
    assert.equal((await bytesOf(response)).length, size);
  }
});

test("serveChannel() answers 304 to If-Modified-Since unless If-None-Match disagrees", async () => {
  await using channel = await makeChannel();
  const path = "/linux-64/repodata.json";
  const cases: Array<[headers: Record<string, string>, status: number]> = [
    [{ "if-modified-since": LAST_MODIFIED }, STATUS.NotModified],
    [{ "if-modified-since": "Wed, 03 Jan 2024 00:00:00 GMT" }, STATUS.NotModified],
    [{ "if-modified-since": "Tue, 02 Jan 2024 03:04:04 GMT" }, STATUS.OK],
    [{ "if-modified-since": "not a date" }, STATUS.OK],
    [{ "if-modified-since": LAST_MODIFIED, "if-none-match": '"other"' }, STATUS.OK],
  ];
  for (const [headers, status] of cases) {
    const response = await serveChannel(request(path, { headers }), channel.storage);
    assert.equal(response.status, status, JSON.stringify(headers));
    if (status === STATUS.NotModified) {
      assert.equal(response.body, null);
      assert.equal(
        response.headers.get("etag"),
        identityTag(fileOf(channel, path.slice(1)).length),
      );
      assert.equal(response.headers.get("cache-control"), "public, max-age=30");
    } else {
      assert.deepEqual(await bytesOf(response), fileOf(channel, path.slice(1)));
    }
  }
});

test("serveChannel() answers a single byte range with exactly those bytes", async () => {
  await using channel = await makeChannel();
  const bytes = fileOf(channel, PACKAGE);
  const size = bytes.length;
  const cases: Array<[range: string, start: number, end: number]> = [
    ["bytes=10-19", 10, 19],
    ["bytes=0-0", 0, 0],
    ["bytes=100000-400000", 100000, 400000],
    [`bytes=${size - 10}-`, size - 10, size - 1],
    ["bytes=-7", size - 7, size - 1],
    [`bytes=-${size + 100}`, 0, size - 1],
    [`bytes=${size - 5}-${size + 1000}`, size - 5, size - 1],
    ["bytes=0-", 0, size - 1],
    ["BYTES=5-9", 5, 9],
  ];
  for (const [range, start, end] of cases) {
    const response = await serveChannel(
      request(`/${PACKAGE}`, { headers: { range } }),
      channel.storage,
    );
    assert.equal(response.status, STATUS.PartialContent, range);
    assert.equal(response.headers.get("content-range"), `bytes ${start}-${end}/${size}`, range);
    assert.equal(response.headers.get("content-length"), String(end - start + 1), range);
    assert.equal(response.headers.get("etag"), identityTag(size));
    assert.deepEqual(await bytesOf(response), bytes.subarray(start, end + 1), range);
  }
});

test("serveChannel() answers 416 to an unsatisfiable range", async () => {
  await using channel = await makeChannel();
  const size = fileOf(channel, PACKAGE).length;
  for (const range of [`bytes=${size}-`, `bytes=${size + 1}-${size + 10}`, "bytes=-0"]) {
    const error = await rejectsWith(
      serveChannel(request(`/${PACKAGE}`, { headers: { range } }), channel.storage),
      STATUS.RangeNotSatisfiable,
    );
    assert.equal(error.headers["content-range"], `bytes */${size}`, range);
    const response = await respond(channel, `/${PACKAGE}`, { headers: { range } });
    assert.equal(response.status, STATUS.RangeNotSatisfiable);
    assert.equal(response.headers.get("content-range"), `bytes */${size}`);
    assert.match(await response.text(), /^Cannot [^\n]+\n$/);
  }
  const empty = await rejectsWith(
    serveChannel(
      request("/linux-64/empty.json", { headers: { range: "bytes=0-" } }),
      channel.storage,
    ),
    STATUS.RangeNotSatisfiable,
  );
  assert.equal(empty.headers["content-range"], "bytes */0");
});

test("serveChannel() sends the whole file for multiple or malformed ranges", async () => {
  await using channel = await makeChannel();
  const bytes = fileOf(channel, PACKAGE);
  for (const range of ["bytes=0-1,5-6", "bytes=5-2", "items=0-5", "bytes=abc", "bytes=-", ""]) {
    const response = await serveChannel(
      request(`/${PACKAGE}`, { headers: { range } }),
      channel.storage,
    );
    assert.equal(response.status, STATUS.OK, range);
    assert.equal(response.headers.get("content-range"), null);
    assert.equal(response.headers.get("content-length"), String(bytes.length));
    assert.deepEqual(await bytesOf(response), bytes, range);
  }
});

test("serveChannel() honours If-Range", async () => {
  await using channel = await makeChannel();
  const bytes = fileOf(channel, PACKAGE);
  const etag = identityTag(bytes.length);
  const cases: Array<[ifRange: string, status: number]> = [
    [etag, STATUS.PartialContent],
    [LAST_MODIFIED, STATUS.PartialContent],
    ['"stale"', STATUS.OK],
    [`W/${etag}`, STATUS.OK],
    ["Mon, 01 Jan 2024 00:00:00 GMT", STATUS.OK],
    ["garbage", STATUS.OK],
  ];
  for (const [ifRange, status] of cases) {
    const response = await serveChannel(
      request(`/${PACKAGE}`, { headers: { range: "bytes=10-19", "if-range": ifRange } }),
      channel.storage,
    );
    assert.equal(response.status, status, ifRange);
    const expected = status === STATUS.OK ? bytes : bytes.subarray(10, 20);
    assert.deepEqual(await bytesOf(response), expected, ifRange);
  }
});

test("serveChannel() gzips JSON and HTML for clients that accept it", async () => {
  await using channel = await makeChannel();
  for (const path of ["linux-64/repodata.json", "linux-64/index.html", "channeldata.json"]) {
    const expected = fileOf(channel, path);
    for (const acceptEncoding of ["gzip", "gzip, deflate, br, zstd", "br;q=1, GZIP;q=0.5", "*"]) {
      const response = await serveChannel(
        request(`/${path}`, { headers: { "accept-encoding": acceptEncoding } }),
        channel.storage,
      );
      assert.equal(response.status, STATUS.OK);
      assert.equal(response.headers.get("content-encoding"), "gzip", acceptEncoding);
      assert.equal(response.headers.get("vary"), "Accept-Encoding");
      assert.equal(
        response.headers.get("etag"),
        `${identityTag(expected.length).slice(0, -1)}-gzip"`,
      );
      const compressed = await bytesOf(response);
      // The compressed length is announced, so the body goes out in one piece.
      assert.equal(response.headers.get("content-length"), String(compressed.length));
      assert.deepEqual(
        await gunzip(new Response(new Uint8Array(compressed))),
        expected,
        `${path} ${acceptEncoding}`,
      );
    }
  }
  // The gzip variant revalidates against its own ETag only.
  const gzipTag = `${
    identityTag(fileOf(channel, "linux-64/repodata.json").length).slice(0, -1)
  }-gzip"`;
  const revalidated = await serveChannel(
    request("/linux-64/repodata.json", {
      headers: { "accept-encoding": "gzip", "if-none-match": gzipTag },
    }),
    channel.storage,
  );
  assert.equal(revalidated.status, STATUS.NotModified);
  assert.equal(revalidated.headers.get("etag"), gzipTag);
  assert.equal(revalidated.headers.get("vary"), "Accept-Encoding");
  const identity = await serveChannel(
    request("/linux-64/repodata.json", { headers: { "if-none-match": gzipTag } }),
    channel.storage,
  );
  assert.equal(identity.status, STATUS.OK);
  assert.equal(identity.headers.get("content-encoding"), null);
  await identity.body?.cancel();
});

test("serveChannel() never gzips packages, .zst files or ranges", async () => {
  await using channel = await makeChannel();
  const cases: Array<[path: string, headers: Record<string, string>, status: number]> = [
    [PACKAGE, { "accept-encoding": "gzip" }, STATUS.OK],
    ["linux-64/bar-2.0-1.tar.bz2", { "accept-encoding": "gzip" }, STATUS.OK],
    ["linux-64/repodata.json.zst", { "accept-encoding": "gzip" }, STATUS.OK],
    ["linux-64/repodata.json", { "accept-encoding": "gzip;q=0" }, STATUS.OK],
    ["linux-64/repodata.json", { "accept-encoding": "identity" }, STATUS.OK],
    ["linux-64/repodata.json", { "accept-encoding": "*, gzip;q=0" }, STATUS.OK],
    [
      "linux-64/repodata.json",
      { "accept-encoding": "gzip", range: "bytes=0-" },
      STATUS.PartialContent,
    ],
  ];
  for (const [path, headers, status] of cases) {
    const response = await serveChannel(request(`/${path}`, { headers }), channel.storage);
    const label = `${path} ${JSON.stringify(headers)}`;
    assert.equal(response.status, status, label);
    assert.equal(response.headers.get("content-encoding"), null, label);
    assert.equal(response.headers.get("content-length"), String(fileOf(channel, path).length));
    assert.deepEqual(await bytesOf(response), fileOf(channel, path), label);
  }
});

test("serveChannel() answers HEAD with the headers of GET and no body", async () => {
  await using channel = await makeChannel();
  const cases: Array<[path: string, headers: Record<string, string>]> = [
    ["/linux-64/repodata.json", {}],
    ["/linux-64/repodata.json", { "accept-encoding": "gzip" }],
    [`/${PACKAGE}`, {}],
    [`/${PACKAGE}`, { range: "bytes=10-19" }],
    ["/linux-64/", {}],
    ["/", {}],
  ];
  for (const [path, headers] of cases) {
    const get = await serveChannel(request(path, { headers }), channel.storage);
    const head = await serveChannel(request(path, { method: "HEAD", headers }), channel.storage);
    const getBody = await bytesOf(get);
    assert.ok(getBody.length > 0);
    assert.equal(head.status, get.status, path);
    assert.deepEqual([...head.headers], [...get.headers], `${path} ${JSON.stringify(headers)}`);
    assert.equal(head.body, null, path);
  }
});

test("serveChannel() closes the file when the body is cancelled", async () => {
  await using channel = await makeChannel();
  for (const headers of [{}, { range: "bytes=1-500000" }]) {
    const response = await serveChannel(request(`/${PACKAGE}`, { headers }), channel.storage);
    const reader = response.body!.getReader();
    const first = await reader.read();
    assert.ok(first.value && first.value.length > 0);
    await reader.cancel();
  }
  const gzipped = await serveChannel(
    request("/linux-64/repodata.json", { headers: { "accept-encoding": "gzip" } }),
    channel.storage,
  );
  await gzipped.body?.cancel();
  // The test's resource sanitizer fails this test if any file stayed open.
});

test("serveChannel() streams a large file into a reader's own reused buffer", async () => {
  await using channel = await makeChannel();
  const bytes = fileOf(channel, PACKAGE);
  for (
    const [headers, expected] of [[{}, bytes], [
      { range: "bytes=1000-" },
      bytes.subarray(1000),
    ]] as const
  ) {
    const response = await serveChannel(request(`/${PACKAGE}`, { headers }), channel.storage);
    const reader = response.body!.getReader({ mode: "byob" });
    let buffer = new ArrayBuffer(64 * 1024);
    const received = new Uint8Array(expected.length);
    let filled = 0;
    for (;;) {
      const { value, done } = await reader.read(new Uint8Array(buffer));
      if (done) break;
      assert.ok(value.byteLength <= 64 * 1024);
      received.set(value, filled);
      filled += value.byteLength;
      // The same memory goes back for the next read: no new buffer per chunk.
      buffer = value.buffer;
    }
    assert.equal(filled, expected.length);
    assert.deepEqual(received, expected);
  }
});

test("serveChannel() sends exactly the announced bytes while the file grows", async () => {
  await using channel = await makeChannel();
  const bytes = fileOf(channel, PACKAGE);
  for (const headers of [{}, { range: "bytes=100-199" }]) {
    const response = await serveChannel(request(`/${PACKAGE}`, { headers }), channel.storage);
    const announced = Number(response.headers.get("content-length"));
    using appender = await Deno.open(`${channel.root}/${PACKAGE}`, { append: true });
    await appender.write(randomBytes(100_000));
    const body = await bytesOf(response);
    assert.equal(body.length, announced);
    const expected = "range" in headers ? bytes.subarray(100, 200) : bytes;
    assert.deepEqual(body, expected);
  }
});

test("serveChannel() renders the channel overview at /", async () => {
  await using channel = await makeChannel();
  const response = await serveChannel(request("/"), channel.storage);
  assert.equal(response.status, STATUS.OK);
  assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
  assert.equal(response.headers.get("cache-control"), "public, max-age=30");
  const html = await response.text();
  assert.equal(response.headers.get("content-length"), String(encoder.encode(html).length));
  assert.match(html, /<h1>channel<\/h1>/);
  assert.match(html, /<a href="linux-64\/">linux-64<\/a>/);
  assert.match(html, /<a href="linux-64\/repodata.json">repodata.json<\/a>/);
  assert.match(html, /<a href="noarch\/repodata.json">repodata.json<\/a>/);
  assert.doesNotMatch(html, /href="noarch\/"/, "noarch has no index.html");
  assert.ok(html.includes(`conda install -c ${ORIGIN} &lt;package&gt;`));
  assert.ok(html.includes(`mamba install -c ${ORIGIN} &lt;package&gt;`));
  assert.ok(html.includes(`pixi workspace channel add ${ORIGIN}`));
  assert.ok(html.includes(`pixi global install --channel ${ORIGIN} &lt;package&gt;`));
  assert.doesNotMatch(html, /upload-spool|stuff|artifact-upload-handler\.lock/);
});

test("serveChannel() escapes everything it puts in the overview", async () => {
  await using channel = await makeChannel();
  const evil = `<img src=x onerror="alert(1)">&'`;
  const named = await serveChannel(request("/"), channel.storage, { channelName: evil });
  const html = await named.text();
  assert.ok(!html.includes("<img"), "name is escaped");
  assert.ok(html.includes("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;&#39;"));

  const fromHost = await serveChannel(
    new Request(`http://a"b&c'd.example/`),
    channel.storage,
  );
  const hostHtml = await fromHost.text();
  assert.ok(hostHtml.includes("conda install -c http://a&quot;b&amp;c&#39;d.example &lt;"));
  assert.ok(!hostHtml.includes(`a"b`));

  const configured = await serveChannel(request("/"), channel.storage, {
    channelUrl: "https://conda.example.org/<x>",
  });
  const configuredHtml = await configured.text();
  assert.ok(configuredHtml.includes("conda install -c https://conda.example.org/&lt;x&gt; &lt;"));
  assert.ok(!configuredHtml.includes(ORIGIN));
});

test("serveChannel() serves a subdir's index.html for /<subdir>/ and redirects /<subdir> there", async () => {
  await using channel = await makeChannel();
  const expected = fileOf(channel, "linux-64/index.html");
  const redirect = await serveChannel(request("/linux-64"), channel.storage);
  assert.equal(redirect.status, STATUS.MovedPermanently);
  assert.equal(redirect.headers.get("location"), "/linux-64/");
  for (const path of ["/linux-64/"]) {
    const response = await serveChannel(request(path), channel.storage);
    assert.equal(response.status, STATUS.OK, path);
    assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
    assert.equal(response.headers.get("etag"), identityTag(expected.length));
    assert.deepEqual(await bytesOf(response), expected, path);
  }
  for (const path of ["/noarch/", "/linux-64/repodata.json/", "/missing/", "/stuff/"]) {
    await assertNotFound(await respond(channel, path), path);
  }
});

async function withServer(
  channel: Channel,
  run: (base: string) => Promise<void>,
): Promise<void> {
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    async (incoming) => {
      try {
        return await serveChannel(incoming, channel.storage);
      } catch (error) {
        return errorResponse(error);
      }
    },
  );
  try {
    await run(`http://127.0.0.1:${server.addr.port}`);
  } finally {
    await server.shutdown();
  }
}

test("serveChannel() over HTTP answers every status", async () => {
  await using channel = await makeChannel();
  const bytes = fileOf(channel, PACKAGE);
  const json = fileOf(channel, "linux-64/repodata.json");
  await withServer(channel, async (base) => {
    const ok = await fetch(`${base}/${PACKAGE}`);
    assert.equal(ok.status, STATUS.OK);
    assert.equal(ok.headers.get("content-length"), String(bytes.length));
    assert.equal(ok.headers.get("etag"), identityTag(bytes.length));
    assert.deepEqual(await bytesOf(ok), bytes);

    const partial = await fetch(`${base}/${PACKAGE}`, {
      headers: { range: "bytes=300000-300099" },
    });
    assert.equal(partial.status, STATUS.PartialContent);
    assert.equal(partial.headers.get("content-range"), `bytes 300000-300099/${bytes.length}`);
    assert.deepEqual(await bytesOf(partial), bytes.subarray(300000, 300100));

    const notModified = await fetch(`${base}/${PACKAGE}`, {
      headers: { "if-none-match": identityTag(bytes.length) },
    });
    assert.equal(notModified.status, STATUS.NotModified);
    assert.equal((await bytesOf(notModified)).length, 0);
    assert.equal(notModified.headers.get("etag"), identityTag(bytes.length));

    const bad = await fetch(`${base}/linux-64/%ZZ`);
    assert.equal(bad.status, STATUS.BadRequest);
    assert.match(await bad.text(), /^Cannot [^\n]+\n$/);

    const notAllowed = await fetch(`${base}/${PACKAGE}`, { method: "POST", body: "x" });
    assert.equal(notAllowed.status, STATUS.MethodNotAllowed);
    assert.equal(notAllowed.headers.get("allow"), "GET, HEAD");
    await notAllowed.body?.cancel();

    const unsatisfiable = await fetch(`${base}/${PACKAGE}`, {
      headers: { range: "bytes=999999-" },
    });
    assert.equal(unsatisfiable.status, STATUS.RangeNotSatisfiable);
    assert.equal(unsatisfiable.headers.get("content-range"), `bytes */${bytes.length}`);
    await unsatisfiable.body?.cancel();

    // The requests rattler sends before falling back to repodata.json.
    for (const probe of ["repodata_shards.msgpack.zst", "repodata.json.zst", "repodata.json.bz2"]) {
      for (const method of ["HEAD", "GET"]) {
        const response = await fetch(`${base}/noarch/${probe}`, { method });
        assert.equal(response.status, STATUS.NotFound, `${method} ${probe}`);
        const body = await response.text();
        if (method === "GET") assert.match(body, /^Cannot [^\n]+\n$/);
        else assert.equal(body, "");
      }
    }

    // fetch sends Accept-Encoding: gzip and decompresses transparently.
    const gzipped = await fetch(`${base}/linux-64/repodata.json`);
    assert.equal(gzipped.headers.get("content-encoding"), "gzip");
    assert.deepEqual(await bytesOf(gzipped), json);

    const head = await fetch(`${base}/${PACKAGE}`, { method: "HEAD" });
    assert.equal(head.status, STATUS.OK);
    assert.equal(head.headers.get("content-length"), String(bytes.length));
    assert.equal((await bytesOf(head)).length, 0);
  });
});

test("serveChannel() over HTTP refuses traversal, spool, lock and dotfiles", async () => {
  await using channel = await makeChannel();
  await withServer(channel, async (base) => {
    for (
      const path of [
        "/..%2F..%2Fetc/passwd",
        "/..%2Fsecret.txt",
        "/linux-64/..%2F.upload-spool/x.part",
        "//etc/passwd",
        "/linux-64%00/x",
        "/.upload-spool/x.part",
        "/.artifact-upload-handler.lock",
        "/linux-64/.hidden",
        "/linux-64/.repodata.json.123.tmp",
      ]
    ) {
      const response = await fetch(base + path);
      assert.equal(response.status, STATUS.NotFound, path);
      assert.match(await response.text(), /^Cannot [^\n]+\n$/, path);
    }
    // fetch (like any WHATWG client) resolves "%2e%2e" itself: this is "/".
    const dotDot = await fetch(`${base}/%2e%2e/`);
    assert.equal(dotDot.status, STATUS.OK);
    assert.match(await dotDot.text(), /<h1>channel<\/h1>/);
  });
});

async function curl(args: string[]): Promise<Uint8Array> {
  const output = await new Deno.Command("curl", { args: ["-s", ...args], stdout: "piped" })
    .output();
  assert.equal(output.code, 0, `curl ${args.join(" ")}`);
  return output.stdout;
}

test("serveChannel() over HTTP works with curl ranges, compression and raw paths", async () => {
  await using channel = await makeChannel();
  const bytes = fileOf(channel, PACKAGE);
  const json = fileOf(channel, "linux-64/repodata.json");
  await withServer(channel, async (base) => {
    assert.deepEqual(await curl(["-r", "10-19", `${base}/${PACKAGE}`]), bytes.subarray(10, 20));

    const headerFile = `${channel.parent}/headers.txt`;
    const compressed = await curl([
      "--compressed",
      "-D",
      headerFile,
      `${base}/linux-64/repodata.json`,
    ]);
    assert.deepEqual(compressed, json);
    assert.match(await Deno.readTextFile(headerFile), /^content-encoding: gzip\r$/im);

    // Raw paths that a WHATWG client would normalise before sending.
    for (
      const path of [
        "/../secret.txt",
        "/linux-64/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/linux-64/../.upload-spool/x.part",
        "/./.artifact-upload-handler.lock",
      ]
    ) {
      const status = await curl([
        "--path-as-is",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        base + path,
      ]);
      assert.equal(new TextDecoder().decode(status), "404", path);
    }
  });
});

Deno.test("--no_serve: uploads still work, but channel files answer 404 for another web server to serve", async () => {
  await using server = await startTestServer({ flags: { noServe: true } });
  const bytes = await buildPackage({ name: "served-elsewhere", version: "1.0" });
  const form = uploadForm(server.token, "served-elsewhere-1.0-0.conda", bytes);
  const upload = await server.fetch("/", { method: "POST", body: form });
  assert.equal(upload.status, STATUS.Created, await upload.text());
  for (const path of ["/linux-64/repodata.json", "/linux-64/served-elsewhere-1.0-0.conda", "/"]) {
    const response = await server.fetch(path);
    assert.equal(response.status, STATUS.NotFound, path);
    await response.body?.cancel();
  }
  const onDisk = await Deno.readTextFile(`${server.channelRoot}/linux-64/repodata.json`);
  assert.ok(onDisk.includes("served-elsewhere-1.0-0.conda"));
  const health = await server.fetch("/health");
  assert.equal(health.status, STATUS.OK);
  await health.body?.cancel();
});

Deno.test("server: HEAD of a gzip answer carries its real length, and --allow_overwrite packages are not immutable", async () => {
  await using server = await startTestServer({ flags: { allowOverwrite: true } });
  const bytes = await buildPackage({ name: "replaceable", version: "1.0" });
  const form = uploadForm(server.token, "replaceable-1.0-0.conda", bytes);
  const upload = await server.fetch("/", { method: "POST", body: form });
  assert.equal(upload.status, STATUS.Created, await upload.text());

  const gzip = { "accept-encoding": "gzip" };
  const get = await server.fetch("/linux-64/repodata.json", { headers: gzip });
  assert.equal(get.headers.get("content-encoding"), "gzip");
  const length = Number(get.headers.get("content-length"));
  assert.ok(length > 0);
  // fetch decompresses; the announced length is the compressed one.
  assert.match(await get.text(), /replaceable-1\.0-0\.conda/);
  const head = await server.fetch("/linux-64/repodata.json", { method: "HEAD", headers: gzip });
  assert.equal(head.headers.get("content-encoding"), "gzip");
  assert.equal(Number(head.headers.get("content-length")), length);
  await head.body?.cancel();

  for (const method of ["GET", "HEAD"]) {
    const response = await server.fetch("/linux-64/replaceable-1.0-0.conda", { method });
    assert.equal(response.status, STATUS.OK);
    assert.equal(response.headers.get("cache-control"), "public, max-age=30", method);
    assert.equal(Number(response.headers.get("content-length")), bytes.length, method);
    if (method === "GET") assert.deepEqual(await bytesOf(response), bytes);
    else await response.body?.cancel();
  }
});
