/**
 * Picks a package's `info/` metadata files out of its tar stream, shared by
 * the `.tar.bz2` and `.conda` readers, and the limits both apply.
 *
 * @module
 */

import { HttpError, unprocessable } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";
import type { TarEntryAction, TarEntryHeader, TarVisitor } from "./tar_reader.ts";

/** Thrown by the package readers when the spool file itself cannot be read (a server fault). */
export class SpoolReadError extends Error {}

/**
 * The answer for an error thrown while reading a package's `info/` section:
 * an {@linkcode HttpError} as it is, an unreadable spool file as a 500, and
 * anything else (the decoder's complaint) as a 422 naming `what` was corrupt.
 */
export function inspectionError(error: unknown, what: string): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof SpoolReadError) {
    return new HttpError(
      STATUS.InternalServerError,
      "Cannot read package: spool file is unreadable",
      { cause: error.cause },
    );
  }
  const detail = error instanceof Error ? error.message.split("\n")[0] : String(error);
  return unprocessable(`Cannot read package: ${what} (${detail})`, error);
}

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
}

/** Default of {@linkcode InspectOptions.maxScannedBytes}: 256 MiB. */
export const DEFAULT_MAX_SCANNED_BYTES = 256 * 1024 * 1024;
/** Default of {@linkcode InspectOptions.maxInfoFileBytes}: 16 MiB. */
export const DEFAULT_MAX_INFO_FILE_BYTES = 16 * 1024 * 1024;

/** The `info/` files inspection reads. */
export const WANTED_INFO_FILES: readonly string[] = [
  "info/index.json",
  "info/about.json",
  "info/run_exports.json",
];

const REGULAR_TYPES = new Set(["0", "\0", "7"]);

/**
 * A {@linkcode TarVisitor} that collects {@linkcode WANTED_INFO_FILES}. It
 * stops when it has all of them, or, once it has `info/index.json`, at the
 * first member outside `info/` (the info section is contiguous).
 */
export class InfoCollector implements TarVisitor {
  /** The collected files, by path. */
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
    if (!WANTED_INFO_FILES.includes(entry.name) || !REGULAR_TYPES.has(entry.type)) return "skip";
    if (entry.size > this.#maxFileBytes) {
      throw unprocessable(
        `Cannot read package: ${entry.name} is larger than ${this.#maxFileBytes} bytes`,
      );
    }
    return "collect";
  }

  /** Keeps a collected file; stops once every wanted file is there. */
  onFile(entry: TarEntryHeader, data: Uint8Array): boolean {
    this.files.set(entry.name, data);
    return WANTED_INFO_FILES.every((name) => this.files.has(name));
  }
}
