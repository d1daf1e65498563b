/**
 * Reads one of the files credentials come from (token hashes, trusted
 * publishers) and parses it, so that every failure reads the same way.
 */

import { fileReadReason } from "../file_read_reason.ts";

/**
 * Reads `path` as text and hands it to `parse`. Throws an `Error` whose
 * message names the file ("Cannot read <what> <path>: <reason>"), whether the
 * file could not be read or `parse` threw.
 */
export async function readAuthFile<T>(
  path: string,
  what: string,
  parse: (text: string) => T,
): Promise<T> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new Error(`Cannot read ${what} ${path}: ${fileReadReason(error)}`);
  }
  try {
    return parse(text);
  } catch (error) {
    throw new Error(`Cannot read ${what} ${path}: ${(error as Error).message}`);
  }
}
