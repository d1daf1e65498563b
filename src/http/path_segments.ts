/**
 * Splits a request path into percent-decoded segments for routing.
 *
 * @module
 */

import { badRequest } from "./http_error.ts";

/**
 * The non-empty segments of `pathname`, each percent-decoded. A segment that
 * is not valid percent-encoded UTF-8 is a 400. Empty segments (`//`, a
 * trailing `/`) are dropped.
 *
 * @example Usage
 * ```ts
 * import { pathSegments } from "./path_segments.ts";
 * console.log(pathSegments("/main/linux-64/foo%2Bbar-1.0-0.conda"));
 * // ["main", "linux-64", "foo+bar-1.0-0.conda"]
 * ```
 */
export function pathSegments(pathname: string): string[] {
  const segments: string[] = [];
  for (const raw of pathname.split("/")) {
    if (raw === "") continue;
    try {
      segments.push(decodeURIComponent(raw));
    } catch (cause) {
      throw badRequest(
        `Cannot read request path: ${
          JSON.stringify(raw.slice(0, 64))
        } is not valid percent-encoding`,
        cause,
      );
    }
  }
  return segments;
}
