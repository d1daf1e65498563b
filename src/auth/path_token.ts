/**
 * The conda token in a URL path: conda, old pixi and rattler's
 * `CondaToken` authentication put the token into the path as
 * `/t/<token>/...`. The router takes it out before routing and never lets it
 * reach a log line.
 *
 * @module
 */

/** A request path split into its token and the path the routes see. */
export interface PathToken {
  /** The token from `/t/<token>/`, percent-decoded; undefined without one. */
  token: string | undefined;
  /** The path without the `/t/<token>` prefix (at least `/`). */
  pathname: string;
}

const PREFIX = /^\/t\/([^/]*)(\/.*)?$/;

/**
 * Splits `/t/<token>/rest` into the token and `/rest`; any other path comes
 * back unchanged with no token. A token that cannot be percent-decoded is
 * kept as sent (it will not verify).
 *
 * @example Usage
 * ```ts
 * import { splitPathToken } from "./path_token.ts";
 * const { token, pathname } = splitPathToken("/t/abc123/linux-64/repodata.json");
 * console.log(token, pathname); // abc123 /linux-64/repodata.json
 * ```
 */
export function splitPathToken(pathname: string): PathToken {
  const match = PREFIX.exec(pathname);
  if (match === null) return { token: undefined, pathname };
  const raw = match[1]!;
  let token = raw;
  try {
    token = decodeURIComponent(raw);
  } catch {
    // Keep the raw text; it will simply not verify.
  }
  return { token, pathname: match[2] ?? "/" };
}

/**
 * The path with a `/t/<token>/` token replaced by `/t/<redacted>/`, for logs.
 *
 * @example Usage
 * ```ts
 * import { redactPathToken } from "./path_token.ts";
 * console.log(redactPathToken("/t/abc123/linux-64/x.conda")); // /t/<redacted>/linux-64/x.conda
 * ```
 */
export function redactPathToken(pathname: string): string {
  const match = PREFIX.exec(pathname);
  if (match === null) return pathname;
  return `/t/<redacted>${match[2] ?? ""}`;
}
