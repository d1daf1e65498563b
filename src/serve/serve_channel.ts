/**
 * Serves the conda channel's files over HTTP to conda, mamba and
 * pixi/rattler: GET and HEAD with validators, conditional requests, single
 * byte ranges and gzip for JSON and HTML.
 *
 * Every read goes through {@linkcode ChannelStore}, which refuses paths
 * outside the channel, dotfiles (spool, lock, temporary files) and symlinks
 * leading out of the channel or to a dotfile; this module decodes the request
 * path once and answers anything it cannot serve with exactly 404.
 *
 * Index files (everything but packages) up to 8 MiB are answered from memory
 * ({@linkcode HotFileCache}, gzip made once per version); a package or other
 * body up to 256 KiB is read at once and sent as one buffer, a larger one is
 * streamed in 256 KiB chunks as the client takes them.
 *
 * @module
 */

import { HttpError } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";
import { bytesResponse } from "../http/response_writer.ts";
import type {
  ChannelEntry,
  ChannelStore,
  OpenedFile,
  ServableFile,
} from "../storage/channel_store.ts";
import { renderChannelOverview } from "./channel_overview.ts";
import { entityTag, type HotFile, HotFileCache } from "./hot_file_cache.ts";
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
  /**
   * Whether a package may be replaced under its name (`--allow_overwrite`):
   * packages then get the `Cache-Control` of index files instead of one
   * year and `immutable`, so that caches revalidate them.
   * @default {false}
   */
  mutablePackages?: boolean;
}

/** `Cache-Control` of packages: their content never changes under a name. */
const PACKAGE_CACHE_CONTROL = "public, max-age=31536000, immutable";
/** Largest body read whole from disk and sent as one buffer. */
const SMALL_BODY_BYTES = 256 * 1024;
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
 *   for packages (`.conda`, `.tar.bz2`) unless `mutablePackages`, and for
 *   repodata shards (`<subdir>/shards/<sha256>.msgpack.zst`, named by their
 *   content), `indexMaxAgeSeconds` otherwise.
 * - `If-None-Match` (weak comparison, lists, `*`) and, without it,
 *   `If-Modified-Since` answer 304.
 * - A single `Range` answers 206 with `Content-Range`, or 416 when it lies
 *   outside the file; several ranges get the whole file. `If-Range` (a
 *   strong ETag or the exact `Last-Modified` date) is honoured.
 * - `.json` and `.html` files up to 8 MiB are gzip-compressed for clients
 *   accepting gzip, unless a range is asked; that variant has the ETag
 *   `"<size hex>-<mtime ms hex>-gzip"` and its own `Content-Length`.
 * - HEAD has the headers of GET (its `Content-Length` too) and no body. A
 *   streamed file is closed when the body ends, fails or is cancelled.
 *
 * @throws {HttpError} 400 for a path that is not valid percent-encoding,
 * 404 (one line, nothing else) for anything that is not a servable file,
 * 405 with `Allow` for other methods, 416 with `Content-Range` for an
 * unsatisfiable range. Turn it into a response with `errorResponse`.
 */
export async function serveChannel(
  request: Request,
  storage: ChannelStore,
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
  const cacheControl: _CacheControl = {
    index: indexCacheControl,
    package: options.mutablePackages ? indexCacheControl : PACKAGE_CACHE_CONTROL,
  };

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

  if (path.endsWith("/")) {
    // A servable `<dir>/index.html` means `<dir>` is a directory in the channel.
    const response = await serveFile(request, storage, `${path.slice(1)}index.html`, cacheControl);
    if (response) return response;
    throw new HttpError(STATUS.NotFound, NOT_FOUND);
  }
  const relative = path.slice(1);
  const response = await serveFile(request, storage, relative, cacheControl);
  if (response) return response;
  if (await storage.isDirectory(relative)) {
    // Relative links in index.html need the trailing slash.
    return new Response(null, {
      status: STATUS.MovedPermanently,
      headers: { location: `/${encodeURI(relative)}/` },
    });
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

/** The hot file cache of each storage, made on its first request. */
const _caches = new WeakMap<ChannelStore, HotFileCache>();

function _hotFiles(storage: ChannelStore): HotFileCache {
  let cache = _caches.get(storage);
  if (cache === undefined) {
    cache = new HotFileCache(storage);
    _caches.set(storage, cache);
  }
  return cache;
}

/** Serves one file, or returns undefined when it is not a servable file. */
async function serveFile(
  request: Request,
  storage: ChannelStore,
  relative: string,
  cacheControl: _CacheControl,
): Promise<Response | undefined> {
  const looked = storage.servable(relative);
  const found = looked instanceof Promise ? await looked : looked;
  if (found === undefined) return undefined;
  const cache = _hotFiles(storage);
  if (!isPackage(relative) && cache.holds(found.entry.size)) {
    const held = cache.get(relative, found);
    const file = held instanceof Promise ? await held : held;
    if (file === undefined) return undefined;
    return await answerFromMemory(request, relative, file, cache, cacheControl);
  }
  return await answerFromDisk(request, storage, relative, found, cacheControl);
}

/** `Cache-Control` values of one request's answers. */
interface _CacheControl {
  index: string;
  package: string;
}

/** Validators and type shared by every answer for a file. */
function fileHeaders(
  relative: string,
  etag: string,
  lastModified: string,
  cacheControl: _CacheControl,
  compressible: boolean,
): Record<string, string> {
  const headers: Record<string, string> = {
    "etag": etag,
    "last-modified": lastModified,
    "cache-control": isPackage(relative)
      ? cacheControl.package
      : isShard(relative)
      ? PACKAGE_CACHE_CONTROL
      : cacheControl.index,
    "accept-ranges": "bytes",
    "content-type": contentType(relative),
    "x-content-type-options": "nosniff",
  };
  if (compressible) headers["vary"] = "Accept-Encoding";
  return headers;
}

/** Answers from a file held in memory: one buffer, with its length. */
async function answerFromMemory(
  request: Request,
  relative: string,
  file: HotFile,
  cache: HotFileCache,
  cacheControl: _CacheControl,
): Promise<Response> {
  const { entry } = file;
  const compressible = isCompressible(relative);
  const rangeHeader = request.headers.get("range");
  const gzip = compressible && rangeHeader === null &&
    acceptsGzip(request.headers.get("accept-encoding"));
  const etag = gzip ? `${file.etag.slice(0, -1)}-gzip"` : file.etag;
  const headers = fileHeaders(relative, etag, file.lastModified, cacheControl, compressible);
  if (notModified(request.headers, etag, entry.mtimeMs)) return notModifiedResponse(headers);
  const range = requestedRange(request.headers, rangeHeader, file.etag, entry);
  let body: Uint8Array<ArrayBuffer>;
  if (gzip) {
    headers["content-encoding"] = "gzip";
    body = await cache.gzipped(relative, file);
  } else {
    body = range ? file.bytes.subarray(range.start, range.end + 1) : file.bytes;
  }
  return bodyResponse(request, body, entry, range, headers);
}

/**
 * Answers from disk: a small body read at once, a large one streamed. Never
 * gzip: packages do not shrink, and JSON or HTML too large to hold in memory
 * goes out as it is (clients take `repodata.json.zst`).
 */
async function answerFromDisk(
  request: Request,
  storage: ChannelStore,
  relative: string,
  found: ServableFile,
  cacheControl: _CacheControl,
): Promise<Response | undefined> {
  let entry = found.entry;
  let file: OpenedFile | undefined;
  if (request.method === "GET") {
    // GET opens first and describes the opened file, so that the validators
    // always match the bytes sent even if the name is replaced meanwhile.
    file = await storage.open(relative);
    if (file === undefined) return undefined;
    entry = file.entry;
  }
  try {
    const etag = entityTag(entry);
    const lastModified = new Date(entry.mtimeMs).toUTCString();
    const headers = fileHeaders(relative, etag, lastModified, cacheControl, false);
    if (notModified(request.headers, etag, entry.mtimeMs)) {
      file?.close();
      return notModifiedResponse(headers);
    }
    const range = requestedRange(request.headers, request.headers.get("range"), etag, entry);
    const start = range?.start ?? 0;
    const length = range ? range.end - range.start + 1 : entry.size;
    if (file === undefined) return bodyResponse(request, null, entry, range, headers, length);
    if (length > SMALL_BODY_BYTES) {
      const body = file.stream(start, length);
      return bodyResponse(request, body, entry, range, headers, length);
    }
    const bytes = await file.read(start, length);
    file.close();
    if (bytes.length !== length) {
      throw new Error("Cannot serve file: it is shorter than its announced size");
    }
    return bodyResponse(request, bytes, entry, range, headers);
  } catch (error) {
    file?.close();
    throw error;
  }
}

function notModifiedResponse(headers: Record<string, string>): Response {
  delete headers["content-type"];
  return new Response(null, { status: STATUS.NotModified, headers });
}

/** The range to answer, undefined for the whole file; throws 416 when unsatisfiable. */
function requestedRange(
  requestHeaders: Headers,
  rangeHeader: string | null,
  identityTag: string,
  entry: ChannelEntry,
): ByteRange | undefined {
  if (rangeHeader === null) return undefined;
  if (!ifRangeHolds(requestHeaders.get("if-range"), identityTag, entry)) return undefined;
  const parsed = parseRange(rangeHeader, entry.size);
  if (parsed === "unsatisfiable") {
    throw new HttpError(
      STATUS.RangeNotSatisfiable,
      "Cannot serve range: it lies outside the file",
      { headers: { "content-range": `bytes */${entry.size}`, "accept-ranges": "bytes" } },
    );
  }
  return parsed;
}

/** A 200 or 206 with `Content-Length` (HEAD: the length GET would send, no body). */
function bodyResponse(
  request: Request,
  body: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array<ArrayBuffer>> | null,
  entry: ChannelEntry,
  range: ByteRange | undefined,
  headers: Record<string, string>,
  length = body instanceof Uint8Array ? body.length : 0,
): Response {
  headers["content-length"] = String(length);
  if (range) headers["content-range"] = `bytes ${range.start}-${range.end}/${entry.size}`;
  const status = range ? STATUS.PartialContent : STATUS.OK;
  if (request.method === "HEAD") {
    if (body instanceof ReadableStream) void body.cancel();
    return new Response(null, { status, headers });
  }
  return body instanceof Uint8Array
    ? bytesResponse(body, { status, headers })
    : new Response(body, { status, headers });
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

/** A repodata shard (`<subdir>/shards/<sha256>.msgpack.zst`): named by its content, never changes. */
function isShard(relative: string): boolean {
  return /^[^/]+\/shards\/[0-9a-f]{64}\.msgpack\.zst$/.test(relative);
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
