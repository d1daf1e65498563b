/**
 * The in-memory index of one subdir and its serialisation. Every package
 * keeps its serialized `repodata.json` member and its `index.html` row, made
 * once when it is added, and the packages of each section are kept sorted by
 * filename, so writing the subdir is a join of cached strings: O(changed)
 * work per change plus one concatenation.
 *
 * @module
 */

import type { JsonObject, PackageRecordSource } from "../package/package_metadata.ts";
import { concatBytes } from "../concat_bytes.ts";
import { channelPath } from "../storage/channel_storage.ts";
import {
  canonicalJson,
  recordFragment,
  repodataRecord,
  type RepodataSection,
  repodataSection,
} from "./repodata_record.ts";
import { packageRowHtml, renderSubdirIndexHtml } from "./subdir_index_html.ts";

/** The `repodata_version` written (conda-index's, understood by every client). */
export const REPODATA_VERSION = 1;
/** The `info.version` of `run_exports.json` (CEP-12). */
export const RUN_EXPORTS_VERSION = 1;

/**
 * The run exports listed in a subdir's `run_exports.json`, by package
 * filename. Throws a `SyntaxError` when the text is not such a file.
 */
export function parseRunExportsJson(text: string): Map<string, JsonObject> {
  const data: unknown = JSON.parse(text);
  if (!_isObject(data)) throw new SyntaxError("Cannot parse run_exports.json: not a JSON object");
  const result = new Map<string, JsonObject>();
  for (const section of ["packages", "packages.conda"] as const) {
    const entries = data[section] ?? {};
    if (!_isObject(entries)) {
      throw new SyntaxError(`Cannot parse run_exports.json: "${section}" is not an object`);
    }
    for (const [filename, entry] of Object.entries(entries)) {
      const exports = _isObject(entry) ? entry.run_exports : undefined;
      if (_isObject(exports)) result.set(filename, exports);
    }
  }
  return result;
}

/** What inspection read besides `index.json`, kept for `channeldata.json`. */
export interface PackageExtras {
  /** `info/about.json`, when the package has one. */
  about?: JsonObject;
  /** `info/run_exports.json`, when the package has one. */
  runExports?: JsonObject;
  /** Flags from `info/paths.json` (`text_prefix`, `post_link`, ...). */
  postInstall?: Record<string, boolean>;
  /** `source_url`/`source_git_url` from the package's recipe. */
  recipeSource?: JsonObject;
}

/** One package as the index holds it. */
export interface IndexedPackage {
  /** The package's basename. */
  readonly filename: string;
  /** `name` of the record ("" when the record has none). */
  readonly name: string;
  /** The repodata record. */
  readonly record: JsonObject;
  /** The serialized `"filename":{record}` member of its repodata section, UTF-8. */
  readonly fragment: Uint8Array;
  /** Its `index.html` table row and a newline, UTF-8. */
  readonly row: Uint8Array;
  /**
   * What inspection read besides the record, or undefined when the record
   * was loaded from an existing `repodata.json` (not known).
   */
  readonly extras: PackageExtras | undefined;
  /**
   * The package's run exports (`{}` when it has none), or undefined when
   * not known: a record loaded from `repodata.json` that the subdir's
   * `run_exports.json` does not list (reconcile reads such packages again).
   */
  readonly runExports: JsonObject | undefined;
  /** Its `"filename":{"run_exports":...}` member of `run_exports.json`, UTF-8, when known. */
  readonly runExportsFragment: Uint8Array | undefined;
}

/**
 * Makes an {@linkcode IndexedPackage} from a record, serializing it once.
 * Throws a `TypeError` when `filename` is not a plain conda package filename.
 */
export function indexedPackage(
  filename: string,
  record: JsonObject,
  extras?: PackageExtras,
): IndexedPackage {
  if (!isPackageFilename(filename)) {
    throw new TypeError(`Cannot index package: ${JSON.stringify(filename)} is not a package name`);
  }
  const fragment = _encoder.encode(recordFragment(filename, record));
  return _package(filename, record, fragment, extras, extras && (extras.runExports ?? {}));
}

const _encoder = new TextEncoder();

function _package(
  filename: string,
  record: JsonObject,
  fragment: Uint8Array,
  extras: PackageExtras | undefined,
  runExports: JsonObject | undefined,
): IndexedPackage {
  const name = typeof record.name === "string" ? record.name : "";
  const row = _encoder.encode(packageRowHtml(filename, record) + "\n");
  const runExportsFragment = runExports &&
    _encoder.encode(recordFragment(filename, { run_exports: runExports }));
  return { filename, name, record, fragment, row, extras, runExports, runExportsFragment };
}

/** Whether two byte strings are equal. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Makes an {@linkcode IndexedPackage} from an inspected, digested package. */
export function indexedPackageFromSource(source: PackageRecordSource): IndexedPackage {
  const extras: PackageExtras = {};
  if (source.metadata.about) extras.about = source.metadata.about;
  if (source.metadata.runExports) extras.runExports = source.metadata.runExports;
  if (source.metadata.postInstall) extras.postInstall = source.metadata.postInstall;
  if (source.metadata.recipeSource) extras.recipeSource = source.metadata.recipeSource;
  return indexedPackage(source.filename, repodataRecord(source), extras);
}

/** Whether `filename` is a plain `.conda` or `.tar.bz2` basename. */
export function isPackageFilename(filename: string): boolean {
  return repodataSection(filename) !== undefined && channelPath(filename)?.length === 1;
}

/** The packages of one subdir, serializable as `repodata.json` and `index.html`. */
export class SubdirIndex {
  /** The subdir's name, e.g. `linux-64`. */
  readonly subdir: string;
  #packages = new Map<string, IndexedPackage>();
  #sections: Record<RepodataSection, _SortedPackages> = {
    "packages": new _SortedPackages(),
    "packages.conda": new _SortedPackages(),
  };
  #byName = new Map<string, Set<string>>();

  constructor(subdir: string) {
    this.subdir = subdir;
  }

  /**
   * Parses a `repodata.json`. Packages of `previous` whose record is
   * unchanged are kept as they are (with their extras); the others take
   * their run exports from `runExports` (the subdir's `run_exports.json`,
   * see {@linkcode parseRunExportsJson}). Throws a `SyntaxError` when the
   * text is not JSON or not shaped like repodata (sections of records keyed
   * by package filename).
   */
  static parse(
    subdir: string,
    text: string,
    previous?: SubdirIndex,
    runExports?: ReadonlyMap<string, JsonObject>,
  ): SubdirIndex {
    const data: unknown = JSON.parse(text);
    if (!_isObject(data)) throw new SyntaxError("Cannot parse repodata: not a JSON object");
    const index = new SubdirIndex(subdir);
    const sections: Record<RepodataSection, IndexedPackage[]> = {
      "packages": [],
      "packages.conda": [],
    };
    for (const section of ["packages", "packages.conda"] as const) {
      const records = data[section] ?? {};
      if (!_isObject(records)) {
        throw new SyntaxError(`Cannot parse repodata: "${section}" is not an object`);
      }
      for (const [filename, record] of Object.entries(records)) {
        if (!_isObject(record) || !isPackageFilename(filename)) {
          throw new SyntaxError(`Cannot parse repodata: bad record ${JSON.stringify(filename)}`);
        }
        if (index.#packages.has(filename)) continue;
        const known = previous?.get(filename);
        const fragment = _encoder.encode(recordFragment(filename, record));
        const pkg = known && sameBytes(known.fragment, fragment) &&
            (known.runExports !== undefined || !runExports?.has(filename))
          ? known
          : _package(filename, record, fragment, undefined, runExports?.get(filename));
        index.#packages.set(filename, pkg);
        sections[repodataSection(filename)!].push(pkg);
        index.#addName(pkg);
      }
    }
    for (const section of ["packages", "packages.conda"] as const) {
      index.#sections[section] = _SortedPackages.from(sections[section].sort(_byFilename));
    }
    return index;
  }

  /** Number of packages. */
  get size(): number {
    return this.#packages.size;
  }

  /** The package named `filename`, if indexed. */
  get(filename: string): IndexedPackage | undefined {
    return this.#packages.get(filename);
  }

  /** Every package, in no particular order. */
  packages(): IterableIterator<IndexedPackage> {
    return this.#packages.values();
  }

  /** Every package name (`record.name`) present. */
  names(): IterableIterator<string> {
    return this.#byName.keys();
  }

  /** The packages whose record has `name`. */
  packagesNamed(name: string): IndexedPackage[] {
    const filenames = this.#byName.get(name);
    if (!filenames) return [];
    return [...filenames].map((filename) => this.#packages.get(filename)!);
  }

  /** Adds or replaces a package; returns the one it replaced. */
  set(pkg: IndexedPackage): IndexedPackage | undefined {
    const previous = this.#packages.get(pkg.filename);
    this.#sections[repodataSection(pkg.filename)!].set(pkg);
    if (previous) this.#removeName(previous);
    this.#packages.set(pkg.filename, pkg);
    this.#addName(pkg);
    return previous;
  }

  /** Drops a package; returns it, or undefined when it was not indexed. */
  delete(filename: string): IndexedPackage | undefined {
    const previous = this.#packages.get(filename);
    if (!previous) return undefined;
    this.#sections[repodataSection(filename)!].delete(filename);
    this.#packages.delete(filename);
    this.#removeName(previous);
    return previous;
  }

  /** The subdir's `repodata.json` (UTF-8), byte for byte as conda-index writes it. */
  toRepodataJson(): Uint8Array {
    return concatBytes([
      _encoder.encode(`{"info":{"subdir":${canonicalJson(this.subdir)}},"packages":{`),
      ...this.#sections["packages"].jsonBlocks(),
      _encoder.encode('},"packages.conda":{'),
      ...this.#sections["packages.conda"].jsonBlocks(),
      _encoder.encode(`},"removed":[],"repodata_version":${REPODATA_VERSION}}`),
    ]);
  }

  /**
   * The subdir's `run_exports.json` (CEP-12, UTF-8), as conda-index
   * `--run-exports` writes it: every package's `info/run_exports.json` (`{}`
   * without one), keyed by filename. Packages whose run exports are not
   * known are left out.
   */
  toRunExportsJson(): Uint8Array {
    return concatBytes([
      _encoder.encode(
        `{"info":{"subdir":${
          canonicalJson(this.subdir)
        },"version":${RUN_EXPORTS_VERSION}},"packages":{`,
      ),
      ...this.#sections["packages"].runExportsBlocks(),
      _encoder.encode('},"packages.conda":{'),
      ...this.#sections["packages.conda"].runExportsBlocks(),
      _encoder.encode("}}"),
    ]);
  }

  /** The subdir's `index.html` (UTF-8): `.conda` packages, then `.tar.bz2`, each by filename. */
  toIndexHtml(): Uint8Array {
    return renderSubdirIndexHtml(this.subdir, [
      ...this.#sections["packages.conda"].htmlBlocks(),
      ...this.#sections["packages"].htmlBlocks(),
    ]);
  }

  #addName(pkg: IndexedPackage): void {
    let filenames = this.#byName.get(pkg.name);
    if (!filenames) this.#byName.set(pkg.name, filenames = new Set());
    filenames.add(pkg.filename);
  }

  #removeName(pkg: IndexedPackage): void {
    const filenames = this.#byName.get(pkg.name);
    filenames?.delete(pkg.filename);
    if (filenames?.size === 0) this.#byName.delete(pkg.name);
  }
}

const _CHUNK_SIZE = 256;
const _COMMA = _encoder.encode(",");

interface _Chunk {
  /** Sorted by filename; never empty. */
  items: IndexedPackage[];
  /** The items' fragments joined by commas, made when first needed. */
  json?: Uint8Array | undefined;
  /** The items' rows, made when first needed. */
  html?: Uint8Array | undefined;
  /** The items' known run_exports.json members joined by commas, made when first needed. */
  runExports?: Uint8Array | undefined;
}

/**
 * Packages sorted by filename in chunks of a few hundred, each caching its
 * serialized bytes: a change re-joins one chunk, a write joins the chunks.
 */
class _SortedPackages {
  #chunks: _Chunk[] = [];

  static from(sorted: IndexedPackage[]): _SortedPackages {
    const list = new _SortedPackages();
    for (let i = 0; i < sorted.length; i += _CHUNK_SIZE) {
      list.#chunks.push({ items: sorted.slice(i, i + _CHUNK_SIZE) });
    }
    return list;
  }

  /** Inserts `pkg`, or replaces the package of the same filename. */
  set(pkg: IndexedPackage): void {
    const chunk = this.#chunkFor(pkg.filename);
    if (!chunk) {
      this.#chunks.push({ items: [pkg] });
      return;
    }
    const at = _search(chunk.items, pkg.filename);
    if (chunk.items[at]?.filename === pkg.filename) chunk.items[at] = pkg;
    else chunk.items.splice(at, 0, pkg);
    chunk.json = chunk.html = chunk.runExports = undefined;
    if (chunk.items.length > 2 * _CHUNK_SIZE) {
      const index = this.#chunks.indexOf(chunk);
      this.#chunks.splice(index + 1, 0, { items: chunk.items.splice(_CHUNK_SIZE) });
    }
  }

  /** Removes the package named `filename`, if present. */
  delete(filename: string): void {
    const chunk = this.#chunkFor(filename);
    if (!chunk) return;
    const at = _search(chunk.items, filename);
    if (chunk.items[at]?.filename !== filename) return;
    chunk.items.splice(at, 1);
    chunk.json = chunk.html = chunk.runExports = undefined;
    if (chunk.items.length === 0) this.#chunks.splice(this.#chunks.indexOf(chunk), 1);
  }

  /** The serialized members, in comma-joined blocks ready to concatenate. */
  jsonBlocks(): Uint8Array[] {
    const blocks: Uint8Array[] = [];
    for (const chunk of this.#chunks) {
      if (blocks.length > 0) blocks.push(_COMMA);
      chunk.json ??= concatBytes(
        chunk.items.flatMap((pkg, i) => i === 0 ? [pkg.fragment] : [_COMMA, pkg.fragment]),
      );
      blocks.push(chunk.json);
    }
    return blocks;
  }

  /** The known run_exports.json members, in comma-joined blocks ready to concatenate. */
  runExportsBlocks(): Uint8Array[] {
    const blocks: Uint8Array[] = [];
    for (const chunk of this.#chunks) {
      chunk.runExports ??= concatBytes(
        chunk.items.flatMap((pkg) => pkg.runExportsFragment ? [_COMMA, pkg.runExportsFragment] : [])
          .slice(1),
      );
      if (chunk.runExports.length === 0) continue;
      if (blocks.length > 0) blocks.push(_COMMA);
      blocks.push(chunk.runExports);
    }
    return blocks;
  }

  /** The `index.html` rows, in blocks ready to concatenate. */
  htmlBlocks(): Uint8Array[] {
    return this.#chunks.map((chunk) =>
      chunk.html ??= concatBytes(chunk.items.map((pkg) => pkg.row))
    );
  }

  /** The chunk where `filename` is or belongs: the first whose last item is not before it. */
  #chunkFor(filename: string): _Chunk | undefined {
    let low = 0;
    let high = this.#chunks.length - 1;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.#chunks[middle]!.items.at(-1)!.filename < filename) low = middle + 1;
      else high = middle;
    }
    return this.#chunks[low];
  }
}

function _isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function _byFilename(a: IndexedPackage, b: IndexedPackage): number {
  return a.filename < b.filename ? -1 : a.filename > b.filename ? 1 : 0;
}

/** Index of `filename` in the sorted `list`, or where it would be inserted. */
function _search(list: IndexedPackage[], filename: string): number {
  let low = 0;
  let high = list.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (list[middle]!.filename < filename) low = middle + 1;
    else high = middle;
  }
  return low;
}
