/**
 * Request shapes of the upload clients, byte for byte: rattler's prefix.dev
 * multipart body (as reqwest writes it), raw streamed bodies (chunked, as
 * reqwest's `Body::wrap_stream` sends them), curl runs with a capture of
 * what curl sent, and small readers of the served index.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { buildPackage, packageFilename, type PackageSpec } from "./conda_package.ts";
import { type TestServer, uploadForm } from "./test_server.ts";

const encoder = new TextEncoder();

/** Lowercase hex sha256 of `bytes`. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Options for {@linkcode rattlerPrefixForm}. */
export interface RattlerPrefixFormOptions {
  /** `x-file-sha256` part header. @default {sha256Hex(bytes)} */
  sha256?: string;
  /** `x-file-name` part header. @default {filename} */
  fileNameHeader?: string;
  /** `content-length` part header. @default {String(bytes.length)} */
  partLength?: string;
  /** Text of an `attestation` part after the file part; none when undefined. */
  attestation?: string;
}

/** A multipart body with its `Content-Type`. */
export interface MultipartBody {
  /** `multipart/form-data; boundary=...`. */
  contentType: string;
  /** The whole body. */
  body: Uint8Array;
}

function _hex16(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The multipart body `rattler_upload` (prefix.rs) sends: reqwest's writer
 * with its boundary format, `Content-Disposition` then the part's own
 * headers in lowercase, in the order rattler inserts them (content-type,
 * content-length, x-file-name, x-file-sha256), and an optional text part
 * `attestation` after the file.
 */
export function rattlerPrefixForm(
  filename: string,
  bytes: Uint8Array,
  options: RattlerPrefixFormOptions = {},
): MultipartBody {
  const boundary = `${_hex16()}-${_hex16()}-${_hex16()}-${_hex16()}`;
  const head = `--${boundary}\r\n` +
    `Content-Disposition: form-data; name="file"; filename="${filename}"\r\n` +
    `content-type: application/octet-stream\r\n` +
    `content-length: ${options.partLength ?? bytes.length}\r\n` +
    `x-file-name: ${options.fileNameHeader ?? filename}\r\n` +
    `x-file-sha256: ${options.sha256 ?? sha256Hex(bytes)}\r\n` +
    `\r\n`;
  let tail = "\r\n";
  if (options.attestation !== undefined) {
    tail += `--${boundary}\r\n` +
      `Content-Disposition: form-data; name="attestation"\r\n` +
      `\r\n` +
      `${options.attestation}\r\n`;
  }
  tail += `--${boundary}--\r\n`;
  const parts = [encoder.encode(head), bytes, encoder.encode(tail)];
  const body = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    body.set(part, at);
    at += part.length;
  }
  return { contentType: `multipart/form-data; boundary=${boundary}`, body };
}

/**
 * A stream of `bytes` in `chunkSize` pieces (or pieces whose sizes the
 * function gives, at least 1 byte each), each piece its own copy: fetch sends
 * it with no `Content-Length` (chunked over HTTP/1.1, DATA frames over HTTP/2).
 */
export function streamOf(
  bytes: Uint8Array,
  chunkSize: number | (() => number) = 4096,
): ReadableStream<Uint8Array> {
  const nextSize = typeof chunkSize === "number" ? () => chunkSize : chunkSize;
  let at = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) {
        controller.close();
        return;
      }
      const size = Math.max(1, nextSize());
      controller.enqueue(bytes.slice(at, at + size));
      at += size;
    },
  }, { highWaterMark: 0 });
}

/** What {@linkcode statusBeforeBody} sends. */
export interface StalledRequest {
  /** Request method. */
  method: string;
  /** Request headers (Host, Content-Length and Connection are added). */
  headers: Record<string, string>;
  /** The body bytes sent before the body stalls. */
  first: Uint8Array;
  /** Content-Length to declare (more than `first`). @default {first.length + 1_000_000} */
  declaredLength?: number;
  /** How long to wait for the answer. @default {5000} */
  timeoutMs?: number;
}

/**
 * Sends an HTTP/1.1 request over its own TLS connection whose body stops
 * after `first`, and returns the status of the answer; throws when none
 * comes within the timeout, that is when the server waits for the body. A
 * server that answers has decided without reading the body. The connection
 * is closed at the end, so a server stuck reading cannot hold up shutdown.
 */
export async function statusBeforeBody(
  server: TestServer,
  path: string,
  request: StalledRequest,
): Promise<number> {
  const url = new URL(path, server.url);
  const conn = await Deno.connectTls({
    hostname: url.hostname,
    port: Number(url.port),
    caCerts: [await Deno.readTextFile(server.caFile)],
    alpnProtocols: ["http/1.1"],
  });
  const timeoutMs = request.timeoutMs ?? 5000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const lines = [
      `${request.method} ${url.pathname}${url.search} HTTP/1.1`,
      `host: ${url.host}`,
      `content-length: ${request.declaredLength ?? request.first.length + 1_000_000}`,
      ...Object.entries(request.headers).map(([name, value]) => `${name}: ${value}`),
    ];
    await _writeAll(conn, encoder.encode(lines.join("\r\n") + "\r\n\r\n"));
    await _writeAll(conn, request.first);
    const buffer = new Uint8Array(1024);
    const read = conn.read(buffer);
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`No answer within ${timeoutMs} ms: the server waits for the body`)),
        timeoutMs,
      );
    });
    const n = await Promise.race([read, timeout]);
    const head = new TextDecoder().decode(buffer.subarray(0, n ?? 0));
    const match = /^HTTP\/1\.1 (\d{3})/.exec(head);
    if (!match) throw new Error(`Not an HTTP/1.1 answer: ${JSON.stringify(head.slice(0, 40))}`);
    return Number(match[1]);
  } finally {
    clearTimeout(timer);
    conn.close();
  }
}

async function _writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}

/** What a curl run did. */
export interface CurlResult {
  /** HTTP status (`%{http_code}`). */
  status: number;
  /** Response body. */
  body: string;
  /** curl's `-v` output: `> ` lines are what it sent. */
  trace: string;
}

/** Options for {@linkcode runCurl}. */
export interface RunCurlOptions {
  /** Bytes for curl's standard input (`-T -`, `--data-binary @-`). @default {none} */
  stdin?: Uint8Array;
}

/**
 * Runs curl against the test server, trusting its CA, with `-v` so the sent
 * request headers can be checked.
 */
export async function runCurl(
  server: TestServer,
  args: string[],
  options: RunCurlOptions = {},
): Promise<CurlResult> {
  const { stdin } = options;
  const dir = await Deno.makeTempDir({ prefix: "auh-curl-" });
  try {
    const bodyFile = `${dir}/body`;
    const child = new Deno.Command("curl", {
      args: [
        "-sS",
        "-v",
        "--cacert",
        server.caFile,
        "-o",
        bodyFile,
        "-w",
        "%{http_code}",
        "--max-time",
        "30",
        ...args,
      ],
      stdin: stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(stdin);
      await writer.close();
    }
    const output = await child.output();
    const body = await Deno.readTextFile(bodyFile).catch(() => "");
    return {
      status: Number(new TextDecoder().decode(output.stdout).trim()),
      body,
      trace: new TextDecoder().decode(output.stderr),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The request header lines curl sent (`> Name: value`), lowercased names. */
export function sentHeaders(trace: string): Map<string, string> {
  const headers = new Map<string, string>();
  for (const line of trace.split(/\r?\n/)) {
    const match = /^> ([A-Za-z0-9-]+): (.*)$/.exec(line);
    if (match) headers.set(match[1]!.toLowerCase(), match[2]!);
  }
  return headers;
}

/** A record of a served `repodata.json`. */
export interface ServedRecord {
  name: string;
  version: string;
  sha256: string;
  md5: string;
  size: number;
  subdir: string;
}

/** The record of `filename` in the served `<subdir>/repodata.json`, or undefined. */
export async function servedRecord(
  server: TestServer,
  path: string,
): Promise<ServedRecord | undefined> {
  const [subdir, filename] = path.split("/") as [string, string];
  const response = await server.fetch(`/${subdir}/repodata.json`);
  if (response.status !== 200) {
    await response.body?.cancel();
    return undefined;
  }
  const repodata = await response.json() as Record<string, Record<string, ServedRecord>>;
  const key = filename.endsWith(".conda") ? "packages.conda" : "packages";
  return repodata[key]?.[filename];
}

/** The `ETag` of a served channel file (HEAD), or null when it is not served. */
export async function servedEtag(server: TestServer, path: string): Promise<string | null> {
  const response = await server.fetch(`/${path}`, { method: "HEAD" });
  await response.body?.cancel();
  return response.status === 200 ? response.headers.get("etag") : null;
}

/**
 * Checks that a forced upload replaced `path` (`subdir/filename`): a 201 that
 * says so, the index record's sha256 is the new bytes', and the served ETag
 * changed from `etagBefore`.
 */
export async function assertReplaced(
  server: TestServer,
  forced: Response,
  path: string,
  bytes: Uint8Array,
  etagBefore: string | null,
): Promise<void> {
  assert.equal(forced.status, 201);
  assert.equal((await forced.json()).replaced, true);
  assert.equal((await servedRecord(server, path))?.sha256, sha256Hex(bytes));
  const etagAfter = await servedEtag(server, path);
  assert.notEqual(etagAfter, null);
  assert.notEqual(etagAfter, etagBefore);
}

/** The package files (not index files) under the channel root, as `subdir/filename`, sorted. */
export async function channelPackages(channelRoot: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(channelRoot)) {
    if (!entry.isDirectory || entry.name.startsWith(".")) continue;
    for await (const file of Deno.readDir(`${channelRoot}/${entry.name}`)) {
      if (file.name.endsWith(".conda") || file.name.endsWith(".tar.bz2")) {
        found.push(`${entry.name}/${file.name}`);
      }
    }
  }
  return found.sort();
}

/** Names in the channel's private spool directory (in-flight or leaked uploads). */
export async function spoolEntries(channelRoot: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(`${channelRoot}/.upload-spool`)) names.push(entry.name);
  return names;
}

/** Uploads each package of `specs` through the original form at `POST /`, asserting 201 for each. */
export async function uploadPackages(server: TestServer, specs: PackageSpec[]): Promise<void> {
  for (const spec of specs) {
    const filename = packageFilename(spec);
    const response = await server.fetch("/", {
      method: "POST",
      body: uploadForm(server.token, filename, await buildPackage(spec)),
    });
    const text = await response.text();
    assert.equal(response.status, 201, `${filename}: ${text}`);
  }
}
