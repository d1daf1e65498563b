/**
 * A package's location as a URL names it: `/<channel>/<subdir>/<filename>`,
 * or `/<subdir>/<filename>` (the path under which this server serves it).
 * Artifactory-style `PUT` and `DELETE` address packages this way.
 *
 * @module
 */

import { HttpError } from "../http/http_error.ts";
import { pathSegments } from "../http/path_segments.ts";
import { STATUS } from "../http/status.ts";
import { isKnownSubdir } from "../package/platforms.ts";
import { checkChannelName } from "./channel_name.ts";

/** A package location named by a URL. */
export interface PackagePath {
  /** The channel named in the URL (may contain `/`); `""` when omitted. */
  channel: string;
  /** The subdir segment. */
  subdir: string;
  /** The filename segment. */
  filename: string;
}

/** Options for {@linkcode checkPackagePath}. */
export interface CheckPackagePathOptions {
  /**
   * The verb of the error message ("Cannot <action>: ...").
   * @default {"upload"}
   */
  action?: string;
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

/**
 * Throws a 404 when `path` names a channel other than `channelName` or a
 * subdir that conda does not know.
 *
 * @example Usage
 * ```ts
 * import { checkPackagePath } from "./package_path.ts";
 * checkPackagePath({ channel: "", subdir: "linux-64", filename: "x-1-0.conda" }, "main"); // fine
 * ```
 */
export function checkPackagePath(
  path: PackagePath,
  channelName: string,
  options: CheckPackagePathOptions = {},
): void {
  const action = options.action ?? "upload";
  if (path.channel !== "") checkChannelName(path.channel, channelName, { action });
  if (!isKnownSubdir(path.subdir)) {
    throw new HttpError(
      STATUS.NotFound,
      `Cannot ${action}: ${JSON.stringify(path.subdir.slice(0, 64))} is not a conda subdir`,
    );
  }
}
