/**
 * Serves the conda channel's files over HTTP to conda, mamba and
 * pixi/rattler: GET and HEAD with validators, conditional requests, single
 * byte ranges and gzip for JSON and HTML.
 *
 * Every read goes through {@linkcode ChannelStorage}, which refuses paths
 * outside the channel, dotfiles (spool, lock, temporary files) and symlinks
 * leading out of the channel; this module decodes the request path once and
 * answers anything it cannot serve with exactly 404.
 *
 * @module
 */

import { HttpError } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";
import type { ChannelEntry, ChannelStorage } from "../storage/channel_storage.ts";
import { renderChannelOverview } from "./channel_overview.ts";
import { type ByteRange, parseRange } from "./http_range.ts";

/** Options for {@linkcode serveChannel}. */
export interface ServeChannelOptions {
  /**
   * `max-age` in seconds of the `Cache-Control` of index files (everything
   * that is not a package: repodata, channeldata, `index.html`, ...).
   * @default {30}
   */
  indexMaxAgeSeconds?: number;
  /**
   * Channel name shown on the overview page.
   * @default {the basename of the channel root}
   */
  channelName?: string;
  /**
   * Public URL of the channel shown in the overview's command lines, for a
   * server behind a proxy.
   * @default {the origin of the request URL}
   */
  channelUrl?: string;
}

/** `Cache-Control` of packages: their content never changes under a name. */
const PACKAGE_CACHE_CONTROL = "public, max-age=31536000, immutable";
/** Bytes read from disk per chunk of a response body. */
const CHUNK_SIZE = 256 * 1024;
const ALLOW = "GET, HEAD";
const NOT_FOUND = "Cannot serve file: it does not exist in the channel";

/**
 * Content types by file suffix, longest suffix first. `.tar.bz2` packages
 * are bzip2 streams (`application/x-bzip2`), `.conda` packages are zip
 * archives of zstd tarballs served as `application/octet-stream`; clients
 * go by the file name, never by this header.
 */
const CONTENT_TYPES: ReadonlyArray<readonly [suffix: string, type: string]> = [
  [".tar.bz2", "application/x-bzip2"],
  [".conda", "application/octet-stream"],
  [".json", "application/json"],
  [".zst", "application/zstd"],
  [".bz2", "application/x-bzip2"],
  [".html", "text/html; charset=utf-8"],
  [".txt", "text/plain; charset=utf-8"],
];

/**
 * Answers a GET or HEAD request for a channel file.
 *
 * - `/` is an HTML overview of the channel; `/<subdir>` and `/<subdir>/`
 *   serve `<subdir>/index.html` when it exists.
 * - A file is answered 200 with `Content-Length`, `Content-Type`
 *   (`.json` application/json, `.zst` application/zstd, `.bz2` and
 *   `.tar.bz2` application/x-bzip2, `.html` text/html; charset=utf-8,
 *   `.txt` text/plain; `.conda` and anything else
 *   application/octet-stream), a strong
 *   `ETag` from size and mtime (`"<size hex>-<mtime ms hex>"`, no inode, so
 *   several servers on one storage agree), `Last-Modified`,
 *   `Accept-Ranges: bytes` and `Cache-Control`: one year and `immutable`
 *   for packages (`.conda`, `.tar.bz2`), `indexMaxAgeSeconds` otherwise.
 * - `If-None-Match` (weak comparison, lists, `*`) and, without it,
 *   `If-Modified-Since` answer 304.
 * - A single `Range` answers 206 with `Content-Range`, or 416 when it lies
 *   outside the file; several ranges get the whole file. `If-Range` (a
 *   strong ETag or the exact `Last-Modified` date) is honoured.
 * - `.json` and `.html` files are gzip-compressed on the fly for clients
 *   accepting gzip, unless a range is asked; that variant has the ETag
 *   `"<size hex>-<mtime ms hex>-gzip"` and no `Content-Length`.
 * - HEAD has the headers of GET and no body. The file is streamed, never
 *   read whole, and closed when the body ends, fails or is cancelled.
 *
 * @throws {HttpError} 400 for a path that is not valid percent-encoding,
 * 404 (one line, nothing else) for anything that is not a servable file,
 * 405 with `Allow` for other methods, 416 with `Content-Range` for an
 * unsatisfiable range. Turn it into a response with `errorResponse`.
 */
export async function serveChannel(
  request: Request,
  storage: ChannelStorage,
  options: ServeChannelOptions = {},
): Promise<Response> {
  if (request.method !== "GET" && request.method !== "HEAD") {
    throw new HttpError(
      STATUS.MethodNotAllowed,
      `Cannot ${request.method} a channel file: only GET and HEAD are allowed`,
      { headers: { allow: ALLOW } },
    );
  }
  const url = new URL(request.url);
  const path = decodePath(url.pathname);
  const indexCacheControl = `public, max-age=${options.indexMaxAgeSeconds ?? 30}`;

  if (path === "/") {
    const html = await renderChannelOverview(
      storage,
      options.channelUrl ?? url.origin,
      options.channelName === undefined ? {} : { channelName: options.channelName },
    );
    const body = new TextEncoder().encode(html);
    return new Response(request.method === "HEAD" ? null : body, {
      status: STATUS.OK,
      headers: {
        "content-type": "text/html; charset=utf-8",
        "content-length": String(body.length),
        "cache-control": indexCacheControl,
        "x-content-type-options": "nosniff",
      },
    });
  }

  const directoryRequest = path.endsWith("/");
  const relative = path.slice(1, directoryRequest ? -1 : undefined);
  if (!directoryRequest) {
    const response = await serveFile(request, storage, relative, indexCacheControl);
    if (response) return response;
  }
  if (await storage.isDirectory(relative)) {
    if (!directoryRequest) {
      // Relative links in index.html need the trailing slash.
      return new Response(null, {
        status: STATUS.MovedPermanently,
        headers: { location: `/${encodeURI(relative)}/` },
      });
    }
    const response = await serveFile(
      request,
      storage,
      `${relative}/index.html`,
      indexCacheControl,
    );
    if (response) return response;
  }
  throw new HttpError(STATUS.NotFound, NOT_FOUND);
}

/**
 * Decodes the URL path once. Malformed escapes are a 400; the result is
 * checked by storage (which refuses `..`, empty segments, dotfiles, `\` and
 * NUL), so a `%2F..` decoded here cannot climb out.
 */
function decodePath(pathname: string): string {
  try {
    return decodeURIComponent(pathname);
  } catch (error) {
    throw new HttpError(
      STATUS.BadRequest,
      "Cannot serve file: the path is not valid percent-encoding",
      { cause: error },
    );
  }
}

/** Serves one file, or returns undefined when it is not a servable file. */
async function serveFile(
  request: Request,
  storage: ChannelStorage,
  relative: string,
  indexCacheControl: string,
): Promise<Response | undefined> {
  const head = request.method === "HEAD";
  // GET opens first and describes the opened file, so that the validators
  // always match the bytes sent even if the name is replaced meanwhile.
  const opened = head ? undefined : await storage.open(relative);
  const entry = head ? await storage.stat(relative) : opened?.entry;
  if (!entry) return undefined;
  const file = opened?.file;
  try {
    const response = answer(request, entry, relative, indexCacheControl, file);
    if (response.body === null) file?.close();
    return response;
  } catch (error) {
    file?.close();
    throw error;
  }
}

function answer(
  request: Request,
  entry: ChannelEntry,
  relative: string,
  indexCacheControl: string,
  file: Deno.FsFile | undefined,
): Response {
  const compressible = isCompressible(relative);
  const rangeHeader = request.headers.get("range");
  const gzip = compressible && rangeHeader === null &&
    acceptsGzip(request.headers.get("accept-encoding"));
  const identityTag = entityTag(entry);
  const etag = gzip ? `${identityTag.slice(0, -1)}-gzip"` : identityTag;
  const lastModified = new Date(entry.mtimeMs).toUTCString();

  const headers = new Headers({
    "etag": etag,
    "last-modified": lastModified,
    "cache-control": isPackage(relative) ? PACKAGE_CACHE_CONTROL : indexCacheControl,
    "accept-ranges": "bytes",
    "content-type": contentType(relative),
    "x-content-type-options": "nosniff",
  });
  if (compressible) headers.set("vary", "Accept-Encoding");

  if (notModified(request.headers, etag, entry.mtimeMs)) {
    headers.delete("content-type");
    return new Response(null, { status: STATUS.NotModified, headers });
  }

  let range: ByteRange | undefined;
  if (rangeHeader !== null && ifRangeHolds(request.headers.get("if-range"), identityTag, entry)) {
    const parsed = parseRange(rangeHeader, entry.size);
    if (parsed === "unsatisfiable") {
      throw new HttpError(
        STATUS.RangeNotSatisfiable,
        "Cannot serve range: it lies outside the file",
        { headers: { "content-range": `bytes */${entry.size}`, "accept-ranges": "bytes" } },
      );
    }
    range = parsed;
  }

  const start = range?.start ?? 0;
  const length = range ? range.end - range.start + 1 : entry.size;
  let body: ReadableStream<Uint8Array<ArrayBuffer>> | null = file
    ? sliceStream(file, start, length)
    : null;
  if (gzip) {
    headers.set("content-encoding", "gzip");
    body = body?.pipeThrough(new CompressionStream("gzip")) ?? null;
  } else {
    headers.set("content-length", String(length));
  }
  if (range) headers.set("content-range", `bytes ${range.start}-${range.end}/${entry.size}`);
  return new Response(body, { status: range ? STATUS.PartialContent : STATUS.OK, headers });
}

function entityTag(entry: ChannelEntry): string {
  return `"${entry.size.toString(16)}-${Math.floor(entry.mtimeMs).toString(16)}"`;
}

/** RFC 9110 §13.1.2/§13.1.3: If-None-Match wins over If-Modified-Since. */
function notModified(headers: Headers, etag: string, mtimeMs: number): boolean {
  const ifNoneMatch = headers.get("if-none-match");
  if (ifNoneMatch !== null) {
    if (ifNoneMatch.trim() === "*") return true;
    const opaque = stripWeak(etag);
    return listedTags(ifNoneMatch).some((tag) => stripWeak(tag) === opaque);
  }
  const ifModifiedSince = headers.get("if-modified-since");
  if (ifModifiedSince === null) return false;
  const since = Date.parse(ifModifiedSince);
  if (Number.isNaN(since)) return false;
  return Math.floor(mtimeMs / 1000) <= Math.floor(since / 1000);
}

/** RFC 9110 §13.1.5: a strong ETag match or the exact Last-Modified date. */
function ifRangeHolds(ifRange: string | null, identityTag: string, entry: ChannelEntry): boolean {
  if (ifRange === null) return true;
  const value = ifRange.trim();
  if (value.startsWith('"') || value.startsWith("W/")) return value === identityTag;
  const date = Date.parse(value);
  return !Number.isNaN(date) && Math.floor(date / 1000) === Math.floor(entry.mtimeMs / 1000);
}

function listedTags(header: string): string[] {
  return header.match(/(?:W\/)?"[^"]*"/g) ?? [];
}

function stripWeak(tag: string): string {
  return tag.startsWith("W/") ? tag.slice(2) : tag;
}

/** Whether `Accept-Encoding` allows gzip (explicitly or via `*`, q > 0). */
function acceptsGzip(header: string | null): boolean {
  if (header === null) return false;
  let gzip: number | undefined;
  let any: number | undefined;
  for (const part of header.split(",")) {
    const [coding = "", ...parameters] = part.split(";").map((piece) => piece.trim());
    let quality = 1;
    for (const parameter of parameters) {
      const match = /^q=([0-9.]+)$/i.exec(parameter);
      if (match) quality = Number(match[1]);
    }
    const name = coding.toLowerCase();
    if (name === "gzip" || name === "x-gzip") gzip = quality;
    else if (name === "*") any = quality;
  }
  return (gzip ?? any ?? 0) > 0;
}

function isPackage(relative: string): boolean {
  return relative.endsWith(".conda") || relative.endsWith(".tar.bz2");
}

function isCompressible(relative: string): boolean {
  return relative.endsWith(".json") || relative.endsWith(".html");
}

function contentType(relative: string): string {
  for (const [suffix, type] of CONTENT_TYPES) {
    if (relative.endsWith(suffix)) return type;
  }
  return "application/octet-stream";
}

/**
 * A stream of exactly `length` bytes of `file` from `start`, which closes
 * the file when it ends, fails or is cancelled. Bounded so that a file that
 * grows while being sent never exceeds the announced `Content-Length`.
 */
function sliceStream(
  file: Deno.FsFile,
  start: number,
  length: number,
): ReadableStream<Uint8Array<ArrayBuffer>> {
  let remaining = length;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    try {
      file.close();
    } catch {
      // Already closed.
    }
  };
  return new ReadableStream<Uint8Array<ArrayBuffer>>({
    async start(controller) {
      try {
        if (start > 0) await file.seek(start, Deno.SeekMode.Start);
      } catch (error) {
        close();
        controller.error(error);
        return;
      }
      if (remaining === 0) {
        close();
        controller.close();
      }
    },
    async pull(controller) {
      const buffer = new Uint8Array(Math.min(CHUNK_SIZE, remaining));
      let read: number | null;
      try {
        read = await file.read(buffer);
      } catch (error) {
        close();
        controller.error(error);
        return;
      }
      if (read === null) {
        close();
        controller.error(new Error("Cannot stream file: it is shorter than its announced size"));
        return;
      }
      remaining -= read;
      controller.enqueue(buffer.subarray(0, read));
      if (remaining === 0) {
        close();
        controller.close();
      }
    },
    cancel() {
      close();
    },
  });
}
