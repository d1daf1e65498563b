/**
 * Joining byte chunks into one buffer, as the index files and the
 * connection layer's writes need it.
 *
 * @module
 */

/**
 * Concatenates byte strings: the cheap join of cached serialized fragments.
 *
 * @example Usage
 * ```ts
 * import { concatBytes } from "./concat_bytes.ts";
 * const bytes = concatBytes([new TextEncoder().encode("1,"), new TextEncoder().encode("2")]);
 * console.log(new TextDecoder().decode(bytes)); // 1,2
 * ```
 */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return bytes;
}
