/**
 * The program's version, printed by `--version` and in `--help`.
 *
 * @module
 */

/** The program's version. */
export const VERSION = "0.1.0";
