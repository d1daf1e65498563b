/**
 * Picks a package's `info/` metadata files out of its tar stream, shared by
 * the `.tar.bz2` and `.conda` readers, and the limits both apply.
 *
 * @module
 */

import { PackageLimitError } from "./package_errors.ts";
import type { TarEntryAction, TarEntryHeader, TarVisitor } from "./tar_reader.ts";

/** Limits applied while reading a package's `info/` section. */
export interface InspectOptions {
  /**
   * Most decompressed bytes scanned before giving up (the decompression-bomb bound).
   * @default {268435456} 256 MiB
   */
  maxScannedBytes?: number;
  /**
   * Largest accepted size of one wanted `info/` file.
   * @default {16777216} 16 MiB
   */
  maxInfoFileBytes?: number;
  /**
   * Check the CRC-32 of every member of a `.conda` (its whole payload, at
   * several GB/s), and the block CRCs of a `.tar.bz2` of at most
   * `maxWholeBzip2Bytes` (decoded whole, at ~20 MB/s on a worker thread); a larger `.tar.bz2`
   * is checked only as far as its `info/` section (see the README).
   * @default {true}
   */
  verifyChecksums?: boolean;
  /**
   * Largest `.tar.bz2` decoded whole to check every block CRC (up to 16
   * times this many decompressed bytes after `info/`).
   * @default {2097152} 2 MiB: at most ~0.1 s more for incompressible data
   */
  maxWholeBzip2Bytes?: number;
}

/** Default of {@linkcode InspectOptions.maxScannedBytes}: 256 MiB. */
export const DEFAULT_MAX_SCANNED_BYTES = 256 * 1024 * 1024;
/** Default of {@linkcode InspectOptions.maxInfoFileBytes}: 16 MiB. */
export const DEFAULT_MAX_INFO_FILE_BYTES = 16 * 1024 * 1024;
/** Default of {@linkcode InspectOptions.maxWholeBzip2Bytes}: 2 MiB. */
export const DEFAULT_MAX_WHOLE_BZIP2_BYTES = 2 * 1024 * 1024;

/** The `info/` files inspection reads; only `info/index.json` is required. */
export const WANTED_INFO_FILES: readonly string[] = [
  "info/index.json",
  "info/about.json",
  "info/run_exports.json",
  "info/paths.json",
];

/**
 * The rendered recipe, under the names conda-index looks for: the first
 * one present is read (for `source_url` and `source_git_url`).
 */
export const RECIPE_FILES: readonly string[] = [
  "info/recipe/meta.yaml",
  "info/recipe/meta.yaml.rendered",
  "info/meta.yaml",
];

/** The key under which {@linkcode InfoCollector.files} holds the recipe read. */
export const RECIPE_KEY = "info/recipe/meta.yaml";

const REGULAR_TYPES = new Set(["0", "\0", "7"]);

/**
 * A {@linkcode TarVisitor} that collects {@linkcode WANTED_INFO_FILES} and
 * the first of {@linkcode RECIPE_FILES}, in the one pass over `info/`. It
 * stops when it has all of them, or, once it has `info/index.json`, at the
 * first member outside `info/` (the info section is contiguous). An optional
 * file larger than the limit is skipped; an oversized `info/index.json` is
 * a `PackageLimitError`.
 */
export class InfoCollector implements TarVisitor {
  /** The collected files, by path (the recipe under {@linkcode RECIPE_KEY}). */
  readonly files: Map<string, Uint8Array> = new Map();
  #maxFileBytes: number;

  constructor(options: InspectOptions = {}) {
    this.#maxFileBytes = options.maxInfoFileBytes ?? DEFAULT_MAX_INFO_FILE_BYTES;
  }

  /** Whether `info/index.json` was collected. */
  get hasIndex(): boolean {
    return this.files.has("info/index.json");
  }

  /** Decides, for each tar member, whether to collect it. */
  onEntry(entry: TarEntryHeader): TarEntryAction {
    if (!entry.name.startsWith("info/")) return this.hasIndex ? "stop" : "skip";
    if (!REGULAR_TYPES.has(entry.type)) return "skip";
    const recipe = RECIPE_FILES.includes(entry.name);
    if (recipe ? this.files.has(RECIPE_KEY) : !WANTED_INFO_FILES.includes(entry.name)) {
      return "skip";
    }
    if (entry.size > this.#maxFileBytes) {
      if (entry.name !== "info/index.json") return "skip";
      throw new PackageLimitError(
        `Cannot read package: ${entry.name} is larger than ${this.#maxFileBytes} bytes`,
      );
    }
    return "collect";
  }

  /** Keeps a collected file; stops once every wanted file is there. */
  onFile(entry: TarEntryHeader, data: Uint8Array): boolean {
    this.files.set(RECIPE_FILES.includes(entry.name) ? RECIPE_KEY : entry.name, data);
    return this.files.has(RECIPE_KEY) && WANTED_INFO_FILES.every((name) => this.files.has(name));
  }
}
