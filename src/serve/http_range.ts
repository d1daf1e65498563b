/**
 * Parsing of the HTTP `Range` request header (RFC 9110 §14) for one file.
 *
 * Only a single byte range is answered with a partial response; anything
 * else that is syntactically a range request is answered with the whole
 * file, which RFC 9110 allows.
 *
 * @module
 */

/** An inclusive byte range inside a file of known size. */
export interface ByteRange {
  /** First byte offset, `0 <= start <= end`. */
  start: number;
  /** Last byte offset (inclusive), `end < size`. */
  end: number;
}

const SINGLE_RANGE = /^bytes[ \t]*=[ \t]*(\d*)-(\d*)[ \t]*$/i;

/**
 * Reads a `Range` header for a file of `size` bytes.
 *
 * Returns the {@linkcode ByteRange} to send for `bytes=a-b`, `bytes=a-` and
 * `bytes=-n` (an end past the file is clamped, a suffix longer than the file
 * is the whole file), `"unsatisfiable"` when the single range lies outside
 * the file (answer 416), and `undefined` when the header is to be ignored
 * and the whole file sent: other units, several ranges, bad syntax or
 * `a-b` with `b < a`.
 *
 * @example Usage
 * ```ts
 * import { parseRange } from "./http_range.ts";
 * parseRange("bytes=10-19", 100); // { start: 10, end: 19 }
 * parseRange("bytes=-10", 100); // { start: 90, end: 99 }
 * parseRange("bytes=100-", 100); // "unsatisfiable"
 * parseRange("bytes=0-1,5-6", 100); // undefined
 * ```
 */
export function parseRange(header: string, size: number): ByteRange | "unsatisfiable" | undefined {
  const match = SINGLE_RANGE.exec(header.trim());
  if (!match) return undefined;
  const first = match[1] ?? "";
  const last = match[2] ?? "";
  if (first === "" && last === "") return undefined;
  if (first === "") {
    // Suffix range: the last `length` bytes.
    const length = Number(last);
    if (length === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - length), end: size - 1 };
  }
  const start = Number(first);
  if (last !== "" && Number(last) < start) return undefined;
  if (start >= size) return "unsatisfiable";
  const end = last === "" ? size - 1 : Math.min(Number(last), size - 1);
  return { start, end };
}
