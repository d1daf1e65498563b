/**
 * HTTP/1.1 framing as the real program (`deno run <shipped permissions>
 * main.ts`) speaks it over TLS, byte by byte: request smuggling attempts
 * are refused with 400 and the connection closed, pipelining and chunked
 * bodies work, `Expect: 100-continue` is answered, HEAD answers carry GET's
 * headers, and an early refusal closes the socket at once.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { buildPackage, packageFilename, type PackageSpec } from "./helpers/conda_package.ts";
import { openRaw, type RawConnection } from "./helpers/raw_http.ts";
import {
  serverArgs,
  type ServerProcess,
  startServerProcess,
  type TestTlsFiles,
  writeTestTls,
} from "./helpers/server_process.ts";
import { snapshotDirectory, uploadForm } from "./helpers/test_server.ts";

const TOKEN = "http-framing-token";

interface Setup extends AsyncDisposable {
  channel: string;
  tls: TestTlsFiles;
  server: ServerProcess;
  open(): Promise<RawConnection>;
}

async function setUp(): Promise<Setup> {
  const dir = await Deno.makeTempDir({ prefix: "auh-framing-" });
  const channel = join(dir, "channel");
  await Deno.mkdir(channel);
  const tls = await writeTestTls(dir);
  const server = await startServerProcess(await serverArgs(channel, tls, TOKEN));
  return {
    channel,
    tls,
    server,
    open: () => openRaw(server.url, { caFile: tls.caFile }),
    async [Symbol.asyncDispose]() {
      await server[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function indexedFilenames(channel: string, subdir: string): Promise<string[]> {
  const repodata = JSON.parse(await Deno.readTextFile(join(channel, subdir, "repodata.json")));
  return Object.keys({ ...repodata.packages, ...repodata["packages.conda"] });
}

const SMUGGLING: [string, string][] = [
  [
    "Content-Length and Transfer-Encoding together",
    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
  ],
  [
    "two differing Content-Lengths",
    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
  ],
  [
    "two equal Content-Lengths",
    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
  ],
  ["a Content-Length list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\nabcd"],
  ["a signed Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd"],
  [
    "chunked not last",
    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
  ],
  ["an unknown Transfer-Encoding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"],
  [
    "Transfer-Encoding with obs-fold",
    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
  ],
  [
    "a space before the colon",
    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
  ],
  ["a bare LF line end", "GET /health HTTP/1.1\nHost: x\r\n\r\n"],
  ["a bare CR in a value", "GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n"],
  ["a NUL in a value", "GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"],
  ["two Hosts", "GET /health HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"],
  // Bytes above 0x7f are read one by one: a decoder must not drop a BOM or merge UTF-8.
  [
    "a byte order mark before the request line",
    "\xef\xbb\xbfGET /health HTTP/1.1\r\nHost: x\r\n\r\n",
  ],
  [
    "a malformed chunk size",
    `PUT /linux-64/chunky-1.0-0.conda HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\n` +
    "Transfer-Encoding: chunked\r\n\r\n-1\r\n",
  ],
];

Deno.test("request smuggling attempts are refused with 400 and the connection is closed", async (t) => {
  await using setup = await setUp();
  const before = await snapshotDirectory(setup.channel);
  for (const [name, request] of SMUGGLING) {
    await t.step(name, async () => {
      using connection = await setup.open();
      await connection.send(request);
      const response = await connection.readResponse();
      assert.ok(
        response.status === 400 || response.status === 501 || response.status === 401,
        `status ${response.status}`,
      );
      if (response.status !== 401) assert.equal(response.headers.get("connection"), "close");
      assert.ok(await connection.closedWithin(3_000) !== null, "the connection stayed open");
    });
  }
  assert.deepEqual(await snapshotDirectory(setup.channel), before, "the channel changed");
});

Deno.test("an oversized head gets 431, a 10 KB request line 414, and HTTP/2's preface 505, each closing the connection", async () => {
  await using setup = await setUp();
  const cases: [string, number][] = [
    [
      "GET /health HTTP/1.1\r\nHost: x\r\n" +
      Array.from({ length: 80 }, (_, i) => `X-F${i}: ${"b".repeat(1000)}\r\n`).join("") + "\r\n",
      431,
    ],
    [`GET /${"a".repeat(10_000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 414],
    ["PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505],
    [
      "GET /health HTTP/1.1\r\nHost: x\r\n" +
      Array.from({ length: 120 }, (_, i) => `X-${i}: 1\r\n`).join("") + "\r\n",
      431,
    ],
  ];
  for (const [request, status] of cases) {
    using connection = await setup.open();
    await connection.send(request);
    assert.equal((await connection.readResponse()).status, status);
    assert.ok(await connection.closedWithin(3_000) !== null, "the connection stayed open");
  }
});

Deno.test("pipelined requests are answered in order on one connection; HTTP/1.0 is answered and closed", async () => {
  await using setup = await setUp();
  using connection = await setup.open();
  await connection.send(
    "GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n",
  );
  assert.equal((await connection.readResponse()).status, 200);
  assert.equal((await connection.readResponse()).status, 404);
  assert.equal((await connection.readResponse()).status, 200);
  using old = await setup.open();
  await old.send("GET /health HTTP/1.0\r\n\r\n");
  const response = await old.readResponse();
  assert.equal(response.status, 200);
  assert.ok(await old.closedWithin(3_000) !== null, "an HTTP/1.0 connection stayed open");
});

Deno.test("a chunked PUT and a PUT with Expect: 100-continue (answered before the body is sent) are published and indexed", async () => {
  await using setup = await setUp();
  const chunkedSpec: PackageSpec = { name: "sent-chunked", version: "1.0" };
  const chunkedBytes = await buildPackage(chunkedSpec);
  using connection = await setup.open();
  await connection.send(
    `PUT /linux-64/${packageFilename(chunkedSpec)} HTTP/1.1\r\nHost: x\r\n` +
      `Authorization: Bearer ${TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n`,
  );
  for (let offset = 0; offset < chunkedBytes.length; offset += 1000) {
    const piece = chunkedBytes.subarray(offset, offset + 1000);
    await connection.send(`${piece.length.toString(16)};ext=1\r\n`);
    await connection.send(piece);
    await connection.send("\r\n");
  }
  await connection.send("0\r\nX-Trailer: 1\r\n\r\n");
  assert.equal((await connection.readResponse()).status, 201);

  const expectSpec: PackageSpec = { name: "sent-after-continue", version: "1.0" };
  const expectBytes = await buildPackage(expectSpec);
  await connection.send(
    `PUT /linux-64/${packageFilename(expectSpec)} HTTP/1.1\r\nHost: x\r\n` +
      `Authorization: Bearer ${TOKEN}\r\nExpect: 100-continue\r\nContent-Length: ${expectBytes.length}\r\n\r\n`,
  );
  assert.equal((await connection.readResponse()).status, 100);
  await connection.send(expectBytes);
  assert.equal((await connection.readResponse()).status, 201);
  // The same connection goes on.
  await connection.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.equal((await connection.readResponse()).status, 200);
  assert.deepEqual((await indexedFilenames(setup.channel, "linux-64")).sort(), [
    packageFilename(expectSpec),
    packageFilename(chunkedSpec),
  ]);
});

Deno.test("HEAD answers carry GET's headers: Content-Length of the file, and none (not 0) for the gzip variant", async () => {
  await using setup = await setUp();
  using connection = await setup.open();
  const path = "/noarch/repodata.json";
  await connection.send(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
  const get = await connection.readResponse();
  assert.equal(get.status, 200);
  await connection.send(`HEAD ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
  const head = await connection.readResponse({ head: true });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get("content-length"), String(get.body.length));
  await connection.send(`HEAD ${path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n`);
  const gzipHead = await connection.readResponse({ head: true });
  assert.equal(gzipHead.status, 200);
  assert.equal(gzipHead.headers.get("content-encoding"), "gzip");
  assert.notEqual(gzipHead.headers.get("content-length"), "0");
  // The connection is still in step: nothing of a body followed the HEAD answers.
  await connection.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.equal((await connection.readResponse()).status, 200);
});

Deno.test("an early refusal of a 200 kB upload (wrong token first) closes the socket at once, and the channel is unchanged", async () => {
  await using setup = await setUp();
  const spec: PackageSpec = { name: "refused-early", version: "1.0" };
  const bytes = await buildPackage(spec);
  const padded = new Uint8Array(200_000);
  padded.set(bytes.subarray(0, Math.min(bytes.length, padded.length)));
  const form = new Request("https://x/", {
    method: "POST",
    body: uploadForm("wrong-token", packageFilename(spec), padded),
  });
  const contentType = form.headers.get("content-type")!;
  const body = await form.bytes();
  using connection = await setup.open();
  await connection.send(
    `POST / HTTP/1.1\r\nHost: x\r\nContent-Type: ${contentType}\r\nContent-Length: ${body.length}\r\n\r\n`,
  );
  // Only the first 16 kB are sent: the server decides on the token alone.
  await connection.send(body.subarray(0, 16_384));
  const response = await connection.readResponse();
  assert.equal(response.status, 401);
  assert.equal(response.headers.get("connection"), "close");
  const closedMs = await connection.closedWithin(3_000);
  assert.ok(closedMs !== null && closedMs < 3_000, "the socket stayed open after the refusal");
  await assert.rejects(Deno.stat(join(setup.channel, "linux-64", packageFilename(spec))));
});

Deno.test("a 3 MiB file goes out byte for byte through the server's reused send buffers: whole, to a client that waits before reading, and as a range across a buffer boundary", async () => {
  await using setup = await setUp();
  const size = 3 * 1024 * 1024 + 1_000;
  const bytes = new Uint8Array(size);
  for (let index = 0; index < size; index++) bytes[index] = (index * 2654435761) >>> 24;
  await Deno.writeFile(join(setup.channel, "noarch", "large.bin"), bytes);
  using connection = await setup.open();
  await connection.send("GET /noarch/large.bin HTTP/1.1\r\nHost: x\r\n\r\n");
  const whole = await connection.readResponse();
  assert.equal(whole.status, 200);
  assert.equal(whole.headers.get("content-length"), String(size));
  assert.ok(whole.body.length === size && whole.body.every((byte, i) => byte === bytes[i]));
  // The server fills its buffers and waits for the client; nothing is lost or reordered.
  await connection.send("GET /noarch/large.bin HTTP/1.1\r\nHost: x\r\n\r\n");
  await new Promise((resolve) => setTimeout(resolve, 500));
  const waited = await connection.readResponse();
  assert.equal(waited.status, 200);
  assert.ok(waited.body.length === size && waited.body.every((byte, i) => byte === bytes[i]));
  const [start, end] = [262_000, 1_100_000];
  await connection.send(
    `GET /noarch/large.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=${start}-${end}\r\n\r\n`,
  );
  const range = await connection.readResponse();
  assert.equal(range.status, 206);
  assert.equal(range.headers.get("content-range"), `bytes ${start}-${end}/${size}`);
  const expected = bytes.subarray(start, end + 1);
  assert.ok(range.body.length === expected.length && range.body.every((b, i) => b === expected[i]));
  // The connection is still in step after the large answers.
  await connection.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.equal((await connection.readResponse()).status, 200);
});

Deno.test("methods are case-sensitive: 'head', 'get' with a body, TRACE, TRACK and CONNECT get 405 before any handler, each logged; an HTTP/1.1 request without Host gets 400 (an empty Host is served)", async () => {
  await using setup = await setUp();
  const refused: [string, number][] = [
    ["head /noarch/repodata.json HTTP/1.1\r\nHost: x\r\n\r\n", 405],
    ["get /health HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd", 405],
    ["TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 405],
    ["TRACK / HTTP/1.1\r\nHost: x\r\n\r\n", 405],
    ["CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n", 405],
    ["GET /health HTTP/1.1\r\n\r\n", 400],
  ];
  for (const [head, status] of refused) {
    using connection = await setup.open();
    await connection.send(head);
    const response = await connection.readResponse();
    assert.equal(response.status, status, head);
    assert.notEqual(
      await connection.closedWithin(5_000),
      null,
      `${head}: the connection stays open`,
    );
  }
  await setup.server.waitForLine(
    /WARN request head refused status=405 reason="Cannot serve request: the method is not allowed/,
  );
  await setup.server.waitForLine(
    /WARN request head refused status=400 reason="Cannot read request: no Host" client=127\.0\.0\.1/,
  );
  using connection = await setup.open();
  await connection.send("GET /health HTTP/1.1\r\nHost:\r\n\r\n");
  assert.equal((await connection.readResponse()).status, 200);
});

Deno.test("HEAD /health and HEAD /metrics answer 200 like GET, without a body", async () => {
  await using setup = await setUp();
  using connection = await setup.open();
  for (const path of ["/health", "/metrics"]) {
    await connection.send(`HEAD ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const response = await connection.readResponse({ head: true });
    assert.equal(response.status, 200, path);
  }
  await connection.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.equal((await connection.readResponse()).status, 200, "the connection stays in step");
});

Deno.test("a chunk size of 14 hex digits is refused with 400", async () => {
  await using setup = await setUp();
  using connection = await setup.open();
  await connection.send(
    `PUT /linux-64/big-1.0-0.conda HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000a\r\n0123456789\r\n0\r\n\r\n`,
  );
  const response = await connection.readResponse();
  assert.equal(response.status, 400);
});
