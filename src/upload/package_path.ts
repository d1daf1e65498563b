/**
 * A package's location as a URL names it: `/<channel>/<subdir>/<filename>`,
 * or `/<subdir>/<filename>` (the path under which this server serves it).
 * Artifactory-style `PUT` and `DELETE` address packages this way.
 *
 * @module
 */

import { pathSegments } from "../http/path_segments.ts";

/** A package location named by a URL. */
export interface PackagePath {
  /** The channel named in the URL (may contain `/`); `""` when omitted. */
  channel: string;
  /** The subdir segment. */
  subdir: string;
  /** The filename segment. */
  filename: string;
}

/**
 * Splits a path of two or more segments into channel (all leading segments,
 * possibly none), subdir and filename; undefined for shorter paths.
 *
 * @example Usage
 * ```ts
 * import { matchPackagePath } from "./package_path.ts";
 * console.log(matchPackagePath("/main/noarch/foo-1.0-0.tar.bz2"));
 * // { channel: "main", subdir: "noarch", filename: "foo-1.0-0.tar.bz2" }
 * ```
 */
export function matchPackagePath(pathname: string): PackagePath | undefined {
  const segments = pathSegments(pathname);
  if (segments.length < 2) return undefined;
  return {
    channel: segments.slice(0, -2).join("/"),
    subdir: segments.at(-2)!,
    filename: segments.at(-1)!,
  };
}
