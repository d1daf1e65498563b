/**
 * Checks an uploaded package's filename: a plain basename ending in
 * `.tar.bz2` or `.conda`.
 *
 * @module
 */

import { PackageExtensionError, PackageFilenameError } from "./package_errors.ts";
import type { PackageFormat } from "./package_metadata.ts";

/** A package filename split into its stem and format. */
export interface PackageFilename {
  /** The filename without its extension, e.g. `foo-1.0-0`. */
  stem: string;
  /** The extension, which is the package format. */
  format: PackageFormat;
}

const FORMATS: readonly PackageFormat[] = [".tar.bz2", ".conda"];
const MAX_FILENAME_BYTES = 255;
// deno-lint-ignore no-control-regex
const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f]/;
/**
 * What conda names, versions and build strings are made of. Anything else
 * (spaces, `%`, bidi overrides, zero-width or look-alike characters such as
 * U+FF0F FULLWIDTH SOLIDUS) could only disguise a name in listings and URLs.
 */
const STEM_CHARS = /^[A-Za-z0-9._+!-]+$/;

function _refuse(reason: string): PackageFilenameError {
  return new PackageFilenameError(`Cannot accept filename: ${reason}`);
}

/**
 * Splits `filename` into stem and format. A name that is not a plain
 * basename (empty, too long, path separators, `..`, a leading dot, control
 * characters) or whose name holds characters other than ASCII letters,
 * digits and `. _ - + !` is a `PackageFilenameError`; an extension other than
 * `.tar.bz2` or `.conda` a `PackageExtensionError`.
 *
 * @example Usage
 * ```ts
 * import { parsePackageFilename } from "./package_filename.ts";
 * parsePackageFilename("foo-1.0-0.conda"); // { stem: "foo-1.0-0", format: ".conda" }
 * ```
 */
export function parsePackageFilename(filename: string): PackageFilename {
  if (filename.length === 0) throw _refuse("it is empty");
  if (new TextEncoder().encode(filename).length > MAX_FILENAME_BYTES) {
    throw _refuse(`it is longer than ${MAX_FILENAME_BYTES} bytes`);
  }
  if (CONTROL_CHARS.test(filename)) throw _refuse("it contains control characters");
  if (filename.includes("/") || filename.includes("\\")) {
    throw _refuse("it contains a path separator");
  }
  if (filename.includes("..")) throw _refuse('it contains ".."');
  if (filename.startsWith(".")) throw _refuse("it starts with a dot");
  const format = FORMATS.find((extension) => filename.endsWith(extension));
  if (format === undefined) {
    throw new PackageExtensionError(
      "Cannot accept filename: extension is not .tar.bz2 or .conda",
    );
  }
  const stem = filename.slice(0, -format.length);
  if (stem.length === 0) throw _refuse("it has no name before the extension");
  if (!STEM_CHARS.test(stem)) {
    throw _refuse("it contains characters other than ASCII letters, digits and . _ - + !");
  }
  return { stem, format };
}
