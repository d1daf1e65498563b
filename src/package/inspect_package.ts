/**
 * Inspects an uploaded conda package on local disk: reads its `info/`
 * metadata and checks it against the filename, without reading the payload.
 *
 * @module
 */

import { postInstallFlags, recipeSourceFields } from "./channeldata_hints.ts";
import { type InspectOptions, RECIPE_KEY } from "./info_collector.ts";
import { readCondaInfo } from "./inspect_conda.ts";
import { readTarBz2Info } from "./inspect_tar_bz2.ts";
import { PackageFormatError, PackageReadError } from "./package_errors.ts";
import { MemoryPackageSource, type PackageSource } from "./package_source.ts";
import { parsePackageFilename } from "./package_filename.ts";
import type { JsonObject, PackageFormat, PackageMetadata } from "./package_metadata.ts";
import { isSubdirName, subdirOf } from "./platforms.ts";

export type { InspectOptions } from "./info_collector.ts";

const MAGIC: Record<PackageFormat, { bytes: number[]; what: string }> = {
  ".tar.bz2": { bytes: [0x42, 0x5a, 0x68], what: "bzip2" }, // "BZh"
  ".conda": { bytes: [0x50, 0x4b, 0x03, 0x04], what: "zip" }, // "PK\x03\x04"
};

/** Opens the spool file; one that cannot be opened is a fault of the machine. */
function _openSpool(path: string): { file: Deno.FsFile; size: number } {
  let file: Deno.FsFile | undefined;
  try {
    // Local and just written: synchronous calls cost less than async round trips.
    file = Deno.openSync(path, { read: true });
    return { file, size: file.statSync().size };
  } catch (error) {
    file?.close();
    throw new PackageReadError("Cannot read package: spool file is missing", { cause: error });
  }
}

/** A package held in memory, with a `close` like a file's. */
function _inMemory(bytes: Uint8Array): { file: PackageSource & { close(): void }; size: number } {
  const source = new MemoryPackageSource(bytes);
  return { file: Object.assign(source, { close() {} }), size: bytes.length };
}

/** Checks the format's magic bytes at the start of `file`, then rewinds it. */
async function _checkMagic(file: PackageSource, format: PackageFormat): Promise<void> {
  const { bytes, what } = MAGIC[format];
  const head = new Uint8Array(bytes.length);
  let filled = 0;
  try {
    while (filled < head.length) {
      const n = await file.read(head.subarray(filled));
      if (n === null || n === 0) break;
      filled += n;
    }
    await file.seek(0, Deno.SeekMode.Start);
  } catch (error) {
    throw new PackageReadError("Cannot read package: spool file is unreadable", { cause: error });
  }
  if (filled < head.length || bytes.some((byte, i) => head[i] !== byte)) {
    throw new PackageFormatError(`Cannot read package: not a ${what} file`);
  }
}

function _parseObject(data: Uint8Array | undefined): JsonObject | undefined {
  if (data === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
  } catch {
    return undefined;
  }
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? value as JsonObject
    : undefined;
}

function _quote(value: string): string {
  const short = value.length > 80 ? `${value.slice(0, 80)}…` : value;
  return JSON.stringify(short);
}

function _field(index: JsonObject, key: string): string {
  const value = index[key];
  if (typeof value !== "string" || value.length === 0) {
    throw new PackageFormatError(`Cannot accept package: info/index.json has no valid "${key}"`);
  }
  return value;
}

function _checkStem(stem: string, name: string, version: string, build: string): void {
  if (stem === `${name}-${version}-${build}`) return;
  let which: string;
  let value: string;
  if (!stem.startsWith(`${name}-`)) [which, value] = ["name", name];
  else if (!stem.slice(name.length + 1).startsWith(`${version}-`)) {
    [which, value] = ["version", version];
  } else [which, value] = ["build", build];
  throw new PackageFormatError(
    `Cannot accept package: info/index.json ${which} ${_quote(value)} does not match filename ${
      _quote(stem)
    }`,
  );
}

/**
 * Reads and validates the package at `path` (a complete file on local disk),
 * or held whole in memory as `bytes`, uploaded as `filename`. Every failure has a one-line reason: a
 * `PackageFilenameError`/`PackageExtensionError` for a bad filename, a
 * `PackageFormatError` for an unreadable, corrupt or inconsistent package, a
 * `PackageLimitError` for an oversized one, a `PackageReadError` when the
 * file cannot be read (see `package_errors.ts`).
 *
 * @example Usage
 * ```ts ignore
 * const metadata = await inspectPackage("/spool/upload-1", "foo-1.0-0.conda");
 * console.log(metadata.subdir); // "linux-64"
 * ```
 */
export async function inspectPackage(
  path: string | Uint8Array,
  filename: string,
  options: InspectOptions = {},
): Promise<PackageMetadata> {
  const { stem, format } = parsePackageFilename(filename);
  const { file, size } = typeof path === "string" ? _openSpool(path) : _inMemory(path);
  let files: Map<string, Uint8Array>;
  try {
    await _checkMagic(file, format);
    files = format === ".conda"
      ? await readCondaInfo(file, size, stem, options)
      : await readTarBz2Info(file, size, options);
  } finally {
    file.close();
  }
  const indexBytes = files.get("info/index.json");
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(indexBytes));
  } catch {
    throw new PackageFormatError("Cannot accept package: info/index.json is not valid JSON");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new PackageFormatError("Cannot accept package: info/index.json is not a JSON object");
  }
  const index = parsed as JsonObject;
  const name = _field(index, "name");
  const version = _field(index, "version");
  const build = _field(index, "build");
  _checkStem(stem, name, version, build);
  const subdir = subdirOf(index);
  if (subdir === undefined || !isSubdirName(subdir)) {
    throw new PackageFormatError(
      subdir === undefined
        ? "Cannot accept package: info/index.json has no subdir and no platform"
        : `Cannot accept package: ${_quote(subdir)} is not a subdir name`,
    );
  }
  const metadata: PackageMetadata = { format, name, version, build, subdir, index };
  const about = _parseObject(files.get("info/about.json"));
  if (about) metadata.about = about;
  const runExports = _parseObject(files.get("info/run_exports.json"));
  if (runExports) metadata.runExports = runExports;
  metadata.postInstall = postInstallFlags(files.get("info/paths.json"));
  metadata.recipeSource = recipeSourceFields(files.get(RECIPE_KEY));
  return metadata;
}
