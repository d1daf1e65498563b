/**
 * Reads one of the files credentials come from (token hashes, trusted
 * publishers) and parses it, so that every failure reads the same way.
 */

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
    const reason = error instanceof Deno.errors.NotFound
      ? "no such file"
      : error instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : error instanceof Error
      ? error.message
      : String(error);
    throw new Error(`Cannot read ${what} ${path}: ${reason}`);
  }
  try {
    return parse(text);
  } catch (error) {
    throw new Error(`Cannot read ${what} ${path}: ${(error as Error).message}`);
  }
}
