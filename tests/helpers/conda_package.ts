/**
 * Builds real conda packages (`.tar.bz2` and `.conda`) for tests, laid out as
 * conda-build and conda-package-handling write them, including large ones
 * streamed to disk with flat memory.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import zlib from "node:zlib";
import {
  buildTar,
  concatBytes,
  tarEnd,
  type TarEntry,
  tarHeader,
  tarPadding,
} from "./tar_writer.ts";
import { buildZip, type ZipEntry, ZipFileWriter, type ZipOptions } from "./zip_writer.ts";

/** What package to build. Only `name` and `version` are required. */
export interface PackageSpec {
  /** Package name. */
  name: string;
  /** Package version. */
  version: string;
  /** Build string. @default {"0"} */
  build?: string;
  /** Build number. @default {0} */
  buildNumber?: number;
  /** Conda subdir; `"noarch"` makes a `noarch: generic` package. @default {"linux-64"} */
  subdir?: string;
  /** Run dependencies. @default {[]} */
  depends?: string[];
  /** License. @default {"MIT"} */
  license?: string;
  /** Archive format. @default {".conda"} */
  format?: ".tar.bz2" | ".conda";
  /** Merged into index.json last (to override or lie about fields; `undefined` drops a key). */
  extraIndex?: Record<string, unknown>;
  /** info/about.json. @default {{summary, license, home}} */
  about?: Record<string, unknown>;
  /** info/run_exports.json, written only when given. */
  runExports?: Record<string, unknown>;
  /** Payload files. @default {{"share/<name>/README.txt": "..."}} */
  files?: Record<string, string | Uint8Array>;
  /** `.tar.bz2` only: put the info/ members after the payload. @default {false} */
  infoLast?: boolean;
  /**
   * Raw info/ files that replace the generated ones (`"info/index.json": "{not json"`),
   * or remove them (`null`); new names are added after the generated ones.
   */
  infoFiles?: Record<string, string | Uint8Array | null>;
  /**
   * `.conda` only: put `info-*.tar.zst` before `pkg-*.tar.zst` (conda-package-handling 1.x
   * order) instead of after it (2.x order).
   * @default {false}
   */
  condaInfoFirst?: boolean;
  /** `.conda` only: options for the outer zip (e.g. force ZIP64 records). */
  zip?: ZipOptions;
}

const encoder = new TextEncoder();
const TIMESTAMP_MS = 1700000000000;
const ZSTD_RAW_BLOCK = 128 * 1024;

/** `${name}-${version}-${build}${format}`. */
export function packageFilename(spec: PackageSpec): string {
  return `${_stem(spec)}${spec.format ?? ".conda"}`;
}

function _stem(spec: PackageSpec): string {
  return `${spec.name}-${spec.version}-${spec.build ?? "0"}`;
}

function _platformArch(subdir: string): [string | null, string | null] {
  if (subdir === "noarch") return [null, null];
  const [platform = subdir, arch = ""] = subdir.split("-", 2);
  const archNames: Record<string, string> = { "64": "x86_64", "32": "x86" };
  return [platform, archNames[arch] ?? arch];
}

/** What goes into info/index.json, as conda-build writes it (keys sorted). */
export function indexJson(spec: PackageSpec): Record<string, unknown> {
  const subdir = spec.subdir ?? "linux-64";
  const [platform, arch] = _platformArch(subdir);
  const index: Record<string, unknown> = {
    arch,
    build: spec.build ?? "0",
    build_number: spec.buildNumber ?? 0,
    depends: spec.depends ?? [],
    license: spec.license ?? "MIT",
    name: spec.name,
  };
  if (subdir === "noarch") index.noarch = "generic";
  Object.assign(index, { platform, subdir, timestamp: TIMESTAMP_MS, version: spec.version });
  return { ...index, ...spec.extraIndex };
}

function _payload(spec: PackageSpec): [string, Uint8Array][] {
  const files = spec.files ??
    { [`share/${spec.name}/README.txt`]: `${spec.name} ${spec.version}: a test package\n` };
  return Object.entries(files).map((
    [path, data],
  ) => [path, typeof data === "string" ? encoder.encode(data) : data]);
}

function _json(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value, null, 2) + "\n");
}

interface _PathEntry {
  path: string;
  size: number;
  sha256?: string;
}

function _infoEntries(spec: PackageSpec, paths: _PathEntry[]): TarEntry[] {
  const license = spec.license ?? "MIT";
  const generated = new Map<string, Uint8Array>();
  generated.set("info/index.json", _json(indexJson(spec)));
  generated.set(
    "info/about.json",
    _json(
      spec.about ?? {
        summary: `The ${spec.name} test package`,
        license,
        home: `https://example.org/${spec.name}`,
      },
    ),
  );
  generated.set(
    "info/paths.json",
    _json({
      paths: paths.map((p) => ({
        _path: p.path,
        path_type: "hardlink",
        ...(p.sha256 === undefined ? {} : { sha256: p.sha256 }),
        size_in_bytes: p.size,
      })),
      paths_version: 1,
    }),
  );
  if (spec.runExports) generated.set("info/run_exports.json", _json(spec.runExports));
  generated.set("info/files", encoder.encode(paths.map((p) => p.path).join("\n") + "\n"));
  for (const [name, data] of Object.entries(spec.infoFiles ?? {})) {
    if (data === null) generated.delete(name);
    else generated.set(name, typeof data === "string" ? encoder.encode(data) : data);
  }
  return [...generated].map(([name, data]) => ({ name, data }));
}

function _sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** A bzip2 stream with no block: "BZh9", the end-of-stream magic and a zero CRC (14 bytes). */
export const EMPTY_BZIP2_STREAM: Uint8Array<ArrayBuffer> = new Uint8Array([
  0x42,
  0x5a,
  0x68,
  0x39,
  0x17,
  0x72,
  0x45,
  0x38,
  0x50,
  0x90,
  0,
  0,
  0,
  0,
]);

/** bzip2-compresses `data` with the system `bzip2` (level 9, 900 kB blocks). */
export async function bzip2Compress(data: Uint8Array): Promise<Uint8Array> {
  const child = new Deno.Command("bzip2", {
    args: ["-c", "-9"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writing = (async () => {
    const writer = child.stdin.getWriter();
    try {
      await writer.write(data);
    } finally {
      await writer.close();
    }
  })();
  const [output] = await Promise.all([child.output(), writing]);
  if (!output.success) {
    throw new Error(`Cannot run bzip2: ${new TextDecoder().decode(output.stderr).trim()}`);
  }
  return output.stdout;
}

/** zstd-compresses `data` with node:zlib. */
function _zstd(data: Uint8Array): Uint8Array {
  return new Uint8Array(zlib.zstdCompressSync(data));
}

/** Builds the bytes of a real conda package. */
export async function buildPackage(spec: PackageSpec): Promise<Uint8Array> {
  const payload = _payload(spec);
  const paths = payload.map(([path, data]) => ({ path, size: data.length, sha256: _sha256(data) }));
  const info = _infoEntries(spec, paths);
  const pkg: TarEntry[] = payload.map(([name, data]) => ({ name, data }));
  if ((spec.format ?? ".conda") === ".tar.bz2") {
    const entries = spec.infoLast ? [...pkg, ...info] : [...info, ...pkg];
    return await bzip2Compress(buildTar(entries));
  }
  const stem = _stem(spec);
  const metadata: ZipEntry = {
    name: "metadata.json",
    data: JSON.stringify({ conda_pkg_format_version: 2 }),
  };
  const infoMember: ZipEntry = { name: `info-${stem}.tar.zst`, data: _zstd(buildTar(info)) };
  const pkgMember: ZipEntry = { name: `pkg-${stem}.tar.zst`, data: _zstd(buildTar(pkg)) };
  const members = spec.condaInfoFirst
    ? [metadata, infoMember, pkgMember]
    : [metadata, pkgMember, infoMember];
  return buildZip(members, spec.zip);
}

/** Builds a package and writes it to `dir` under its {@linkcode packageFilename}; returns the path. */
export async function writePackage(dir: string, spec: PackageSpec): Promise<string> {
  const path = join(dir, packageFilename(spec));
  await Deno.writeFile(path, await buildPackage(spec));
  return path;
}

/** Deterministic, incompressible pseudo-random bytes (xorshift128), `chunkSize` at a time. */
function* _randomChunks(
  total: number,
  chunkSize = 1 << 20,
  seed = 0x9e3779b9,
): Generator<Uint8Array> {
  let x = seed >>> 0, y = 362436069, z = 521288629, w = 88675123;
  let left = total;
  while (left > 0) {
    const n = Math.min(chunkSize, left);
    const words = new Uint32Array(Math.ceil(n / 4));
    for (let i = 0; i < words.length; i++) {
      const t = x ^ (x << 11);
      x = y;
      y = z;
      z = w;
      w = (w ^ (w >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
      words[i] = w;
    }
    yield new Uint8Array(words.buffer, 0, n);
    left -= n;
  }
}

/**
 * Wraps a byte stream into one zstd frame made of raw (uncompressed) blocks:
 * valid zstd, as fast as copying, and right for incompressible data.
 */
async function* _zstdRawFrame(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  // magic, frame header descriptor (no checksum, no content size), window 128 KiB
  yield new Uint8Array([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38]);
  const block = new Uint8Array(ZSTD_RAW_BLOCK);
  let filled = 0;
  let held: Uint8Array | undefined;
  const blockHeader = (size: number, last: boolean) => {
    const value = (size << 3) | (last ? 1 : 0);
    return new Uint8Array([value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff]);
  };
  for await (const chunk of source) {
    let at = 0;
    while (at < chunk.length) {
      const n = Math.min(chunk.length - at, ZSTD_RAW_BLOCK - filled);
      block.set(chunk.subarray(at, at + n), filled);
      filled += n;
      at += n;
      if (filled === ZSTD_RAW_BLOCK) {
        if (held) yield concatBytes([blockHeader(held.length, false), held]);
        held = block.slice();
        filled = 0;
      }
    }
  }
  if (filled > 0) {
    if (held) yield concatBytes([blockHeader(held.length, false), held]);
    held = block.slice(0, filled);
  }
  held ??= new Uint8Array();
  yield concatBytes([blockHeader(held.length, true), held]);
}

function _largeName(spec: PackageSpec): string {
  return `lib/${spec.name}-large.bin`;
}

/**
 * Streams a large package to `path` without holding it in memory. Its payload
 * has one extra file of `payloadBytes` pseudo-random, incompressible bytes.
 *
 * - `.conda`: the `pkg-*.tar.zst` member is one zstd frame of raw blocks,
 *   streamed into the zip with its CRC patched in afterwards.
 * - `.tar.bz2`: a valid multi-stream bzip2 file: one stream for the tar head
 *   (info/ first unless `infoLast`) and the first 1 MiB pseudo-random payload
 *   block, then the bzip2 stream of that same block repeated, then a stream
 *   for the tail (so the payload is that block repeated).
 *
 * Returns the file size.
 */
export async function writeLargePackage(
  path: string,
  spec: PackageSpec,
  payloadBytes: number,
): Promise<number> {
  const payload = _payload(spec);
  const large = _largeName(spec);
  const paths: _PathEntry[] = [
    ...payload.map(([p, data]) => ({ path: p, size: data.length, sha256: _sha256(data) })),
    { path: large, size: payloadBytes },
  ];
  const info = _infoEntries(spec, paths);
  const small: TarEntry[] = payload.map(([name, data]) => ({ name, data }));
  if ((spec.format ?? ".conda") === ".conda") {
    const stem = _stem(spec);
    const writer = await ZipFileWriter.create(path, spec.zip);
    const infoMember = _zstd(buildTar(info));
    await writer.addBytes("metadata.json", JSON.stringify({ conda_pkg_format_version: 2 }));
    if (spec.condaInfoFirst) await writer.addBytes(`info-${stem}.tar.zst`, infoMember);
    const tar = function* () {
      yield buildTar(small, { omitEnd: true });
      yield tarHeader(large, payloadBytes);
      yield* _randomChunks(payloadBytes);
      yield tarPadding(payloadBytes);
      yield tarEnd();
    };
    await writer.addStream(`pkg-${stem}.tar.zst`, _zstdRawFrame(tar()));
    if (!spec.condaInfoFirst) await writer.addBytes(`info-${stem}.tar.zst`, infoMember);
    return await writer.close();
  }
  const blockSize = 1 << 20;
  const block = _randomChunks(blockSize, blockSize).next().value as Uint8Array;
  const repeats = Math.floor(payloadBytes / blockSize);
  const rest = payloadBytes - repeats * blockSize;
  const headEntries = spec.infoLast ? small : [...info, ...small];
  const head = concatBytes([
    buildTar(headEntries, { omitEnd: true }),
    tarHeader(large, payloadBytes),
  ]);
  const tail = concatBytes([
    block.subarray(0, rest),
    tarPadding(payloadBytes),
    spec.infoLast ? buildTar(info) : tarEnd(),
  ]);
  // like a real package, the first bzip2 stream holds the tar head and the start of the payload
  const first = repeats > 0 ? concatBytes([head, block]) : head;
  const [headStream, blockStream, tailStream] = await Promise.all([
    bzip2Compress(first),
    bzip2Compress(block),
    bzip2Compress(tail),
  ]);
  const middle = Math.max(0, repeats - 1);
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  const writeAll = async (data: Uint8Array) => {
    let written = 0;
    while (written < data.length) written += await file.write(data.subarray(written));
  };
  await writeAll(headStream);
  for (let i = 0; i < middle; i++) await writeAll(blockStream);
  await writeAll(tailStream);
  return headStream.length + middle * blockStream.length + tailStream.length;
}
