/**
 * The channel's `channeldata.json`, with the keys and rules of
 * `conda-index --channeldata`: per package name the newest version, the
 * newest known about.json fields, the subdirs it is in, its run_exports per
 * version and the newest timestamp (in seconds).
 *
 * Records loaded from an existing `repodata.json` carry no about.json or
 * run_exports.json; for those the entry falls back to the channeldata.json
 * read from disk (what this or another process wrote before), as
 * conda-index does when it updates an existing channeldata.json.
 *
 * @module
 */

import { POST_INSTALL_FLAGS } from "../package/channeldata_hints.ts";
import { compareCondaVersions } from "../package/conda_version.ts";
import type { JsonObject } from "../package/package_metadata.ts";
import { canonicalJson } from "./repodata_record.ts";
import type { IndexedPackage } from "./subdir_index.ts";

/** The `channeldata_version` written. */
export const CHANNELDATA_VERSION = 1;

/** Fields taken from the newest package that has a non-empty value. */
export const CHANNELDATA_FIELDS: readonly string[] = [
  "description",
  "dev_url",
  "doc_url",
  "doc_source_url",
  "home",
  "license",
  "source_url",
  "source_git_url",
  "summary",
  "icon_url",
  "icon_hash",
  "tags",
  "identifiers",
  "keywords",
  "recipe_origin",
];

/**
 * Booleans true when any package of the name has them (false when unknown):
 * the post-install flags read from each package's `info/paths.json`.
 */
export const CHANNELDATA_FLAGS: readonly string[] = POST_INSTALL_FLAGS;

/** One indexed package and the subdir that holds it. */
export interface ChanneldataInput {
  /** The subdir holding the package. */
  subdir: string;
  /** The package. */
  pkg: IndexedPackage;
}

/**
 * Computes the channeldata entry of one package name from all its packages,
 * or undefined when there are none. `previous` is the name's entry in the
 * channeldata.json on disk, used for fields the packages do not tell.
 *
 * @example Usage
 * ```ts
 * import { channeldataEntry } from "./channeldata.ts";
 * import { indexedPackage } from "./subdir_index.ts";
 * const pkg = indexedPackage("foo-1.0-0.conda", { name: "foo", version: "1.0" }, {
 *   about: { summary: "Foo" },
 * });
 * const entry = channeldataEntry([{ subdir: "noarch", pkg }]);
 * console.log(entry?.summary, entry?.subdirs); // Foo [ "noarch" ]
 * ```
 */
export function channeldataEntry(
  inputs: readonly ChanneldataInput[],
  previous?: JsonObject,
): JsonObject | undefined {
  if (inputs.length === 0) return undefined;
  const previousVersion = typeof previous?.version === "string" ? previous.version : undefined;
  const rank = _versionRanks([
    ...inputs.map(({ pkg }) => _version(pkg)),
    ...(previousVersion === undefined ? [] : [previousVersion]),
  ]);
  const candidates = inputs
    .map(({ subdir, pkg }) => ({
      subdir,
      pkg,
      version: _version(pkg),
      seconds: _seconds(pkg.record.timestamp),
      data: _packageData(pkg),
    }))
    .sort((a, b) => rank.get(b.version)! - rank.get(a.version)! || b.seconds - a.seconds);
  const newest = candidates[0]!;

  // The previous entry ranks by its version while that version is still
  // indexed, and after every package otherwise (it may describe a removed one).
  const sources = candidates.map((candidate) => candidate.data);
  if (previous) {
    const live = candidates.some((candidate) => candidate.version === previousVersion);
    const previousRank = live ? rank.get(previousVersion!)! : -Infinity;
    const at = candidates.findIndex((candidate) => rank.get(candidate.version)! < previousRank);
    sources.splice(at === -1 ? sources.length : at, 0, previous);
  }

  const entry: JsonObject = {};
  for (const field of CHANNELDATA_FIELDS) {
    const value = sources.find((data) => _truthy(data[field]))?.[field];
    if (value !== undefined) entry[field] = value;
  }
  entry.version = newest.version;
  for (const flag of CHANNELDATA_FLAGS) {
    entry[flag] = sources.some((data) => _truthy(data[flag]));
  }
  entry.subdirs = [...new Set(candidates.map((candidate) => candidate.subdir))].sort();

  // One run_exports per version: the newest build's (conda-index keeps the
  // newest timestamp of each version).
  const runExports: JsonObject = {};
  const previousRunExports = previous?.run_exports;
  for (const candidate of candidates) {
    if (candidate.version in runExports) continue;
    // Known from inspection or from the subdir's run_exports.json; else the previous entry's.
    const known = candidate.pkg.runExports;
    const exports = known !== undefined
      ? known
      : (_isObject(previousRunExports) ? previousRunExports[candidate.version] : undefined);
    runExports[candidate.version] = _truthy(exports) ? exports : undefined;
  }
  for (const version of Object.keys(runExports)) {
    if (runExports[version] === undefined) delete runExports[version];
  }
  entry.run_exports = runExports;
  entry.timestamp = Math.max(...candidates.map((candidate) => candidate.seconds));
  return entry;
}

/**
 * The channel's channeldata: one cached, serialized entry per package name,
 * recomputed only for the names that change.
 */
export class Channeldata {
  #previous = new Map<string, JsonObject>();
  #entries = new Map<string, string>();

  /**
   * Takes the channeldata.json found on disk as the fallback for what the
   * indexed packages do not tell. Throws a `SyntaxError` when it is not
   * channeldata.
   */
  usePrevious(text: string): void {
    const data: unknown = JSON.parse(text);
    if (!_isObject(data) || !_isObject(data.packages ?? {})) {
      throw new SyntaxError("Cannot parse channeldata: not a channeldata object");
    }
    this.#previous = new Map();
    for (const [name, entry] of Object.entries((data.packages ?? {}) as JsonObject)) {
      if (_isObject(entry)) this.#previous.set(name, entry);
    }
  }

  /** Forgets every computed entry (before recomputing all names). */
  clear(): void {
    this.#entries.clear();
  }

  /** Recomputes the entry of `name` from all its packages; none drops it. */
  update(name: string, inputs: readonly ChanneldataInput[]): void {
    const entry = channeldataEntry(inputs, this.#previous.get(name));
    if (entry) this.#entries.set(name, canonicalJson(name) + ":" + canonicalJson(entry));
    else this.#entries.delete(name);
  }

  /** The whole `channeldata.json` (sorted keys, trailing newline as conda-index writes it). */
  toJson(subdirs: readonly string[]): string {
    const names = [...this.#entries.keys()].sort();
    return `{"channeldata_version":${CHANNELDATA_VERSION},"packages":{` +
      names.map((name) => this.#entries.get(name)).join(",") +
      `},"subdirs":${canonicalJson([...subdirs].sort())}}\n`;
  }
}

function _version(pkg: IndexedPackage): string {
  return typeof pkg.record.version === "string" ? pkg.record.version : "0";
}

/** conda-index's `_make_seconds`: timestamps in ms become seconds. */
function _seconds(timestamp: unknown): number {
  if (typeof timestamp !== "number" || !Number.isFinite(timestamp)) return 0;
  const seconds = Math.trunc(timestamp);
  return seconds > 253402300799 ? Math.floor(seconds / 1000) : seconds;
}

/**
 * What conda-index merges for a package: the recipe's fields, overlaid by
 * about.json, the paths.json flags and the record.
 */
function _packageData(pkg: IndexedPackage): JsonObject {
  const extras = pkg.extras;
  const data: JsonObject = { ...extras?.about, ...extras?.postInstall, ...pkg.record };
  // The recipe's `source` mapping becomes `source_*` keys, unless about.json has its own.
  if (_isObject(data.source)) {
    for (const [key, value] of Object.entries(data.source)) data[`source_${key}`] = value;
  } else if (!("source" in data)) Object.assign(data, extras?.recipeSource);
  for (const field of ["description", "summary"]) {
    let value = data[field];
    if (Array.isArray(value)) value = value[0];
    if (typeof value === "string") data[field] = value.trim().replaceAll("\n", " ");
  }
  return data;
}

/** Rank of each version string in conda's version order (higher is newer). */
function _versionRanks(versions: string[]): Map<string, number> {
  const unique = [...new Set(versions)].sort((a, b) =>
    compareCondaVersions(a, b) || (a < b ? -1 : a > b ? 1 : 0)
  );
  return new Map(unique.map((version, index) => [version, index]));
}

/** Python's truthiness of a JSON value. */
function _truthy(value: unknown): boolean {
  if (Array.isArray(value)) return value.length > 0;
  if (_isObject(value)) return Object.keys(value).length > 0;
  return Boolean(value);
}

function _isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
