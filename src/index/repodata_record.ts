/**
 * One package's entry in `repodata.json`, built and serialized exactly as
 * conda-index writes it: the package's `info/index.json` without the keys
 * conda-index drops, plus `md5`, `sha256` and `size`, as compact JSON with
 * sorted keys and non-ASCII characters escaped (Python's
 * `json.dumps(sort_keys=True, separators=(",", ":"))`).
 *
 * @module
 */

import type { JsonObject, PackageRecordSource } from "../package/package_metadata.ts";

/** Keys of `info/index.json` that conda-index leaves out of a repodata record. */
export const DROPPED_INDEX_KEYS: ReadonlySet<string> = new Set([
  "arch",
  "has_prefix",
  "mtime",
  "platform",
  "ucs",
  "requires_features",
  "binstar",
  "target-triplet",
  "machine",
  "operatingsystem",
]);

/** The repodata section a package filename belongs to. */
export type RepodataSection = "packages" | "packages.conda";

/**
 * The section of `repodata.json` that holds `filename`, or undefined when it
 * is not a conda package filename.
 *
 * @example Usage
 * ```ts
 * import { repodataSection } from "./repodata_record.ts";
 * console.log(repodataSection("foo-1.0-0.conda")); // "packages.conda"
 * ```
 */
export function repodataSection(filename: string): RepodataSection | undefined {
  if (filename.endsWith(".conda") && filename.length > ".conda".length) return "packages.conda";
  if (filename.endsWith(".tar.bz2") && filename.length > ".tar.bz2".length) return "packages";
  return undefined;
}

/**
 * Builds a package's repodata record from its metadata and digests.
 *
 * @example Usage
 * ```ts
 * import { repodataRecord } from "./repodata_record.ts";
 * const record = repodataRecord({
 *   filename: "foo-1.0-0.conda",
 *   size: 3,
 *   sha256: "a".repeat(64),
 *   md5: "b".repeat(32),
 *   metadata: {
 *     format: ".conda",
 *     name: "foo",
 *     version: "1.0",
 *     build: "0",
 *     subdir: "noarch",
 *     index: { name: "foo", version: "1.0", build: "0", arch: null },
 *   },
 * });
 * console.log(Object.keys(record)); // no "arch"; md5, sha256 and size added
 * ```
 */
export function repodataRecord(source: PackageRecordSource): JsonObject {
  const record: JsonObject = {};
  for (const [key, value] of Object.entries(source.metadata.index)) {
    if (!DROPPED_INDEX_KEYS.has(key)) record[key] = value;
  }
  record.md5 = source.md5;
  record.sha256 = source.sha256;
  record.size = source.size;
  return record;
}

/**
 * Serializes a JSON value like Python's
 * `json.dumps(value, sort_keys=True, separators=(",", ":"))`: no whitespace,
 * object keys sorted at every level, characters outside printable ASCII
 * escaped as lowercase `\uXXXX`. Keys whose value is `undefined` are left out.
 *
 * @example Usage
 * ```ts
 * import { canonicalJson } from "./repodata_record.ts";
 * console.log(canonicalJson({ b: 1, a: ["é"] })); // {"a":["\u00e9"],"b":1}
 * ```
 */
export function canonicalJson(value: unknown): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "string":
      return _jsonString(value);
    case "number":
      return Number.isFinite(value) ? String(value) : "null";
    case "boolean":
      return value ? "true" : "false";
    case "object": {
      if (Array.isArray(value)) {
        return "[" + value.map((item) => canonicalJson(item ?? null)).join(",") + "]";
      }
      const object = value as Record<string, unknown>;
      const parts: string[] = [];
      for (const key of Object.keys(object).sort()) {
        const item = object[key];
        if (item !== undefined) parts.push(_jsonString(key) + ":" + canonicalJson(item));
      }
      return "{" + parts.join(",") + "}";
    }
    default:
      return "null";
  }
}

/**
 * The serialized `"filename":{record}` member of a repodata section, cached
 * per package so that a whole `repodata.json` is a join of fragments.
 */
export function recordFragment(filename: string, record: JsonObject): string {
  return _jsonString(filename) + ":" + canonicalJson(record);
}

const HAS_NON_ASCII = /[\u007f-\uffff]/;
const NON_ASCII = /[\u007f-\uffff]/g;

/** A JSON string literal with Python's `ensure_ascii` escaping. */
function _jsonString(text: string): string {
  const literal = JSON.stringify(text);
  if (!HAS_NON_ASCII.test(literal)) return literal;
  return literal.replace(
    NON_ASCII,
    (char) => "\\u" + char.charCodeAt(0).toString(16).padStart(4, "0"),
  );
}
