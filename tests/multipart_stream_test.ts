import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { HttpError } from "../src/http/http_error.ts";
import { STATUS } from "../src/http/status.ts";
import {
  multipartBoundary,
  type MultipartOptions,
  parseMultipart,
} from "../src/upload/multipart_stream.ts";
import { seededRandom } from "./helpers/hostile_corpus.ts";
import { rejectionOf } from "./helpers/rejection.ts";
import { streamOf } from "./helpers/upload_clients.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const TRUNCATED = "Cannot parse multipart body: it ended before the closing boundary";

interface ParsedPart {
  name: string;
  filename: string | undefined;
  contentType: string | undefined;
  headers: [string, string][];
  body: Uint8Array;
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const reader = stream.getReader();
  while (true) {
    const result = await reader.read();
    if (result.done) break;
    chunks.push(result.value);
  }
  return concat(...chunks);
}

async function parseAll(
  body: ReadableStream<Uint8Array>,
  boundary: string,
  options?: MultipartOptions,
): Promise<ParsedPart[]> {
  const parts: ParsedPart[] = [];
  for await (const part of parseMultipart(body, boundary, options)) {
    parts.push({
      name: part.name,
      filename: part.filename,
      contentType: part.contentType,
      headers: [...part.headers],
      body: await readAll(part.body),
    });
  }
  return parts;
}

function concat(...pieces: (string | Uint8Array)[]): Uint8Array {
  const arrays = pieces.map((piece) => typeof piece === "string" ? encoder.encode(piece) : piece);
  const out = new Uint8Array(arrays.reduce((total, array) => total + array.length, 0));
  let offset = 0;
  for (const array of arrays) {
    out.set(array, offset);
    offset += array.length;
  }
  return out;
}

interface PartSpec {
  headers: string;
  body: Uint8Array;
}

/** Builds a multipart body by hand, as RFC 2046 spells it. */
function buildBody(
  boundary: string,
  parts: PartSpec[],
  options: { preamble?: string; epilogue?: string; padding?: string } = {},
): Uint8Array {
  const pieces: (string | Uint8Array)[] = [];
  if (options.preamble !== undefined) pieces.push(options.preamble, "\r\n");
  for (const part of parts) {
    pieces.push(
      `--${boundary}${options.padding ?? ""}\r\n${part.headers}\r\n\r\n`,
      part.body,
      "\r\n",
    );
  }
  pieces.push(`--${boundary}--${options.padding ?? ""}`);
  if (options.epilogue !== undefined) pieces.push("\r\n", options.epilogue);
  return concat(...pieces);
}

async function assertHttpError(
  promise: Promise<unknown>,
  status: number,
  message?: string | RegExp,
): Promise<HttpError> {
  const caught = await rejectionOf(promise);
  assert.ok(caught instanceof HttpError, `expected an HttpError, got ${String(caught)}`);
  assert.equal(caught.status, status, caught.message);
  if (typeof message === "string") assert.equal(caught.message, message);
  else if (message !== undefined) assert.match(caught.message, message);
  return caught;
}

interface CapturedRequest {
  contentType: string | null;
  body: Uint8Array;
}

/**
 * Writes `file` as `filename` in a temporary directory, runs the real client
 * `client(url, path)` names (program first) to POST it to a local server, and
 * returns the one request the server received (its content type and raw body).
 */
async function captureUpload(
  filename: string,
  file: Uint8Array,
  client: (url: string, path: string) => string[],
): Promise<CapturedRequest> {
  const requests: CapturedRequest[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    requests.push({ contentType: req.headers.get("content-type"), body: await req.bytes() });
    return new Response("ok\n");
  });
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, filename);
    await Deno.writeFile(path, file);
    const [program, ...args] = client(`http://127.0.0.1:${server.addr.port}/upload`, path);
    const output = await new Deno.Command(program!, { args, stdout: "piped", stderr: "piped" })
      .output();
    assert.equal(output.code, 0, decoder.decode(output.stderr));
    assert.equal(requests.length, 1);
    return requests[0]!;
  } finally {
    await Deno.remove(dir, { recursive: true });
    await server.shutdown();
  }
}

/** Random bytes with `\r\n--<boundary>`-like sequences sprinkled in. */
function trickyPayload(boundary: string, size: number, seed: number): Uint8Array<ArrayBuffer> {
  const random = seededRandom(seed);
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = Math.floor(random() * 256);
  const near = encoder.encode(`\r\n--${boundary.slice(0, -1)}`);
  const last = boundary.charCodeAt(boundary.length - 1);
  for (let i = 0; i + near.length < size; i += 97) {
    out.set(near, i);
    // Never the boundary's last byte: the payload must not hold a real delimiter.
    if (out[i + near.length] === last) out[i + near.length] = last ^ 1;
  }
  return out;
}

Deno.test("multipartBoundary() reads the boundary of multipart/form-data", () => {
  assert.equal(multipartBoundary("multipart/form-data; boundary=abc123"), "abc123");
  assert.equal(multipartBoundary('Multipart/Form-Data; BOUNDARY="a b:c"'), "a b:c");
  assert.equal(
    multipartBoundary("multipart/form-data; charset=utf-8; boundary=----x; other=1"),
    "----x",
  );
  assert.equal(multipartBoundary("multipart/form-data;boundary=" + "b".repeat(70)), "b".repeat(70));
});

Deno.test("multipartBoundary() answers 415 to a missing or non-multipart type", () => {
  for (const contentType of [null, "", "  "]) {
    assert.throws(
      () => multipartBoundary(contentType),
      (error) =>
        error instanceof HttpError && error.status === STATUS.UnsupportedMediaType &&
        error.message ===
          "Cannot parse request body: Content-Type is missing, expected multipart/form-data",
    );
  }
  for (const contentType of ["application/json", "multipart/mixed; boundary=x", "text/plain"]) {
    assert.throws(
      () => multipartBoundary(contentType),
      (error) =>
        error instanceof HttpError && error.status === STATUS.UnsupportedMediaType &&
        /^Cannot parse request body: Content-Type is ".+", expected multipart\/form-data$/
          .test(error.message),
    );
  }
});

Deno.test("multipartBoundary() answers 400 to a missing or malformed boundary", () => {
  const cases: [string, string][] = [
    ["multipart/form-data", "Content-Type has no boundary parameter"],
    ["multipart/form-data; charset=utf-8", "Content-Type has no boundary parameter"],
    ['multipart/form-data; boundary="abc', "Content-Type parameters are malformed"],
    ["multipart/form-data; boundary=", "the multipart boundary is not 1 to 70 valid characters"],
    [
      "multipart/form-data; boundary=" + "b".repeat(71),
      "the multipart boundary is not 1 to 70 valid characters",
    ],
    ['multipart/form-data; boundary="ends with space "', "the multipart boundary is not"],
    ["multipart/form-data; boundary=a\u00e9b", "the multipart boundary is not"],
    ['multipart/form-data; boundary="a;b"', "the multipart boundary is not"],
  ];
  for (const [contentType, message] of cases) {
    assert.throws(
      () => multipartBoundary(contentType),
      (error) =>
        error instanceof HttpError && error.status === STATUS.BadRequest &&
        error.message.startsWith("Cannot parse request body: " + message),
      contentType,
    );
  }
});

Deno.test("parseMultipart() reads a FormData body from new Request(), bytes and stream", async () => {
  const file = trickyPayload("----formdata-undici-0", 200_000, 1);
  const makeRequest = () => {
    const form = new FormData();
    form.append("token", "secret-token");
    form.append("channel", "conda-forge");
    form.append("artifact", new Blob([file], { type: "application/x-conda" }), "pkg-1.0-0.conda");
    return new Request("http://localhost/upload", { method: "POST", body: form });
  };
  const expect = (parts: ParsedPart[]) => {
    assert.deepEqual(parts.map((part) => [part.name, part.filename, part.contentType]), [
      ["token", undefined, undefined],
      ["channel", undefined, undefined],
      ["artifact", "pkg-1.0-0.conda", "application/x-conda"],
    ]);
    assert.equal(decoder.decode(parts[0]!.body), "secret-token");
    assert.equal(decoder.decode(parts[1]!.body), "conda-forge");
    assert.deepEqual(parts[2]!.body, file);
  };

  const fromBytes = makeRequest();
  const boundary = multipartBoundary(fromBytes.headers.get("content-type"));
  const bytes = new Uint8Array(await fromBytes.arrayBuffer());
  expect(await parseAll(streamOf(bytes, bytes.length), boundary));
  expect(await parseAll(streamOf(bytes, 4096), boundary));

  const fromStream = makeRequest();
  expect(
    await parseAll(fromStream.body!, multipartBoundary(fromStream.headers.get("content-type"))),
  );
});

Deno.test("parseMultipart() sees the token field and its value before reading the file", async () => {
  const form = new FormData();
  form.append("token", "abc");
  form.append("artifact", new Blob([new Uint8Array(3 * 1024 * 1024)]), "big.conda");
  const request = new Request("http://localhost/upload", { method: "POST", body: form });
  const bytes = new Uint8Array(await request.arrayBuffer());
  let delivered = 0;
  const counted = streamOf(bytes, () => {
    delivered += 1024;
    return 1024;
  });
  const boundary = multipartBoundary(request.headers.get("content-type"));
  const iterator = parseMultipart(counted, boundary);
  const first = await iterator.next();
  assert.equal(first.done, false);
  const token = first.value!;
  assert.equal(token.name, "token");
  assert.equal(await token.text(), "abc");
  // Only a few chunks were read: the file is still unread when the token is known.
  assert.ok(delivered < 16 * 1024, `read ${delivered} bytes before the token was known`);
  const second = await iterator.next();
  assert.equal(second.value!.filename, "big.conda");
  assert.equal((await readAll(second.value!.body)).length, 3 * 1024 * 1024);
  assert.equal((await iterator.next()).done, true);
});

Deno.test("parseMultipart() gives the same parts for every chunk size and random splits", async () => {
  const boundary = "XyZ'()+_,-./:=? q";
  const random = seededRandom(42);
  // Bytes drawn from the delimiter's own alphabet make partial delimiters frequent.
  const alphabet = encoder.encode(`\r\n-${boundary}`);
  const delimiter = `\r\n--${boundary}`;
  const dense = (size: number): Uint8Array => {
    while (true) {
      const out = new Uint8Array(size);
      for (let i = 0; i < size; i++) out[i] = alphabet[Math.floor(random() * alphabet.length)]!;
      if (
        !decoder.decode(out).includes(delimiter) &&
        !decoder.decode(out).startsWith(delimiter.slice(2))
      ) {
        return out;
      }
    }
  };
  const specs: PartSpec[] = [
    { headers: 'Content-Disposition: form-data; name="token"', body: encoder.encode("abc") },
    {
      headers: 'Content-Disposition: form-data; name="near"; filename="near.bin"',
      body: concat(
        `\r\n--${boundary.slice(0, -1)}`,
        `\r\r\n--${boundary.slice(0, -1)}!`,
        `--${boundary}`,
        `\r\n-\r\n--\r\n--${boundary.slice(0, 3)}`,
        "\r\n--",
      ),
    },
    {
      headers: 'Content-Disposition: form-data; name="empty"; filename="empty.bin"',
      body: new Uint8Array(0),
    },
    { headers: 'Content-Disposition: form-data; name="crlf"', body: encoder.encode("\r\n") },
    { headers: 'Content-Disposition: form-data; name="cr"', body: encoder.encode("x\r") },
    {
      headers: 'Content-Disposition: form-data; name="dense"; filename="dense.bin"\r\n' +
        "Content-Type: application/octet-stream",
      body: dense(3000),
    },
    { headers: 'Content-Disposition: form-data; name="last"', body: encoder.encode("--") },
  ];
  const body = buildBody(boundary, specs, {
    preamble: "This is the preamble.\r\n-- not a boundary",
    epilogue: "This is the epilogue, ignored.",
    padding: " \t ",
  });
  const expected = specs.map((spec) => spec.body);
  const check = (parts: ParsedPart[], label: string) => {
    assert.deepEqual(
      parts.map((part) => part.name),
      ["token", "near", "empty", "crlf", "cr", "dense", "last"],
      label,
    );
    assert.deepEqual(parts.map((part) => part.body), expected, label);
    assert.equal(parts[5]!.contentType, "application/octet-stream", label);
  };
  for (let size = 1; size <= 64; size++) {
    check(await parseAll(streamOf(body, size), boundary), `chunk size ${size}`);
  }
  for (let run = 0; run < 40; run++) {
    const max = [3, 20, 90, 400, 5000][run % 5]!;
    check(
      await parseAll(streamOf(body, () => 1 + Math.floor(random() * max)), boundary),
      `random run ${run}`,
    );
  }
});

Deno.test("parseMultipart() emits file chunks as views of the source chunks, not copies", async () => {
  const boundary = "b0undary";
  const file = trickyPayload(boundary, 1_000_000, 7);
  const body = buildBody(boundary, [
    { headers: 'Content-Disposition: form-data; name="artifact"; filename="a.conda"', body: file },
  ]);
  const sourceBuffers = new Set<ArrayBufferLike>();
  const source = streamOf(body, 65536).pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        sourceBuffers.add(chunk.buffer);
        controller.enqueue(chunk);
      },
    }),
  );
  let total = 0;
  let views = 0;
  let chunks = 0;
  for await (const part of parseMultipart(source, boundary)) {
    for await (const chunk of part.body) {
      total += chunk.length;
      chunks++;
      if (sourceBuffers.has(chunk.buffer)) views++;
    }
  }
  assert.equal(total, file.length);
  // Only the first chunk (behind the virtual CRLF) and rare carried-over tails are copies.
  assert.ok(views >= chunks - 3, `${views} of ${chunks} chunks were views`);
});

Deno.test("parseMultipart() parses a body sent by curl -F", async () => {
  const file = trickyPayload("------------------------", 300_000, 3);
  const request = await captureUpload("pkg-1.0-0.conda", file, (url, path) => [
    "curl",
    "-sS",
    "--fail",
    "--max-time",
    "20",
    "-F",
    "token=abc",
    "-F",
    `artifact=@${path}`,
    url,
  ]);
  const boundary = multipartBoundary(request.contentType);
  for (const size of [request.body.length, 1000, 7]) {
    const parts = await parseAll(streamOf(request.body, size), boundary);
    assert.deepEqual(parts.map((part) => [part.name, part.filename, part.contentType]), [
      ["token", undefined, undefined],
      ["artifact", "pkg-1.0-0.conda", "application/octet-stream"],
    ]);
    assert.equal(decoder.decode(parts[0]!.body), "abc");
    assert.deepEqual(parts[1]!.body, file);
  }
});

const pythonHasRequests = await new Deno.Command("python3", {
  args: ["-c", "import requests"],
  stdout: "null",
  stderr: "null",
}).output().then((output) => output.success, () => false);

Deno.test({
  name: "parseMultipart() parses a body sent by Python requests",
  ignore: !pythonHasRequests,
  async fn() {
    const file = trickyPayload("0123456789abcdef", 250_000, 5);
    const script = "import sys, requests\n" +
      "with open(sys.argv[2], 'rb') as f:\n" +
      "    r = requests.post(sys.argv[1], data={'token': 't0k3n'}, files={'artifact': f}, timeout=20)\n" +
      "r.raise_for_status()\n";
    const request = await captureUpload(
      "pkg-2.0-py_0.tar.bz2",
      file,
      (url, path) => ["python3", "-c", script, url, path],
    );
    const parts = await parseAll(
      streamOf(request.body, 8192),
      multipartBoundary(request.contentType),
    );
    assert.deepEqual(parts.map((part) => [part.name, part.filename]), [
      ["token", undefined],
      ["artifact", "pkg-2.0-py_0.tar.bz2"],
    ]);
    assert.equal(decoder.decode(parts[0]!.body), "t0k3n");
    assert.deepEqual(parts[1]!.body, file);
  },
});
if (!pythonHasRequests) {
  console.warn("Skipping the Python requests test: python3 cannot import requests");
}

Deno.test("parseMultipart() reads rattler-style lowercase part headers", async () => {
  const boundary = "4f3a2b1c0d9e8f7a-0123456789abcdef-fedcba9876543210-a1b2c3d4e5f60718";
  const file = trickyPayload(boundary, 5000, 9);
  const sha256 = createHash("sha256").update(file).digest("hex");
  const body = buildBody(boundary, [{
    headers: [
      'content-disposition: form-data; name="file"; filename="x.conda"',
      "content-type: application/octet-stream",
      `content-length: ${file.length}`,
      "x-file-name: x.conda",
      `x-file-sha256: ${sha256}`,
    ].join("\r\n"),
    body: file,
  }]);
  let seen = 0;
  for await (const part of parseMultipart(streamOf(body, 999), boundary)) {
    seen++;
    assert.equal(part.name, "file");
    assert.equal(part.filename, "x.conda");
    assert.equal(part.contentType, "application/octet-stream");
    assert.equal(part.headers.get("Content-Length"), String(file.length));
    assert.equal(part.headers.get("X-File-Name"), "x.conda");
    assert.equal(part.headers.get("x-file-sha256"), sha256);
    const bytes = await readAll(part.body);
    assert.equal(createHash("sha256").update(bytes).digest("hex"), sha256);
  }
  assert.equal(seen, 1);
});

Deno.test("parseMultipart() decodes filename*, UTF-8 and escaped filenames, raw", async () => {
  const boundary = "fn";
  const cases: [string, string | undefined][] = [
    [`form-data; name="a"; filename*=UTF-8''%E2%82%AC%20rates.conda`, "€ rates.conda"],
    [
      `form-data; name="a"; filename="fallback.conda"; filename*=utf-8'en'n%C3%A9.conda`,
      "né.conda",
    ],
    [`form-data; name="a"; filename*=iso-8859-1''caf%E9.conda`, "café.conda"],
    [`form-data; name="a"; filename="пакет-1.0-0.conda"`, "пакет-1.0-0.conda"],
    [`form-data; name="a"; filename="a\\"b.conda"`, 'a"b.conda'],
    [`form-data; name="a"; filename="C:\\Users\\me\\x.conda"`, "C:\\Users\\me\\x.conda"],
    [`form-data; name="a"; filename="../../etc/passwd"`, "../../etc/passwd"],
    [`form-data; name="a"; filename="a%22b.conda"`, "a%22b.conda"],
    [`FORM-DATA ; NAME=a ; FILENAME = plain.conda `, "plain.conda"],
    [`form-data; name="a"; filename=""`, ""],
    [`form-data; name=""`, undefined],
  ];
  for (const [disposition, filename] of cases) {
    const body = buildBody(boundary, [{
      headers: `Content-Disposition: ${disposition}`,
      body: encoder.encode("x"),
    }]);
    const [part] = await parseAll(streamOf(body), boundary);
    assert.equal(part?.filename, filename, disposition);
  }
  // A real FormData with a non-ASCII filename round-trips.
  const form = new FormData();
  form.append("artifact", new Blob(["x"]), "日本-1.0-0.conda");
  const request = new Request("http://localhost/", { method: "POST", body: form });
  const parts = await parseAll(
    request.body!,
    multipartBoundary(request.headers.get("content-type")),
  );
  assert.equal(parts[0]?.filename, "日本-1.0-0.conda");
});

Deno.test("parseMultipart() streams a 200 MB upload through Deno.serve with bounded memory", async () => {
  const boundary = "----streamed-upload-boundary-1234567890";
  const size = 200 * 1024 * 1024;
  const chunkSize = 64 * 1024;
  const pool = Array.from({ length: 8 }, (_, k) => trickyPayload(boundary, chunkSize, 100 + k));
  const head = encoder.encode(
    `--${boundary}\r\nContent-Disposition: form-data; name="token"\r\n\r\nabc\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="artifact"; filename="big.conda"\r\n\r\n`,
  );
  const tail = encoder.encode(`\r\n--${boundary}--\r\n`);
  const sentHash = createHash("sha256");
  let sent = 0;
  let k = 0;
  const upload = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (k === 0) controller.enqueue(head.slice());
      if (sent >= size) {
        controller.enqueue(tail.slice());
        controller.close();
        return;
      }
      const chunk = pool[k++ % pool.length]!.slice(0, Math.min(chunkSize, size - sent));
      sentHash.update(chunk);
      sent += chunk.length;
      controller.enqueue(chunk);
    },
  }, { highWaterMark: 0 });

  const rssBefore = Deno.memoryUsage().rss;
  let rssMax = rssBefore;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    const boundary = multipartBoundary(req.headers.get("content-type"));
    const result: Record<string, string | number> = {};
    for await (const part of parseMultipart(req.body!, boundary)) {
      if (part.filename === undefined) {
        result[part.name] = await part.text();
        continue;
      }
      const hash = createHash("sha256");
      let bytes = 0;
      for await (const chunk of part.body) {
        hash.update(chunk);
        bytes += chunk.length;
        if ((bytes & 0xffffff) < chunk.length) rssMax = Math.max(rssMax, Deno.memoryUsage().rss);
      }
      result.sha256 = hash.digest("hex");
      result.bytes = bytes;
    }
    return Response.json(result);
  });
  await using _ = { [Symbol.asyncDispose]: () => server.shutdown() };
  const response = await fetch(`http://127.0.0.1:${server.addr.port}/upload`, {
    method: "POST",
    body: upload,
    headers: { "content-type": `multipart/form-data; boundary=${boundary}` },
  });
  assert.equal(response.status, 200);
  const result = await response.json();
  assert.deepEqual(result, { token: "abc", sha256: sentHash.digest("hex"), bytes: size });
  // Client and server share this process and its default V8 young generation (the server
  // itself runs with a smaller one; tests/large_upload_test.ts checks its peak), so garbage
  // alone can account for ~100 MB here: the bound only proves the 200 MB body is not held.
  const growth = (rssMax - rssBefore) / 1024 / 1024;
  assert.ok(growth < 160, `RSS grew by ${growth.toFixed(0)} MB`);
});

Deno.test("parseMultipart() streams a body that never closes with bounded memory, then 400", async () => {
  const boundary = "never-closed";
  const size = 64 * 1024 * 1024;
  const filler = new Uint8Array(65536).fill(45); // "-" bytes: many partial matches
  for (let i = 0; i < filler.length; i += 128) filler.set(encoder.encode("\r\n--never-close"), i);
  let sent = 0;
  const source = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent === 0) {
        controller.enqueue(
          encoder.encode(`--${boundary}\r\nContent-Disposition: form-data; name="f"\r\n\r\n`),
        );
      }
      if (sent >= size) {
        controller.close();
        return;
      }
      controller.enqueue(filler.slice());
      sent += filler.length;
    },
  }, { highWaterMark: 0 });
  const rssBefore = Deno.memoryUsage().rss;
  let rssMax = rssBefore;
  let received = 0;
  const iterator = parseMultipart(source, boundary);
  const part = (await iterator.next()).value!;
  const reader = part.body.getReader();
  const error = await assertHttpError(
    (async () => {
      while (true) {
        const result = await reader.read();
        if (result.done) break;
        received += result.value.length;
        if ((received & 0x3fffff) < result.value.length) {
          rssMax = Math.max(rssMax, Deno.memoryUsage().rss);
        }
      }
    })(),
    STATUS.BadRequest,
    TRUNCATED,
  );
  // Everything but a delimiter-sized tail was handed out before the end was noticed.
  assert.ok(received > size - 64, `received ${received} of ${size}`);
  assert.ok((rssMax - rssBefore) / 1024 / 1024 < 100);
  // The same error surfaces from the iterator.
  assert.equal(await iterator.next().catch((e) => e), error);
});

Deno.test("parseMultipart() answers 400 to a body truncated at any byte", async () => {
  const boundary = "trunc";
  const body = buildBody(boundary, [
    { headers: 'Content-Disposition: form-data; name="token"', body: encoder.encode("abc") },
    {
      headers: 'Content-Disposition: form-data; name="f"; filename="f.bin"',
      body: encoder.encode("a\r\n--trun\r\n-"),
    },
  ]);
  const closingEnd = body.length; // buildBody ends with "--trunc--"
  for (let length = 0; length < closingEnd - 1; length++) {
    await assertHttpError(
      parseAll(streamOf(body.subarray(0, length), 5), boundary),
      STATUS.BadRequest,
      TRUNCATED,
    );
  }
  const parts = await parseAll(streamOf(body, 5), boundary);
  assert.equal(parts.length, 2);
});

Deno.test("parseMultipart() answers every malformed body with the right HttpError", async () => {
  const b = "bnd";
  const cd = 'Content-Disposition: form-data; name="f"';
  const cases: [string, Uint8Array, number, string | RegExp, MultipartOptions?][] = [
    ["empty body", new Uint8Array(0), STATUS.BadRequest, TRUNCATED],
    ["no boundary at all", encoder.encode("just some text"), STATUS.BadRequest, TRUNCATED],
    [
      "closing delimiter missing",
      encoder.encode(`--${b}\r\n${cd}\r\n\r\nabc\r\n`),
      STATUS.BadRequest,
      TRUNCATED,
    ],
    [
      "preamble too long",
      concat("x".repeat(100), `\r\n--${b}--`),
      STATUS.BadRequest,
      "Cannot parse multipart body: no boundary within the first 50 bytes",
      { maxPreambleBytes: 50 },
    ],
    [
      "unbounded preamble",
      new Uint8Array(100_000).fill(13),
      STATUS.BadRequest,
      "Cannot parse multipart body: no boundary within the first 16384 bytes",
    ],
    [
      "garbage after a boundary",
      encoder.encode(`--${b}x\r\n${cd}\r\n\r\nabc\r\n--${b}--`),
      STATUS.BadRequest,
      "Cannot parse multipart body: a boundary is followed by unexpected bytes",
    ],
    [
      "boundary line too long",
      encoder.encode(`--${b}${" ".repeat(200)}\r\n${cd}\r\n\r\nabc\r\n--${b}--`),
      STATUS.BadRequest,
      "Cannot parse multipart body: a boundary line is longer than 100 bytes",
      { maxHeaderBytes: 100 },
    ],
    [
      "header block too large",
      encoder.encode(`--${b}\r\n${cd}\r\nX-Big: ${"y".repeat(200)}\r\n\r\nabc\r\n--${b}--`),
      STATUS.BadRequest,
      "Cannot parse multipart body: a part's header block is larger than 100 bytes",
      { maxHeaderBytes: 100 },
    ],
    [
      "header block never ends",
      concat(`--${b}\r\n${cd}\r\nX-Big: `, new Uint8Array(100_000).fill(97)),
      STATUS.BadRequest,
      "Cannot parse multipart body: a part's header block is larger than 16384 bytes",
    ],
    [
      "no Content-Disposition",
      encoder.encode(`--${b}\r\nContent-Type: text/plain\r\n\r\nabc\r\n--${b}--`),
      STATUS.BadRequest,
      "Cannot parse multipart part: it has no Content-Disposition header",
    ],
    [
      "no headers",
      encoder.encode(`--${b}\r\n\r\nabc\r\n--${b}--`),
      STATUS.BadRequest,
      "Cannot parse multipart part: it has no Content-Disposition header",
    ],
    [
      "no name",
      encoder.encode(
        `--${b}\r\nContent-Disposition: form-data; filename="a"\r\n\r\nabc\r\n--${b}--`,
      ),
      STATUS.BadRequest,
      "Cannot parse multipart part: its Content-Disposition has no name",
    ],
    [
      "not form-data",
      encoder.encode(`--${b}\r\nContent-Disposition: attachment; name="a"\r\n\r\nabc\r\n--${b}--`),
      STATUS.BadRequest,
      'Cannot parse multipart part: Content-Disposition is "attachment", expected form-data',
    ],
    [
      "unterminated quote",
      encoder.encode(`--${b}\r\nContent-Disposition: form-data; name="a\r\n\r\nabc\r\n--${b}--`),
      STATUS.BadRequest,
      "Cannot parse multipart part: its Content-Disposition parameters are malformed",
    ],
    [
      "bad filename*",
      encoder.encode(`--${b}\r\n${cd}; filename*=UTF-8''%E2%82\r\n\r\nabc\r\n--${b}--`),
      STATUS.BadRequest,
      "Cannot parse multipart part: its filename* is not a valid RFC 8187 value",
    ],
    [
      "two Content-Dispositions",
      encoder.encode(`--${b}\r\n${cd}\r\n${cd}\r\n\r\nabc\r\n--${b}--`),
      STATUS.BadRequest,
      "Cannot parse multipart part: it has more than one Content-Disposition header",
    ],
    [
      "header line without colon",
      encoder.encode(`--${b}\r\n${cd}\r\nnot a header\r\n\r\nabc\r\n--${b}--`),
      STATUS.BadRequest,
      'Cannot parse multipart part headers: "not a header" is not a header line',
    ],
    [
      "invalid header name",
      encoder.encode(`--${b}\r\n${cd}\r\nBad Name: x\r\n\r\nabc\r\n--${b}--`),
      STATUS.BadRequest,
      'Cannot parse multipart part headers: "Bad Name" is not a valid header',
    ],
    [
      "too many parts",
      encoder.encode(
        `--${b}\r\n${cd}\r\n\r\n1\r\n--${b}\r\n${cd}\r\n\r\n2\r\n--${b}\r\n${cd}\r\n\r\n3\r\n--${b}--`,
      ),
      STATUS.BadRequest,
      "Cannot parse multipart body: it has more than 2 parts",
      { maxParts: 2 },
    ],
    [
      "LF-only line endings",
      encoder.encode(`--${b}\n${cd}\n\nabc\n--${b}--\n`),
      STATUS.BadRequest,
      "Cannot parse multipart body: a boundary is followed by unexpected bytes",
    ],
  ];
  for (const [label, body, status, message, options] of cases) {
    for (const size of [body.length || 1, 3]) {
      await assertHttpError(
        parseAll(streamOf(body, size), b, options),
        status,
        message,
      ).catch((error) => {
        throw new Error(`${label}, chunk size ${size}: ${error}`);
      });
    }
  }
  // A boundary that multipartBoundary() would refuse is refused here too.
  await assertHttpError(
    parseAll(streamOf(encoder.encode("--a b \r\n")), "a b "),
    STATUS.BadRequest,
  );
});

Deno.test("parseMultipart() answers 413 to an oversized field and can go on", async () => {
  const b = "field";
  const body = buildBody(b, [
    { headers: 'Content-Disposition: form-data; name="token"', body: new Uint8Array(200).fill(65) },
    { headers: 'Content-Disposition: form-data; name="next"', body: encoder.encode("ok") },
  ]);
  const names: string[] = [];
  for await (const part of parseMultipart(streamOf(body, 16), b, { maxFieldBytes: 100 })) {
    names.push(part.name);
    if (part.name === "token") {
      await assertHttpError(
        part.text(),
        STATUS.ContentTooLarge,
        'Cannot read form field "token": it is larger than 100 bytes',
      );
    } else {
      assert.equal(await part.text(), "ok");
    }
  }
  assert.deepEqual(names, ["token", "next"]);
  // The default limit is 64 KiB.
  const big = buildBody(b, [{
    headers: 'Content-Disposition: form-data; name="token"',
    body: new Uint8Array(65537).fill(65),
  }]);
  for await (const part of parseMultipart(streamOf(big, big.length), b)) {
    await assertHttpError(part.text(), STATUS.ContentTooLarge);
  }
});

Deno.test("parseMultipart() surfaces a truncated file from the body read and next()", async () => {
  const b = "cut";
  const body = encoder.encode(
    `--${b}\r\nContent-Disposition: form-data; name="f"; filename="f"\r\n\r\n0123456789`,
  );
  // The consumer reads the body: the read rejects.
  const iterator = parseMultipart(streamOf(body, 4), b);
  const part = (await iterator.next()).value!;
  const error = await assertHttpError(readAll(part.body), STATUS.BadRequest, TRUNCATED);
  assert.equal(await iterator.next().catch((e) => e), error);
  // The consumer skips the body: next() rejects.
  const skipping = parseMultipart(streamOf(body, 4), b);
  await skipping.next();
  await assertHttpError(skipping.next(), STATUS.BadRequest, TRUNCATED);
});

Deno.test("parseMultipart() turns a failing source into a 400 HttpError", async () => {
  const cause = new Error("connection reset");
  let pulls = 0;
  const source = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (pulls++ === 0) {
        controller.enqueue(
          encoder.encode(`--x\r\nContent-Disposition: form-data; name="f"\r\n\r\nab`),
        );
      } else {
        controller.error(cause);
      }
    },
  }, { highWaterMark: 0 });
  const error = await assertHttpError(
    parseAll(source, "x"),
    STATUS.BadRequest,
    "Cannot read multipart body: the request body stream failed",
  );
  assert.equal(error.cause, cause);
});

Deno.test("parseMultipart() skips unread or cancelled bodies and releases the source", async () => {
  const b = "skip";
  const body = buildBody(b, [
    { headers: 'Content-Disposition: form-data; name="a"', body: trickyPayload(b, 10_000, 11) },
    { headers: 'Content-Disposition: form-data; name="b"', body: trickyPayload(b, 10_000, 12) },
    { headers: 'Content-Disposition: form-data; name="c"', body: encoder.encode("last") },
  ], { epilogue: "x".repeat(100_000) });
  const tracked = () => {
    const state = { cancelled: false, pulled: 0 };
    const inner = streamOf(body, 1000).getReader();
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const result = await inner.read();
        if (result.done) controller.close();
        else {
          state.pulled += result.value.length;
          controller.enqueue(result.value);
        }
      },
      cancel() {
        state.cancelled = true;
      },
    }, { highWaterMark: 0 });
    return { state, stream };
  };

  // Unread (a) and cancelled (b) bodies are skipped; the epilogue is never read.
  const one = tracked();
  const seen: [string, string | null][] = [];
  for await (const part of parseMultipart(one.stream, b)) {
    if (part.name === "a") seen.push(["a", null]);
    else if (part.name === "b") {
      const reader = part.body.getReader();
      await reader.read();
      await reader.cancel();
      seen.push(["b", null]);
    } else seen.push([part.name, await part.text()]);
  }
  assert.deepEqual(seen, [["a", null], ["b", null], ["c", "last"]]);
  assert.equal(one.state.cancelled, true);
  assert.ok(one.state.pulled < body.length - 90_000, "the epilogue was read");

  // Leaving the loop early keeps the current body readable, then releases the source.
  const two = tracked();
  let kept: ReadableStream<Uint8Array> | undefined;
  for await (const part of parseMultipart(two.stream, b)) {
    kept = part.body;
    break;
  }
  assert.equal(two.state.cancelled, false);
  assert.deepEqual(await readAll(kept!), trickyPayload(b, 10_000, 11));
  assert.equal(two.state.cancelled, true);

  // A body still locked by an unfinished reader is a programming error, not an HttpError.
  const three = tracked();
  const iterator = parseMultipart(three.stream, b);
  const part = (await iterator.next()).value!;
  const reader = part.body.getReader();
  await reader.read();
  const error = await iterator.next().catch((e) => e);
  assert.ok(error instanceof Error && !(error instanceof HttpError), String(error));
});

Deno.test("parseMultipart() survives random corruption with only HttpErrors", async () => {
  const b = "fuzz-boundary";
  const valid = buildBody(b, [
    { headers: 'Content-Disposition: form-data; name="token"', body: encoder.encode("abc") },
    {
      headers: 'Content-Disposition: form-data; name="f"; filename="f.bin"\r\nContent-Type: x/y',
      body: trickyPayload(b, 300, 13),
    },
  ]);
  const random = seededRandom(99);
  const noise = encoder.encode(`\r\n-:;="${b}`);
  for (let run = 0; run < 300; run++) {
    const body = valid.slice();
    const flips = 1 + Math.floor(random() * 4);
    for (let i = 0; i < flips; i++) {
      body[Math.floor(random() * body.length)] = random() < 0.5
        ? noise[Math.floor(random() * noise.length)]!
        : Math.floor(random() * 256);
    }
    try {
      await parseAll(streamOf(body, () => 1 + Math.floor(random() * 40)), b);
    } catch (error) {
      assert.ok(error instanceof HttpError, `run ${run}: ${error}`);
      assert.ok(error.status >= 400 && error.status < 500);
      assert.doesNotMatch(error.message, /[\r\n]/);
    }
  }
});
