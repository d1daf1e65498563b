/**
 * A seeded corpus of hostile upload requests, every one of which a sound
 * server refuses with a 4xx and without publishing anything: truncated and
 * malformed multipart bodies, wrong boundaries, oversized headers, too many
 * or missing parts, archives truncated at every byte, wrong magic, lying or
 * broken `info/index.json`, bzip2/zstd/zip bombs, hostile tar and zip
 * structures, path traversal and unicode tricks in filenames, unknown
 * subdirs, and hostile paths for GET and DELETE.
 *
 * Each request is built so that refusal is guaranteed by the protocol, not
 * by a lenient reading of it: where a tolerant parser could legitimately
 * accept a variation (an unquoted parameter, an epilogue), the artifact
 * itself is also unacceptable. Where refusal follows from the format (a
 * truncated body, more parts than allowed), the artifact is a valid package,
 * so a parser that wrongly accepts the body publishes something, which the
 * suite's before/after snapshot of the channel catches.
 *
 * Payloads are small (bodies of a few KiB; a handful of bombs of tens of
 * KiB that expand to a GiB), so 10,000 requests take seconds to send.
 *
 * @module
 */

import zlib from "node:zlib";
import { buildPackage, bzip2Compress, packageFilename, type PackageSpec } from "./conda_package.ts";
import { buildTar, concatBytes, tarEnd, type TarEntry, tarHeader } from "./tar_writer.ts";
import { buildZip, type ZipEntry } from "./zip_writer.ts";

/** One request of the corpus. */
export interface HostileRequest {
  /** What it tries, as `group/variant`; the suite counts statuses by group. */
  kind: string;
  /** HTTP method. */
  method: string;
  /** Path and query, already percent-encoded. */
  path: string;
  /** Request headers (Latin-1 values only, as fetch requires). */
  headers: Record<string, string>;
  /** The body, if any. */
  body?: Uint8Array<ArrayBuffer>;
  /**
   * Whether the request carries the valid token (`"valid"`) or none or a
   * wrong one (`"invalid"`). A server that slows down failed token attempts
   * per address (429) must see the invalid ones from another address, or
   * they would lock the valid ones out.
   */
  credentials: "valid" | "invalid";
}

/** Options for {@linkcode buildHostileCorpus}. */
export interface HostileCorpusOptions {
  /** A valid upload token; most requests carry it, so that they reach the parsers. */
  token: string;
  /** The server's channel name, for `/api/v1/upload/<channel>`-style paths. */
  channelName: string;
  /**
   * Least number of requests; seeded random variations fill the corpus up
   * to it after the exhaustive parts.
   * @default {10000}
   */
  size?: number;
}

/** A deterministic generator of numbers in [0, 1) (mulberry32). */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const encoder = new TextEncoder();
const CRLF = "\r\n";
/** The package every corpus upload pretends to be; never present in the channel. */
const VICTIM: PackageSpec = { name: "victim", version: "1.0", build: "0" };
const VICTIM_STEM = "victim-1.0-0";
const CONDA_NAME = `${VICTIM_STEM}.conda`;
const BZ2_NAME = `${VICTIM_STEM}.tar.bz2`;
const TOKEN_BCHARS = [..."0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'+_-."];
const ALL_BCHARS = [...TOKEN_BCHARS, ..."()+_,-./:=?"];
/** Kinds (besides `auth/*`) whose requests carry no valid token. */
const WITHOUT_VALID_TOKEN = new Set([
  "multipart/no-token",
  "multipart/no-token-bz2",
  "multipart/empty-form",
  "multipart/no-parts-no-close",
  "multipart/file-before-token",
  "multipart/file-before-token-bz2",
  "multipart/wrong-then-right-token",
  "multipart/token-over-64k",
  "multipart/token-nul",
  "multipart/token-unicode",
  "multipart/huge-field-name-no-token",
  "route/put-no-token",
  "route/legacy-no-token",
  "path/delete-no-token",
  "path/delete-wrong-token",
]);
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** One part of a hand-built multipart body. */
interface _Part {
  /** Field name; ignored when `head` is given. */
  name?: string;
  /** `filename` parameter, written raw (UTF-8); ignored when `head` is given. */
  filename?: string;
  /** The whole header block, written verbatim (without the blank line). */
  head?: string | Uint8Array;
  /** Extra header lines after Content-Disposition. */
  extra?: string[];
  /** The part's content. */
  data: string | Uint8Array;
}

interface _FormOptions {
  /** @default {a random boundary} */
  boundary?: string;
  /** Write the closing boundary. @default {true} */
  close?: boolean;
  /** Line ending of the structure. @default {"\r\n"} */
  eol?: string;
  /** Bytes before the first boundary. */
  preamble?: string | Uint8Array;
  /** Bytes after the closing boundary. */
  epilogue?: string | Uint8Array;
}

/** The `Content-Type` naming `boundary`, quoted when it holds tspecials. */
function _contentType(boundary: string): string {
  return /^[0-9A-Za-z'+_.-]+$/.test(boundary)
    ? `multipart/form-data; boundary=${boundary}`
    : `multipart/form-data; boundary="${boundary}"`;
}

function _bytes(data: string | Uint8Array): Uint8Array {
  return typeof data === "string" ? encoder.encode(data) : data;
}

function _owned(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(bytes) as Uint8Array<ArrayBuffer>;
}

/** The corpus under construction, with its random source. */
class _Corpus {
  readonly requests: HostileRequest[] = [];
  readonly random: () => number;
  readonly token: string;
  readonly channelName: string;

  constructor(seed: number, token: string, channelName: string) {
    this.random = seededRandom(seed);
    this.token = token;
    this.channelName = channelName;
  }

  int(low: number, high: number): number {
    return low + Math.floor(this.random() * (high - low + 1));
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.random() * items.length)]!;
  }

  /** A random valid boundary (1 to 70 RFC 2046 bchars), sometimes with characters that need quoting. */
  boundary(): string {
    const alphabet = this.random() < 0.8 ? TOKEN_BCHARS : ALL_BCHARS;
    const length = this.int(1, 70);
    let text = this.random() < 0.5 ? "----" : "";
    while (text.length < length) text += this.pick(alphabet);
    return text.slice(0, length);
  }

  randomBytes(length: number): Uint8Array {
    const bytes = new Uint8Array(length);
    for (let i = 0; i < length; i++) bytes[i] = Math.floor(this.random() * 256);
    return bytes;
  }

  add(
    kind: string,
    method: string,
    path: string,
    headers: Record<string, string>,
    body?: Uint8Array,
  ): void {
    const credentials = kind.startsWith("auth/") || WITHOUT_VALID_TOKEN.has(kind)
      ? "invalid"
      : "valid";
    const request: HostileRequest = { kind, method, path, headers, credentials };
    if (body !== undefined) request.body = _owned(body);
    this.requests.push(request);
  }

  /** A multipart body and its boundary. */
  form(parts: _Part[], options: _FormOptions = {}): { body: Uint8Array; boundary: string } {
    const boundary = options.boundary ?? this.boundary();
    const eol = options.eol ?? CRLF;
    const chunks: Uint8Array[] = [];
    if (options.preamble !== undefined) chunks.push(_bytes(options.preamble), _bytes(eol));
    for (const part of parts) {
      chunks.push(_bytes(`--${boundary}${eol}`));
      if (part.head !== undefined) {
        chunks.push(_bytes(part.head));
      } else {
        const filename = part.filename === undefined ? "" : `; filename="${part.filename}"`;
        const lines = [`Content-Disposition: form-data; name="${part.name ?? ""}"${filename}`];
        if (part.filename !== undefined) lines.push("Content-Type: application/octet-stream");
        lines.push(...(part.extra ?? []));
        chunks.push(_bytes(lines.join(eol)));
      }
      chunks.push(_bytes(eol + eol), _bytes(part.data), _bytes(eol));
    }
    if (options.close ?? true) chunks.push(_bytes(`--${boundary}--${eol}`));
    if (options.epilogue !== undefined) chunks.push(_bytes(options.epilogue));
    return { body: concatBytes(chunks), boundary };
  }

  /** Adds `POST /` with a multipart body. */
  postForm(
    kind: string,
    parts: _Part[],
    options: _FormOptions & { contentType?: string; headers?: Record<string, string> } = {},
  ): void {
    const { body, boundary } = this.form(parts, options);
    this.add(kind, "POST", "/", {
      "content-type": options.contentType ?? _contentType(boundary),
      ...options.headers,
    }, body);
  }

  tokenPart(): _Part {
    return { name: "token", data: this.token };
  }

  artifact(filename: string, data: Uint8Array): _Part {
    return { name: "artifact", filename, data };
  }

  /** Adds `POST /` with the token and one artifact: the original protocol. */
  upload(kind: string, filename: string, data: Uint8Array): void {
    this.postForm(kind, [this.tokenPart(), this.artifact(filename, data)]);
  }

  bearer(): Record<string, string> {
    return { authorization: `Bearer ${this.token}` };
  }
}

/** Valid packages and variants the generators start from. */
interface _Material {
  conda: Uint8Array;
  bz2: Uint8Array;
  condaVariants: Uint8Array[];
  bz2Variants: Uint8Array[];
}

async function _material(): Promise<_Material> {
  const [conda, bz2, condaInfoFirst, bz2InfoLast] = await Promise.all([
    buildPackage({ ...VICTIM, format: ".conda" }),
    buildPackage({ ...VICTIM, format: ".tar.bz2" }),
    buildPackage({ ...VICTIM, format: ".conda", condaInfoFirst: true, zip: { zip64: true } }),
    buildPackage({
      ...VICTIM,
      format: ".tar.bz2",
      infoLast: true,
      runExports: { weak: ["victim"] },
    }),
  ]);
  return { conda, bz2, condaVariants: [conda, condaInfoFirst], bz2Variants: [bz2, bz2InfoLast] };
}

/**
 * Builds the corpus: exhaustive parts (every truncation of four archives and
 * of two whole request bodies), fixed lists of known attacks, then seeded
 * random variations until `options.size` requests. The same seed and token
 * give the same corpus.
 */
export async function buildHostileCorpus(
  seed: number,
  options: HostileCorpusOptions,
): Promise<HostileRequest[]> {
  const corpus = new _Corpus(seed, options.token, options.channelName);
  const material = await _material();
  _archiveTruncations(corpus, material);
  _bodyTruncations(corpus, material);
  _prefixBodyTruncations(corpus, material);
  _hugeRequestHeaders(corpus, material);
  _multipartStructure(corpus, material);
  _contentTypes(corpus, material);
  _credentials(corpus, material);
  await _filenames(corpus, material);
  await _indexJsonLies(corpus);
  await _tarTricks(corpus);
  _zipTricks(corpus, material);
  await _bombs(corpus);
  _wrongMagic(corpus, material);
  _otherRoutes(corpus, material);
  _hostilePaths(corpus);
  const size = options.size ?? 10_000;
  const fillers = [
    _randomBoundaryMismatch,
    _randomManyParts,
    _randomHugePartHeader,
    _randomGarbagePackage,
    _randomInjectedBoundary,
    _randomIndexJson,
    _randomTruncatedInfoMember,
  ];
  while (corpus.requests.length < size) corpus.pick(fillers)(corpus, material);
  return corpus.requests;
}

// ------------------------------------------------------------ exhaustive

/** Every truncation of a .conda and a .tar.bz2 (two layouts each), as a proper upload. */
function _archiveTruncations(corpus: _Corpus, material: _Material): void {
  for (const bytes of material.condaVariants) {
    for (let length = 0; length < bytes.length; length++) {
      corpus.upload("archive-truncated/conda", CONDA_NAME, bytes.subarray(0, length));
    }
  }
  for (const bytes of material.bz2Variants) {
    for (let length = 0; length < bytes.length; length++) {
      corpus.upload("archive-truncated/tar.bz2", BZ2_NAME, bytes.subarray(0, length));
    }
  }
}

/**
 * Every truncation of a whole, valid upload body that drops at least the
 * last `-\r\n` of the closing boundary: without its closing boundary a body
 * is incomplete, whatever it held.
 */
function _bodyTruncations(corpus: _Corpus, material: _Material): void {
  for (
    const [filename, bytes] of [[CONDA_NAME, material.conda], [BZ2_NAME, material.bz2]] as const
  ) {
    const { body, boundary } = corpus.form([corpus.tokenPart(), corpus.artifact(filename, bytes)]);
    const headers = { "content-type": _contentType(boundary) };
    for (let length = 0; length <= body.length - 3; length++) {
      corpus.add("multipart-truncated/body", "POST", "/", headers, body.subarray(0, length));
    }
  }
}

/** The same for the prefix.dev protocol's body (one `file` part, token in a header). */
function _prefixBodyTruncations(corpus: _Corpus, material: _Material): void {
  const { body, boundary } = corpus.form([{
    name: "file",
    filename: BZ2_NAME,
    extra: [`x-file-name: ${BZ2_NAME}`],
    data: material.bz2,
  }]);
  const headers = { ...corpus.bearer(), "content-type": _contentType(boundary) };
  const path = `/api/v1/upload/${encodeURIComponent(corpus.channelName)}`;
  for (let length = 0; length <= body.length - 3; length++) {
    corpus.add("multipart-truncated/prefix-body", "POST", path, headers, body.subarray(0, length));
  }
}

// ----------------------------------------------------------- fixed lists

/**
 * Request headers far beyond what any client sends, but within hyper's read
 * buffer (about 400 KiB): a larger header block gets hyper's own 400 and a
 * closed connection before it is read to its end, which the client may see
 * as a reset; that is the HTTP layer's doing, not this server's.
 */
function _hugeRequestHeaders(corpus: _Corpus, material: _Material): void {
  const { body, boundary } = corpus.form([
    corpus.tokenPart(),
    corpus.artifact(CONDA_NAME, encoder.encode("junk")),
  ]);
  const contentType = _contentType(boundary);
  const many: Record<string, string> = {};
  for (let i = 0; i < 500; i++) many[`x-header-${i}`] = "v";
  const cases: Record<string, string>[] = [
    { "x-junk": "j".repeat(100 * KiB) },
    { "x-junk": "j".repeat(300 * KiB) },
    { [`x-${"n".repeat(60 * KiB)}`]: "v" },
    many,
    { "x-file-name": "f".repeat(64 * KiB) },
    { "content-type": `${contentType}; ${"p=v; ".repeat(10_000)}` },
  ];
  for (const headers of cases) {
    corpus.add("headers/huge", "POST", "/", { "content-type": contentType, ...headers }, body);
  }
  corpus.add("headers/huge", "PUT", `/linux-64/${CONDA_NAME}`, {
    ...corpus.bearer(),
    "x-junk": "j".repeat(200 * KiB),
  }, material.conda);
}

function _multipartStructure(corpus: _Corpus, material: _Material): void {
  const token = corpus.tokenPart();
  const valid = corpus.artifact(CONDA_NAME, material.conda);
  const validBz2 = corpus.artifact(BZ2_NAME, material.bz2);
  // Wrong magic: unacceptable whatever the parser makes of the structure.
  const junk = corpus.artifact(CONDA_NAME, encoder.encode("not a package"));
  const add = (variant: string, parts: _Part[], options: _FormOptions = {}) =>
    corpus.postForm(`multipart/${variant}`, parts, options);

  add("no-token", [valid]);
  add("no-token-bz2", [validBz2]);
  add("token-only", [token]);
  add("empty-form", []);
  add("no-parts-no-close", [], { close: false });
  add("file-before-token", [valid, token]);
  add("file-before-token-bz2", [validBz2, token]);
  add("two-artifacts", [token, valid, valid]);
  add("two-artifacts-different", [token, valid, validBz2]);
  add("artifact-without-filename", [token, { name: "artifact", data: material.conda }]);
  add("artifact-empty-filename", [token, corpus.artifact("", material.conda)]);
  add("artifact-wrong-field", [token, {
    name: "file",
    filename: CONDA_NAME,
    data: material.conda,
  }]);
  add("artifact-field-case", [token, {
    name: "Artifact",
    filename: CONDA_NAME,
    data: material.conda,
  }]);
  add("wrong-then-right-token", [{ name: "token", data: "wrong" }, token, valid]);
  add("token-over-64k", [{ name: "token", data: "t".repeat(70 * KiB) }, valid]);
  add("token-nul", [{ name: "token", data: `${corpus.token}\0` }, valid]);
  add("token-unicode", [{ name: "token", data: `${corpus.token}\u202e` }, valid]);
  add("sha256-mismatch", [token, { name: "sha256", data: "0".repeat(64) }, valid]);
  add("sha256-mismatch-after", [token, valid, { name: "sha256", data: "f".repeat(64) }]);
  add("sha256-garbage", [token, { name: "sha256", data: "../../etc/passwd" }, valid]);
  add("sha256-over-64k", [token, { name: "sha256", data: "a".repeat(70 * KiB) }, valid]);
  add("arch-mismatch", [token, { name: "arch", data: "osx-64" }, valid]);
  add("arch-traversal", [token, { name: "arch", data: "../linux-64" }, valid]);
  add("arch-unknown", [token, { name: "arch", data: "plan9-64" }, validBz2]);
  add("lf-line-endings", [token, valid], { eol: "\n" });
  add("preamble-over-16k", [token, valid], { preamble: "p".repeat(17 * KiB) });
  add("header-block-over-16k", [token, { ...valid, extra: [`X-Pad: ${"h".repeat(17 * KiB)}`] }]);
  add("filename-over-255", [token, corpus.artifact("v".repeat(300) + ".conda", material.conda)]);
  add("seventeen-parts", [
    token,
    ...Array.from({ length: 16 }, () => ({ name: "x", data: "" })),
    valid,
  ]);
  add("huge-field-name-no-token", [{ name: "n".repeat(15 * KiB), data: "v" }, valid]);
  add("huge-field-name-junk", [token, { name: "n".repeat(15 * KiB), data: "v" }, junk]);
  add("no-disposition", [token, {
    head: "Content-Type: application/octet-stream",
    data: material.conda,
  }]);
  add("empty-head", [token, { head: "", data: material.conda }]);
  add("attachment-disposition", [token, {
    head: `Content-Disposition: attachment; name="artifact"; filename="${CONDA_NAME}"`,
    data: "junk",
  }]);
  add("unquoted-params", [token, {
    head: `Content-Disposition: form-data; name=artifact; filename=${CONDA_NAME}`,
    data: "junk",
  }]);
  add("header-without-colon", [token, { ...junk, extra: ["this line has no colon"] }]);
  add("obs-fold", [token, { ...junk, extra: ["X-Folded: a", "  continued"] }]);
  add("nul-in-header", [token, { ...junk, extra: ["X-Nul: a\0b"] }]);
  add("latin1-in-header", [token, {
    head: concatBytes([
      encoder.encode(`Content-Disposition: form-data; name="artifact"; filename="`),
      Uint8Array.of(0xff, 0xfe, 0xe9),
      encoder.encode(`.conda"`),
    ]),
    data: material.conda,
  }]);
  add("filename-star-traversal", [token, {
    head:
      `Content-Disposition: form-data; name="artifact"; filename*=UTF-8''..%2F..%2F${CONDA_NAME}`,
    data: material.conda,
  }]);
  add("filename-star-bad-encoding", [token, {
    head: `Content-Disposition: form-data; name="artifact"; filename*=UTF-8''%ff%fe%zz.conda`,
    data: material.conda,
  }]);
  add("filename-star-and-plain", [token, {
    head:
      `Content-Disposition: form-data; name="artifact"; filename="${CONDA_NAME}"; filename*=UTF-8''..%2F${CONDA_NAME}`,
    data: material.conda,
  }]);
  add("duplicate-disposition", [token, {
    head: `Content-Disposition: form-data; name="artifact"; filename="${CONDA_NAME}"\r\n` +
      `Content-Disposition: form-data; name="artifact"; filename="../${CONDA_NAME}"`,
    data: "junk",
  }]);
  add("part-content-length-lie", [token, { ...junk, extra: ["Content-Length: 999999999999"] }]);
  add("epilogue", [token, junk], { epilogue: "trailing junk\r\n".repeat(50) });
  add("nested-multipart", [token, corpus.artifact(CONDA_NAME, corpus.form([token, valid]).body)]);
  // The boundary differs in case from the header's: never found.
  const { body, boundary } = corpus.form([token, valid], { boundary: "CaseBoundary" });
  corpus.add("multipart/boundary-case", "POST", "/", {
    "content-type": `multipart/form-data; boundary=${boundary.toLowerCase()}`,
  }, body);
  // Garbage right after a boundary line.
  const garbage = corpus.form([token, valid], { boundary: "GarbageAfter" }).body;
  const text = new TextDecoder("latin1").decode(garbage);
  corpus.add("multipart/garbage-after-boundary", "POST", "/", {
    "content-type": "multipart/form-data; boundary=GarbageAfter",
  }, _latin1(text.replace("--GarbageAfter\r\n", "--GarbageAfterXYZ\r\n")));
  const padded = new TextDecoder("latin1").decode(
    corpus.form([token, junk], { boundary: "pad" }).body,
  );
  corpus.add("multipart/transport-padding", "POST", "/", {
    "content-type": "multipart/form-data; boundary=pad",
  }, _latin1(padded.replaceAll("--pad\r\n", "--pad \t \r\n")));
  // Only a closing boundary, and bodies that are not multipart at all.
  for (const raw of ["--B--\r\n", "--B\r\n\r\n", "--B", "\r\n\r\n", "", "B--", "--B--B--"]) {
    corpus.add("multipart/degenerate", "POST", "/", {
      "content-type": "multipart/form-data; boundary=B",
      ...corpus.bearer(),
    }, encoder.encode(raw));
  }
}

function _latin1(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i) & 0xff;
  return bytes;
}

function _contentTypes(corpus: _Corpus, material: _Material): void {
  const parts = [corpus.tokenPart(), corpus.artifact(CONDA_NAME, material.conda)];
  const { body, boundary } = corpus.form(parts, { boundary: "ctb" });
  // None of these names the body's boundary "ctb" in a valid way.
  const types = [
    "multipart/form-data",
    "multipart/form-data; boundary=",
    'multipart/form-data; boundary=""',
    `multipart/form-data; boundary=${"x".repeat(71)}`,
    "multipart/form-data; boundary=c\u00e9b",
    "multipart/form-data; boundary=ctb\u00ff",
    "multipart/form-data; boundary=other",
    "multipart/form-data; boundary=ct",
    "multipart/form-data; boundary=ctbctb",
    "multipart/form-data; charset=utf-8",
    "multipart/form-data;;;; ===",
    "multipart/mixed; boundary=ctb",
    "multipart/related; boundary=ctb",
    "multipart/byteranges; boundary=ctb",
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/json",
    "form-data; boundary=ctb",
    "multipart/form-data-x; boundary=ctb",
    ";boundary=ctb",
    "*/*",
  ];
  for (const contentType of types) {
    corpus.add("content-type/wrong", "POST", "/", { "content-type": contentType }, body);
  }
  corpus.add("content-type/missing", "POST", "/", {}, body);
  // Spellings a lenient parser may read as boundary "ctb": the artifact is junk.
  const junk =
    corpus.form([corpus.tokenPart(), corpus.artifact(CONDA_NAME, encoder.encode("junk"))], {
      boundary,
    }).body;
  for (
    const contentType of [
      "multipart/form-data; boundary=ctb ",
      'multipart/form-data; boundary="ctb',
      "multipart/form-data ; boundary = ctb",
      "MULTIPART/FORM-DATA; BOUNDARY=ctb",
      "multipart/form-data; boundary=ctb; boundary=other",
      "multipart/form-data; boundary=other; boundary=ctb",
      'multipart/form-data; boundary="c\\tb"',
    ]
  ) {
    corpus.add("content-type/lenient-junk", "POST", "/", { "content-type": contentType }, junk);
  }
}

function _credentials(corpus: _Corpus, material: _Material): void {
  const artifact = corpus.artifact(CONDA_NAME, material.conda);
  const wrong = [
    "",
    " ",
    "wrong",
    corpus.token.slice(0, -1),
    corpus.token.toUpperCase() === corpus.token ? `${corpus.token}x` : corpus.token.toUpperCase(),
    `${corpus.token} `.repeat(2),
    "t".repeat(10_000),
    "t\u00f6k\u00e9n",
    "\u202etoken",
    "0".repeat(64),
    "' OR 1=1 --",
    "../../etc/passwd",
  ];
  for (const token of wrong) {
    corpus.postForm("auth/wrong-token-field", [{ name: "token", data: token }, artifact]);
  }
  const basic = (text: string) => `Basic ${btoa(text)}`;
  const headers = [
    "Bearer",
    "Bearer ",
    "Bearer wrong",
    `Bearer ${corpus.token}x`,
    `Bearer  ${corpus.token} extra`,
    "Basic !!!not-base64!!!",
    basic("user-without-colon"),
    basic(":wrong"),
    basic(`user:${corpus.token}x`),
    "Digest username=x",
    "Token abc",
    `bearer${corpus.token}`,
    `Bearer ${"A".repeat(9000)}`,
  ];
  // A wrong Authorization header wins over a valid token field.
  for (const authorization of headers) {
    corpus.postForm("auth/wrong-header", [corpus.tokenPart(), artifact], {
      headers: { authorization },
    });
  }
  corpus.postForm("auth/wrong-api-key", [corpus.tokenPart(), artifact], {
    headers: { "x-api-key": "wrong" },
  });
}

/** Names that a filename must never be allowed to be or contain. */
const HOSTILE_FILENAMES: readonly string[] = [
  `../${CONDA_NAME}`,
  `../../${CONDA_NAME}`,
  `/tmp/${CONDA_NAME}`,
  `/${CONDA_NAME}`,
  `linux-64/${CONDA_NAME}`,
  `..\\${CONDA_NAME}`,
  `C:\\${CONDA_NAME}`,
  `${CONDA_NAME}/..`,
  `${CONDA_NAME}/.`,
  ".",
  "..",
  "...conda",
  ".conda",
  `.${CONDA_NAME}`,
  `.upload-spool/${CONDA_NAME}`,
  `%2e%2e%2f${CONDA_NAME}`,
  `..%2f${CONDA_NAME}`,
  `..%5c${CONDA_NAME}`,
  `victim%00-1.0-0.conda`,
  `${CONDA_NAME}%00.txt`,
  `${CONDA_NAME}\u0000.txt`,
  `victim\u0000-1.0-0.conda`,
  `\u202e${CONDA_NAME}`,
  `victim-1.0-0\u202eadnoc.conda`,
  `victim\u200b-1.0-0.conda`,
  `${CONDA_NAME}\u200b`,
  `\ufeff${CONDA_NAME}`,
  `linux-64\uff0f${CONDA_NAME}`,
  `..\u2215${CONDA_NAME}`,
  `\u2215etc\u2215${CONDA_NAME}`,
  `..\uff0f${CONDA_NAME}`,
  `\uff0e\uff0e\uff0f${CONDA_NAME}`,
  `..\u2044${CONDA_NAME}`,
  `..\uff3c${CONDA_NAME}`,
  `victim-1.0-0\uff0econda`,
  ` ${CONDA_NAME}`,
  `${CONDA_NAME} `,
  `${CONDA_NAME}\n`,
  `${CONDA_NAME}\r\nX-Evil: 1`,
  `${CONDA_NAME}\t`,
  `victim-1.0-0.CONDA`,
  `${CONDA_NAME}.`,
  `victim-1.0-0.tar.bz2.conda`,
  `victim-1.0-0.tar.gz`,
  `victim-1.0-0.whl`,
  "",
  "a".repeat(300) + ".conda",
  "\u00e9".repeat(200) + ".conda",
  `victim-1.0-0.conda\u0085`,
  `vi\u0307ctim-1.0-0.conda`,
  `\u0076ictim-1.0-0.conda\u034f`,
];

/**
 * Package names carrying the tricks themselves, so that `info/index.json`
 * agrees with the filename: only the server's filename policy stands
 * between them and the channel.
 */
const HOSTILE_PACKAGE_NAMES: readonly string[] = [
  "\u202evictim",
  "vic\u200btim",
  "vic\ufefftim",
  "linux\uff0fvictim",
  "x\u2215victim",
  "x\u2044victim",
  "\uff56\uff49\uff43\uff54\uff49\uff4d",
  "vic tim",
  "victim%2f..",
  "victim\u00a0",
  "vi\u0307ctim",
  "victim\u2028x",
  "\u0430victim",
];

function _rfc8187(text: string): string {
  return encodeURIComponent(text).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16)}`);
}

/** Whether `text` can be an HTTP header value (Latin-1, no CR, LF or NUL). */
function _headerSafe(text: string): boolean {
  return text !== "" && /^[\u0020-\u007e\u0080-\u00ff\t]*$/.test(text) && text.trim() === text;
}

async function _filenames(corpus: _Corpus, material: _Material): Promise<void> {
  const token = corpus.tokenPart();
  const channel = encodeURIComponent(corpus.channelName);
  const send = (kind: string, filename: string, data: Uint8Array) => {
    if (!/[\r\n"]/.test(filename)) {
      corpus.postForm(`${kind}/form`, [token, corpus.artifact(filename, data)]);
    }
    corpus.postForm(`${kind}/form-rfc8187`, [token, {
      head: `Content-Disposition: form-data; name="artifact"; filename*=UTF-8''${
        _rfc8187(filename)
      }`,
      data,
    }]);
    const encoded = encodeURIComponent(filename);
    corpus.add(`${kind}/put`, "PUT", `/linux-64/${encoded}`, corpus.bearer(), data);
    corpus.add(
      `${kind}/put-channel`,
      "PUT",
      `/${channel}/linux-64/${encoded}`,
      corpus.bearer(),
      data,
    );
    corpus.add(
      `${kind}/quetz`,
      "POST",
      `/api/channels/${channel}/upload/${encoded}`,
      { "x-api-key": corpus.token },
      data,
    );
    if (_headerSafe(filename)) {
      corpus.add(`${kind}/legacy`, "POST", "/", {
        ...corpus.bearer(),
        "content-type": "application/octet-stream",
        "x-file-name": filename,
      }, data);
    }
  };
  for (const filename of HOSTILE_FILENAMES) {
    send(
      "filename/hostile",
      filename,
      filename.includes(".tar.bz2") ? material.bz2 : material.conda,
    );
  }
  for (const name of HOSTILE_PACKAGE_NAMES) {
    for (const format of [".conda", ".tar.bz2"] as const) {
      const spec = { ...VICTIM, name, format };
      send("filename/consistent-trick", packageFilename(spec), await buildPackage(spec));
    }
  }
}

/** `info/index.json` contents and fields that a package must not be accepted with. */
async function _indexJsonLies(corpus: _Corpus): Promise<void> {
  const raw: [string, string | Uint8Array | null][] = [
    ["not-json", "{not json"],
    ["array", "[]"],
    ["number", "42"],
    ["null", "null"],
    ["string", '"victim"'],
    ["empty", ""],
    ["invalid-utf8", Uint8Array.of(0x7b, 0xff, 0xfe, 0x7d)],
    ["bom", "\ufeff{}"],
    ["deep-nesting", "[".repeat(100_000) + "]".repeat(100_000)],
    ["missing", null],
  ];
  const fields: [string, Record<string, unknown>][] = [
    ["no-name", { name: undefined }],
    ["no-version", { version: undefined }],
    ["no-build", { build: undefined }],
    ["name-number", { name: 42 }],
    ["version-null", { version: null }],
    ["build-array", { build: ["0"] }],
    ["name-empty", { name: "" }],
    ["name-lie", { name: "other" }],
    ["version-lie", { version: "9.9" }],
    ["build-lie", { build: "1" }],
    ["name-traversal", { name: "../victim" }],
    ["subdir-no-arch", { subdir: "plan9" }],
    ["subdir-empty", { subdir: "" }],
    ["subdir-traversal", { subdir: "../linux-64" }],
    ["subdir-nested", { subdir: "linux-64/../../etc" }],
    ["subdir-case", { subdir: "LINUX-64" }],
    ["subdir-nul", { subdir: "linux-64\u0000" }],
    ["subdir-space", { subdir: "noarch " }],
    ["subdir-number", { subdir: 64 }],
    ["subdir-missing", {
      subdir: undefined,
      platform: undefined,
      arch: undefined,
      noarch: undefined,
    }],
    ["subdir-derived-traversal", { subdir: undefined, platform: "linux", arch: "../../etc" }],
    ["subdir-spool", { subdir: ".upload-spool" }],
    ["subdir-dot", { subdir: "." }],
  ];
  const specs: [string, PackageSpec][] = [];
  for (const format of [".conda", ".tar.bz2"] as const) {
    for (const [variant, content] of raw) {
      specs.push([`index-json/${variant}`, {
        ...VICTIM,
        format,
        infoFiles: { "info/index.json": content },
      }]);
    }
    for (const [variant, extraIndex] of fields) {
      specs.push([`index-json/${variant}`, { ...VICTIM, format, extraIndex }]);
    }
  }
  const built = await Promise.all(specs.map(([, spec]) => buildPackage(spec)));
  for (const [i, [kind, spec]] of specs.entries()) {
    corpus.upload(kind, packageFilename(spec), built[i]!);
  }
}

/** Recomputes a tar header block's checksum after its fields were edited. */
function _setTarChecksum(block: Uint8Array): Uint8Array {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.set(encoder.encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
  return block;
}

function _indexJsonBytes(extra: Record<string, unknown> = {}): Uint8Array {
  return encoder.encode(JSON.stringify({
    arch: "x86_64",
    build: "0",
    build_number: 0,
    depends: [],
    license: "MIT",
    name: "victim",
    platform: "linux",
    subdir: "linux-64",
    timestamp: 1700000000000,
    version: "1.0",
    ...extra,
  }));
}

/** A tar stream whose first header is edited by `edit` (checksum recomputed unless `keepSum`). */
function _editedTar(
  edit: (header: Uint8Array) => void,
  options: { keepSum?: boolean; name?: string; data?: Uint8Array; type?: string } = {},
): Uint8Array {
  const data = options.data ?? _indexJsonBytes();
  const header = tarHeader(options.name ?? "info/index.json", data.length, {
    type: options.type ?? "0",
  }).slice();
  edit(header);
  if (!options.keepSum) _setTarChecksum(header);
  const padding = new Uint8Array((512 - (data.length % 512)) % 512);
  return concatBytes([header, data, padding, tarEnd()]);
}

function _paxRecord(text: string): Uint8Array {
  return encoder.encode(text);
}

/** Info tar streams that must not yield an acceptable `info/index.json`. */
function _hostileInfoTars(): [string, Uint8Array][] {
  const index = _indexJsonBytes();
  const paxHeader = (records: Uint8Array) =>
    concatBytes([
      tarHeader("pax", records.length, { type: "x" }),
      records,
      new Uint8Array((512 - (records.length % 512)) % 512),
    ]);
  return [
    [
      "index-is-directory",
      buildTar([{ name: "info/index.json", data: "", options: { type: "5" } }]),
    ],
    [
      "index-is-symlink",
      buildTar([{
        name: "info/index.json",
        data: "",
        options: { type: "2", linkName: "../../../etc/passwd" },
      }]),
    ],
    [
      "index-is-hardlink",
      buildTar([{
        name: "info/index.json",
        data: "",
        options: { type: "1", linkName: "info/about.json" },
      }]),
    ],
    ["bad-checksum", _editedTar((h) => (h[0] = 0x4a), { keepSum: true })],
    ["size-not-octal", _editedTar((h) => h.set(encoder.encode("zzzzzzzzzzz\0"), 124))],
    [
      "size-negative-base256",
      _editedTar((h) => h.set(Uint8Array.of(0xff, ...new Uint8Array(11).fill(0xff)), 124)),
    ],
    [
      "size-huge-base256",
      _editedTar((h) => h.set(Uint8Array.of(0x80, ...new Uint8Array(11).fill(0xff)), 124)),
    ],
    [
      "index-declared-100mib",
      _editedTar((h) =>
        h.set(encoder.encode((100 * MiB).toString(8).padStart(11, "0") + "\0"), 124)
      ),
    ],
    ["index-declared-beyond-end", concatBytes([tarHeader("info/index.json", 5000), index])],
    [
      "pax-size-garbage",
      concatBytes([
        paxHeader(_paxRecord("15 size=abcdef\n")),
        tarHeader("info/index.json", index.length),
        index,
        tarEnd(),
      ]),
    ],
    [
      "pax-length-lie",
      concatBytes([
        paxHeader(_paxRecord("999 path=info/index.json\n")),
        tarHeader("x", index.length),
        index,
        tarEnd(),
      ]),
    ],
    [
      "gnu-longname-2mib",
      concatBytes([tarHeader("././@LongLink", 2 * MiB, { type: "L" }), new Uint8Array(1024)]),
    ],
    ["pax-2mib", concatBytes([tarHeader("pax", 2 * MiB, { type: "x" }), new Uint8Array(1024)])],
    ["only-end-marker", tarEnd()],
    ["traversal-name", buildTar([{ name: "../info/index.json", data: index }])],
    [
      "duplicate-index-lying-last",
      buildTar([
        { name: "info/index.json", data: index },
        { name: "info/index.json", data: _indexJsonBytes({ name: "other" }) },
      ]),
    ],
    ["not-a-tar", encoder.encode("x".repeat(3000))],
  ];
}

function _zstd(data: Uint8Array): Uint8Array {
  return new Uint8Array(zlib.zstdCompressSync(data));
}

function _condaWith(
  infoMember: Uint8Array,
  options: { name?: string; pkg?: Uint8Array } = {},
): Uint8Array {
  const members: ZipEntry[] = [
    { name: "metadata.json", data: JSON.stringify({ conda_pkg_format_version: 2 }) },
    { name: `pkg-${VICTIM_STEM}.tar.zst`, data: options.pkg ?? _zstd(tarEnd()) },
    { name: options.name ?? `info-${VICTIM_STEM}.tar.zst`, data: infoMember },
  ];
  return buildZip(members);
}

async function _tarTricks(corpus: _Corpus): Promise<void> {
  for (const [variant, tar] of _hostileInfoTars()) {
    corpus.upload(`tar/${variant}`, CONDA_NAME, _condaWith(_zstd(tar)));
    corpus.upload(`tar/${variant}`, BZ2_NAME, await bzip2Compress(tar));
  }
}

/** Offsets of a zip's end record and its last central directory entry (the info member). */
function _zipLayout(zip: Uint8Array): { eocd: number; cd: number; lastEntry: number } {
  const view = new DataView(zip.buffer, zip.byteOffset, zip.byteLength);
  const eocd = zip.length - 22;
  if (view.getUint32(eocd, true) !== 0x06054b50) throw new Error("Cannot find the zip end record");
  const cd = view.getUint32(eocd + 16, true);
  let at = cd;
  let lastEntry = cd;
  while (at < eocd && view.getUint32(at, true) === 0x02014b50) {
    lastEntry = at;
    at += 46 + view.getUint16(at + 28, true) + view.getUint16(at + 30, true) +
      view.getUint16(at + 32, true);
  }
  return { eocd, cd, lastEntry };
}

function _patched(
  zip: Uint8Array,
  patch: (view: DataView, layout: ReturnType<typeof _zipLayout>) => void,
): Uint8Array {
  const copy = zip.slice();
  patch(new DataView(copy.buffer), _zipLayout(copy));
  return copy;
}

function _zipTricks(corpus: _Corpus, material: _Material): void {
  const zip = material.conda;
  const infoName = `info-${VICTIM_STEM}.tar.zst`;
  const variants: [string, Uint8Array][] = [
    [
      "entries-65535",
      _patched(zip, (v, l) => {
        v.setUint16(l.eocd + 8, 0xffff, true);
        v.setUint16(l.eocd + 10, 0xffff, true);
      }),
    ],
    [
      "directory-beyond-file",
      _patched(zip, (v, l) => v.setUint32(l.eocd + 16, zip.length + 100, true)),
    ],
    ["directory-size-huge", _patched(zip, (v, l) => v.setUint32(l.eocd + 12, 0xfffffff0, true))],
    ["member-size-huge", _patched(zip, (v, l) => v.setUint32(l.lastEntry + 20, 0x7fffffff, true))],
    [
      "member-size-ffffffff-no-zip64",
      _patched(zip, (v, l) => v.setUint32(l.lastEntry + 20, 0xffffffff, true)),
    ],
    [
      "local-offset-at-directory",
      _patched(zip, (v, l) => v.setUint32(l.lastEntry + 42, l.cd, true)),
    ],
    [
      "local-offset-beyond-file",
      _patched(zip, (v, l) => v.setUint32(l.lastEntry + 42, 0x7ffffff0, true)),
    ],
    ["method-bzip2", _patched(zip, (v, l) => v.setUint16(l.lastEntry + 10, 12, true))],
    ["method-deflate-on-zstd", _patched(zip, (v, l) => v.setUint16(l.lastEntry + 10, 8, true))],
    ["encrypted", _patched(zip, (v, l) => v.setUint16(l.lastEntry + 8, 1, true))],
    [
      "renamed-info",
      _patched(zip, (v, l) => v.setUint8(l.lastEntry + 46 + infoName.length - 1, 0x78)),
    ],
    ["comment-length-lie", _patched(zip, (v, l) => v.setUint16(l.eocd + 20, 5, true))],
    ["bad-directory-signature", _patched(zip, (v, l) => v.setUint32(l.cd, 0x12345678, true))],
    ["name-length-overflow", _patched(zip, (v, l) => v.setUint16(l.lastEntry + 28, 0xffff, true))],
    ["empty-zip", buildZip([])],
    ["only-metadata", buildZip([{ name: "metadata.json", data: "{}" }])],
    ["info-is-nested-zip", _condaWith(material.conda)],
    [
      "info-traversal-name",
      _condaWith(_zstd(tarEnd()), { name: `info-../../${VICTIM_STEM}.tar.zst` }),
    ],
    ["info-is-bzip2", _condaWith(material.bz2)],
    ["eocd-only", zip.subarray(zip.length - 22)],
  ];
  const zip64 = material.condaVariants[1]!;
  const view = new DataView(zip64.buffer, zip64.byteOffset, zip64.byteLength);
  const locator = zip64.length - 22 - 20;
  if (view.getUint32(locator, true) === 0x07064b50) {
    const beyond = zip64.slice();
    new DataView(beyond.buffer).setBigUint64(locator + 8, BigInt(zip64.length) * 4n, true);
    variants.push(["zip64-locator-beyond", beyond]);
    const huge = zip64.slice();
    new DataView(huge.buffer).setBigUint64(locator + 8, 2n ** 62n, true);
    variants.push(["zip64-locator-huge", huge]);
    const record = Number(view.getBigUint64(locator + 8, true));
    const entries = zip64.slice();
    new DataView(entries.buffer).setBigUint64(record + 32, 2n ** 60n, true);
    variants.push(["zip64-entries-huge", entries]);
  }
  for (const [variant, bytes] of variants) corpus.upload(`zip/${variant}`, CONDA_NAME, bytes);
}

/** A zstd frame of raw and RLE blocks: `head`, then `length` bytes of `byte`. */
function _zstdRleBomb(head: Uint8Array, length: number, byte: number): Uint8Array {
  const BLOCK = 128 * KiB;
  const chunks: Uint8Array[] = [Uint8Array.of(0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38)];
  const blockHeader = (size: number, type: number, last: boolean) => {
    const value = (size << 3) | (type << 1) | (last ? 1 : 0);
    return Uint8Array.of(value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff);
  };
  chunks.push(blockHeader(head.length, 0, length === 0), head);
  for (let left = length; left > 0; left -= BLOCK) {
    const size = Math.min(BLOCK, left);
    chunks.push(blockHeader(size, 1, left <= BLOCK), Uint8Array.of(byte));
  }
  return concatBytes(chunks);
}

/**
 * Decompression bombs: tiny files whose info section expands to a GiB. The
 * server must stop each at its scanning bound. The bzip2 one costs the
 * server about a second of CPU per 256 MiB scanned, so there is one.
 */
async function _bombs(corpus: _Corpus): Promise<void> {
  // .conda: zstd RLE blocks, 1 GiB of a member inside info/ and then of one outside it
  for (const name of ["info/bomb.bin", "lib/bomb.bin"]) {
    const bomb = _zstdRleBomb(tarHeader(name, GiB), GiB, 0x41);
    corpus.upload("bomb/zstd-1gib", CONDA_NAME, _condaWith(bomb));
  }
  // .conda: info/index.json that claims 15 MiB of one byte (under the 16 MiB file bound)
  const big = _zstdRleBomb(tarHeader("info/index.json", 15 * MiB), 15 * MiB, 0x20);
  corpus.upload("bomb/zstd-index-15mib", CONDA_NAME, _condaWith(big));
  // .conda: raw DEFLATE of 64 MiB of zeros (zip bomb) in front of the info member
  const zeros = new Uint8Array(MiB);
  const flushed = new Uint8Array(
    zlib.deflateRawSync(zeros, { finishFlush: zlib.constants.Z_SYNC_FLUSH }),
  );
  const deflated = concatBytes([
    ...Array.from({ length: 64 }, () => flushed),
    Uint8Array.of(0x03, 0x00),
  ]);
  const zip = _patched(_condaWith(deflated), (v, l) => v.setUint16(l.lastEntry + 10, 8, true));
  corpus.upload("bomb/deflate-64mib", CONDA_NAME, zip);
  // .tar.bz2: a multi-stream file, 8 MiB of zeros per stream, 1 GiB member before info/
  const eight = new Uint8Array(8 * MiB);
  const [first, rest] = await Promise.all([
    bzip2Compress(concatBytes([tarHeader("lib/bomb.bin", GiB), eight])),
    bzip2Compress(eight),
  ]);
  corpus.upload(
    "bomb/bzip2-1gib",
    BZ2_NAME,
    concatBytes([first, ...Array.from({ length: 127 }, () => rest)]),
  );
}

function _wrongMagic(corpus: _Corpus, material: _Material): void {
  const cases: [string, string, Uint8Array][] = [
    ["conda-bytes-as-bz2", BZ2_NAME, material.conda],
    ["bz2-bytes-as-conda", CONDA_NAME, material.bz2],
    ["empty-conda", CONDA_NAME, new Uint8Array()],
    ["empty-bz2", BZ2_NAME, new Uint8Array()],
    ["magic-only-conda", CONDA_NAME, Uint8Array.of(0x50, 0x4b, 0x03, 0x04)],
    ["magic-only-bz2", BZ2_NAME, encoder.encode("BZh9")],
    [
      "bz2-header-garbage",
      BZ2_NAME,
      concatBytes([encoder.encode("BZh9"), corpus.randomBytes(2000)]),
    ],
    [
      "zip-header-garbage",
      CONDA_NAME,
      concatBytes([Uint8Array.of(0x50, 0x4b, 0x03, 0x04), corpus.randomBytes(2000)]),
    ],
    ["gzip-as-bz2", BZ2_NAME, new Uint8Array(zlib.gzipSync(material.bz2))],
    ["zstd-as-conda", CONDA_NAME, _zstd(material.conda)],
    ["html-as-conda", CONDA_NAME, encoder.encode("<html><body>not found</body></html>")],
    ["bz2-level-digit-0", BZ2_NAME, Uint8Array.from(material.bz2, (b, i) => (i === 3 ? 0x30 : b))],
  ];
  for (const [variant, filename, bytes] of cases) {
    corpus.upload(`magic/${variant}`, filename, bytes);
  }
}

function _otherRoutes(corpus: _Corpus, material: _Material): void {
  const channel = encodeURIComponent(corpus.channelName);
  const put = (variant: string, path: string, body: Uint8Array, headers = corpus.bearer()) =>
    corpus.add(`route/${variant}`, "PUT", path, headers, body);
  put("put-unknown-subdir", `/plan9-64/${CONDA_NAME}`, material.conda);
  put("put-spool-dir", `/.upload-spool/${CONDA_NAME}`, material.conda);
  put("put-wrong-subdir", `/noarch/${CONDA_NAME}`, material.conda);
  put("put-wrong-channel", `/not-${channel}/linux-64/${CONDA_NAME}`, material.conda);
  put("put-no-token", `/linux-64/${CONDA_NAME}`, material.conda, {});
  put("put-sha-mismatch", `/linux-64/${CONDA_NAME}`, material.conda, {
    ...corpus.bearer(),
    "x-checksum-sha256": "0".repeat(64),
  });
  put("put-checksum-deploy", `/linux-64/${CONDA_NAME}`, material.conda, {
    ...corpus.bearer(),
    "x-checksum-deploy": "true",
  });
  put("put-truncated", `/linux-64/${CONDA_NAME}`, material.conda.subarray(0, 500));
  put("put-encoded-slash", `/linux-64%2f..%2f/${CONDA_NAME}`, material.conda);
  corpus.add("route/legacy-no-name", "POST", "/", {
    ...corpus.bearer(),
    "content-type": "application/octet-stream",
  }, material.conda);
  corpus.add("route/legacy-no-token", "POST", "/", {
    "content-type": "application/octet-stream",
    "x-file-name": CONDA_NAME,
  }, material.conda);
  corpus.add("route/legacy-sha-mismatch", "POST", "/", {
    ...corpus.bearer(),
    "content-type": "application/octet-stream",
    "x-file-name": CONDA_NAME,
    "x-file-sha256": "f".repeat(64),
  }, material.conda);
  corpus.add(
    "route/quetz-wrong-channel",
    "POST",
    `/api/channels/not-${channel}/upload/${CONDA_NAME}`,
    {
      "x-api-key": corpus.token,
    },
    material.conda,
  );
  corpus.add(
    "route/quetz-sha-mismatch",
    "POST",
    `/api/channels/${channel}/upload/${CONDA_NAME}?sha256=${"0".repeat(64)}`,
    {
      "x-api-key": corpus.token,
    },
    material.conda,
  );
  const prefix = corpus.form([{
    name: "file",
    filename: CONDA_NAME,
    data: material.conda.subarray(0, 700),
  }]);
  corpus.add("route/prefix-truncated-package", "POST", `/api/v1/upload/${channel}`, {
    ...corpus.bearer(),
    "content-type": `multipart/form-data; boundary=${prefix.boundary}`,
  }, prefix.body);
  const prefixWrong = corpus.form([{ name: "file", filename: CONDA_NAME, data: material.conda }]);
  corpus.add("route/prefix-wrong-channel", "POST", `/api/v1/upload/not-${channel}`, {
    ...corpus.bearer(),
    "content-type": `multipart/form-data; boundary=${prefixWrong.boundary}`,
  }, prefixWrong.body);
  corpus.add(
    "route/prefix-sha-mismatch",
    "POST",
    `/api/v1/upload/${channel}`,
    {
      ...corpus.bearer(),
      "content-type": `multipart/form-data; boundary=${prefixWrong.boundary}`,
    },
    corpus.form([{
      name: "file",
      filename: CONDA_NAME,
      extra: [`x-file-sha256: ${"0".repeat(64)}`],
      data: material.conda,
    }], { boundary: prefixWrong.boundary }).body,
  );
  for (const method of ["PATCH", "OPTIONS", "PROPFIND", "MKCOL", "LOCK"]) {
    corpus.add(
      `route/method-${method.toLowerCase()}`,
      method,
      `/linux-64/${CONDA_NAME}`,
      corpus.bearer(),
      material.conda,
    );
  }
}

/** GET, HEAD and DELETE of paths outside the channel's servable files. */
function _hostilePaths(corpus: _Corpus): void {
  const paths = [
    "/..%2f..%2fetc%2fpasswd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/..%252f..%252fetc%252fpasswd",
    "/.upload-spool/",
    "/.upload-spool/x.part",
    "/.artifact-upload-handler.lock",
    "/linux-64/.repodata.json.0.tmp",
    "/%00",
    "/linux-64/%00",
    "/linux-64/repodata.json%00",
    "/linux-64/repodata.json%00.html",
    "/linux-64/..%5c..%5cetc%5cpasswd",
    "/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "/%ff",
    "/linux-64%2f..%2f..%2fetc",
    "/noarch/%2e%2e/%2e%2e/etc/passwd",
    `/${"a/".repeat(2000)}x`,
    `/${"x".repeat(8000)}`,
    "/linux-64/%E2%80%AEvictim-1.0-0.conda",
    "/linux-64%EF%BC%8Fvictim-1.0-0.conda",
    "/..%E2%88%95..%E2%88%95etc%E2%88%95passwd",
    "/plan9-64/repodata.json",
    "/linux-64/victim-1.0-0.conda",
    "/noarch/repodata.json/x",
    "/channeldata.json%2f..%2f.artifact-upload-handler.lock",
  ];
  for (const path of paths) {
    corpus.add("path/get", "GET", path, {});
    corpus.add("path/head", "HEAD", path, {});
  }
  // DELETE with a valid token: none of these may name a file, least of all the seed packages.
  const deletes = [
    "/linux-64/..%2fseed-1.0-0.conda",
    "/linux-64/seed%2f..%2fseed-1.0-0.conda",
    "/linux-64/%2e%2e%2flinux-64%2fseed-1.0-0.conda",
    "/noarch/..%5cseed-1.0-0.tar.bz2",
    "/linux-64/seed-1.0-0.conda%00",
    "/linux-64/seed-1.0-0.conda%20",
    "/linux-64/SEED-1.0-0.conda",
    "/linux-64/\u202eseed-1.0-0.conda".replace("\u202e", "%E2%80%AE"),
    "/linux-64/repodata.json",
    "/linux-64/index.html",
    "/channeldata.json",
    "/.upload-spool/x.conda",
    "/linux-64/.artifact-upload-handler.lock",
    "/plan9-64/seed-1.0-0.conda",
    `/linux-64/${CONDA_NAME}`,
    `/not-a-channel/linux-64/seed-1.0-0.conda`,
  ];
  for (const path of deletes) corpus.add("path/delete", "DELETE", path, corpus.bearer());
  corpus.add("path/delete-no-token", "DELETE", "/linux-64/seed-1.0-0.conda", {});
  corpus.add("path/delete-wrong-token", "DELETE", "/linux-64/seed-1.0-0.conda", {
    authorization: "Bearer wrong",
  });
}

// ------------------------------------------------------- random fillers

function _randomBoundaryMismatch(corpus: _Corpus, material: _Material): void {
  const parts = [corpus.tokenPart(), corpus.artifact(BZ2_NAME, material.bz2)];
  const { body, boundary } = corpus.form(parts);
  // A prefix of the body's boundary would find it (and a following "--" would
  // close the body at once: a legitimate empty form), so none is used.
  let other = corpus.boundary();
  if (boundary.startsWith(other)) {
    other = boundary.length < 70
      ? `${boundary}x`
      : `${boundary[0] === "x" ? "y" : "x"}${boundary.slice(1)}`;
  }
  corpus.add("multipart-random/boundary-mismatch", "POST", "/", {
    "content-type": _contentType(other),
  }, body);
}

function _randomManyParts(corpus: _Corpus, material: _Material): void {
  const fields: _Part[] = Array.from(
    { length: corpus.int(16, 64) },
    (_, i) => ({ name: `f${i}`, data: "v".repeat(corpus.int(0, 20)) }),
  );
  const parts = [corpus.tokenPart(), corpus.artifact(CONDA_NAME, material.conda), ...fields];
  // Shuffle, keeping the token before the artifact.
  const rest = parts.slice(2);
  const at = corpus.int(0, rest.length);
  rest.splice(at, 0, parts[1]!);
  rest.splice(corpus.int(0, rest.indexOf(parts[1]!)), 0, parts[0]!);
  corpus.postForm("multipart-random/many-parts", rest);
}

function _randomHugePartHeader(corpus: _Corpus, material: _Material): void {
  const pad = "h".repeat(corpus.int(16 * KiB + 1, 48 * KiB));
  const artifact = { ...corpus.artifact(CONDA_NAME, material.conda), extra: [`X-Pad: ${pad}`] };
  const parts = corpus.random() < 0.5 ? [corpus.tokenPart(), artifact] : [
    { ...corpus.tokenPart(), extra: [`X-Pad: ${pad}`] },
    corpus.artifact(CONDA_NAME, material.conda),
  ];
  corpus.postForm("multipart-random/huge-part-header", parts);
}

function _randomGarbagePackage(corpus: _Corpus): void {
  const filename = corpus.random() < 0.5 ? CONDA_NAME : BZ2_NAME;
  corpus.upload("archive-random/garbage", filename, corpus.randomBytes(corpus.int(0, 3000)));
}

/** A delimiter injected into the artifact's bytes: the artifact ends early, truncated. */
function _randomInjectedBoundary(corpus: _Corpus, material: _Material): void {
  const [filename, bytes] = corpus.random() < 0.5
    ? [CONDA_NAME, material.conda]
    : [BZ2_NAME, material.bz2];
  const boundary = `inj${corpus.int(0, 1e9)}`;
  const cut = corpus.int(0, bytes.length - 1);
  const tail = corpus.pick([
    "--",
    "\r\n",
    "\r\n\r\n",
    "--\r\n",
    "junk",
    '\r\nContent-Disposition: form-data; name="x"\r\n\r\n',
  ]);
  const data = concatBytes([
    bytes.subarray(0, cut),
    encoder.encode(`\r\n--${boundary}${tail}`),
    bytes.subarray(cut),
  ]);
  corpus.postForm("multipart-random/injected-boundary", [
    corpus.tokenPart(),
    corpus.artifact(filename, data),
  ], { boundary });
}

function _randomIndexJson(corpus: _Corpus): void {
  const pieces = [
    "{",
    "}",
    "[",
    "]",
    '"name"',
    '"victim"',
    '"version"',
    '"1.0"',
    ":",
    ",",
    "null",
    "0",
    '"build"',
    '"subdir"',
    '"linux-64"',
    "\u0000",
    "\\",
    '"',
  ];
  let text = "";
  for (let i = corpus.int(0, 30); i > 0; i--) text += corpus.pick(pieces);
  const tar = buildTar([{ name: "info/index.json", data: text }]);
  corpus.upload("archive-random/index-json", CONDA_NAME, _condaWith(_zstd(tar)));
}

function _randomTruncatedInfoMember(corpus: _Corpus): void {
  const tar = buildTar([
    { name: "info/index.json", data: _indexJsonBytes() } satisfies TarEntry,
    { name: "info/about.json", data: "{}" },
  ]);
  const frame = _zstd(tar);
  const cut = corpus.int(0, frame.length - 1);
  corpus.upload(
    "archive-random/truncated-info-member",
    CONDA_NAME,
    _condaWith(frame.subarray(0, cut)),
  );
}
