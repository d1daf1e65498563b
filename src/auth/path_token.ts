/**
 * The conda token in a URL path: conda, old pixi and rattler's
 * `CondaToken` authentication put the token into the path as
 * `/t/<token>/...`. The router takes it out once, before routing, and never
 * lets it reach a log line or an error message.
 *
 * Clients and proxies vary the form: `//t/<token>/` (a base URL ending in
 * `/` joined with a path starting with `/`), `/t/<token>` with nothing
 * after it, `%2Ft%2F<token>%2F...` (slashes percent-encoded), repeated
 * slashes anywhere. All of them are the same path token here: encoded
 * slashes count as slashes and runs of slashes as one, for finding the
 * token, for routing and for logging.
 *
 * @module
 */

/** A request path split into its token and the path the routes see. */
export interface PathToken {
  /** The token from `/t/<token>/`, percent-decoded; undefined without one. */
  token: string | undefined;
  /** The path without the `/t/<token>` prefix (at least `/`), normalized. */
  pathname: string;
}

const PREFIX = /^\/t\/([^/]*)(\/.*)?$/;

/**
 * The path with encoded slashes (`%2F`) decoded and runs of slashes made
 * one, the form in which a path token is looked for.
 */
function normalize(pathname: string): string {
  return pathname.replaceAll(/%2f/gi, "/").replaceAll(/\/{2,}/g, "/");
}

/**
 * Splits `/t/<token>/rest` (in any of the forms above) into the token and
 * `/rest`; any other path comes back unchanged with no token. A token that
 * cannot be percent-decoded is kept as sent (it will not verify).
 *
 * @example Usage
 * ```ts
 * import { splitPathToken } from "./path_token.ts";
 * const { token, pathname } = splitPathToken("//t/abc123/linux-64/repodata.json");
 * console.log(token, pathname); // abc123 /linux-64/repodata.json
 * ```
 */
export function splitPathToken(pathname: string): PathToken {
  const match = PREFIX.exec(normalize(pathname));
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
 * The path with a path token (in any form) replaced by `/t/<redacted>`, for
 * logs and messages.
 *
 * @example Usage
 * ```ts
 * import { redactPathToken } from "./path_token.ts";
 * console.log(redactPathToken("/t/abc123/linux-64/x.conda")); // /t/<redacted>/linux-64/x.conda
 * console.log(redactPathToken("/%2Ft%2Fabc123/x.conda")); // /t/<redacted>/x.conda
 * ```
 */
export function redactPathToken(pathname: string): string {
  const match = PREFIX.exec(normalize(pathname));
  if (match === null) return pathname;
  return `/t/<redacted>${match[2] ?? ""}`;
}
