/**
 * The errors the package readers throw. They speak of packages, never of
 * HTTP: the `index` command prints them, and the server's one error map
 * (`src/http/http_error.ts`) turns them into statuses.
 *
 * - {@linkcode PackageFormatError} (`SyntaxError`): the bytes are not a
 *   readable package, or its `info/index.json` is not acceptable.
 * - {@linkcode PackageLimitError} (`RangeError`): reading it would pass a
 *   limit (decompressed bytes scanned, size of an `info/` file, empty
 *   bzip2 streams).
 * - {@linkcode PackageFilenameError} (`SyntaxError`) and
 *   {@linkcode PackageExtensionError} (`TypeError`): the filename is not a
 *   plain package basename, or not `.conda`/`.tar.bz2`.
 * - {@linkcode PackageReadError}: the file itself could not be read (a
 *   fault of the machine, not of the package).
 *
 * @module
 */

/**
 * The package's bytes or metadata cannot be read or accepted.
 *
 * @example Usage
 * ```ts
 * import { PackageFormatError } from "./package_errors.ts";
 * const error = new PackageFormatError("Cannot read package: not a zip file");
 * console.log(error instanceof SyntaxError); // true
 * ```
 */
export class PackageFormatError extends SyntaxError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PackageFormatError";
  }
}

/** Reading the package would pass one of the inspection limits. */
export class PackageLimitError extends RangeError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PackageLimitError";
  }
}

/** The filename is not a plain package basename of conda's characters. */
export class PackageFilenameError extends SyntaxError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PackageFilenameError";
  }
}

/** The filename's extension is not `.conda` or `.tar.bz2`. */
export class PackageExtensionError extends TypeError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PackageExtensionError";
  }
}

/** The package file could not be opened or read (an I/O fault, not the package's). */
export class PackageReadError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PackageReadError";
  }
}

/**
 * The error to throw for anything a decoder raised while reading a package:
 * package errors as they are, anything else (zlib's or the bzip2 decoder's
 * complaint) as a {@linkcode PackageFormatError} naming `what` was corrupt.
 */
export function packageError(error: unknown, what: string): Error {
  if (
    error instanceof PackageFormatError || error instanceof PackageLimitError ||
    error instanceof PackageReadError
  ) {
    return error;
  }
  const detail = error instanceof Error ? error.message.split("\n")[0] : String(error);
  return new PackageFormatError(`Cannot read package: ${what} (${detail})`, { cause: error });
}
