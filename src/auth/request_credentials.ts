/**
 * Reads the credentials a client presents in the request head, once:
 * `Authorization: Bearer`, `Authorization: Basic` (the password holds the
 * token), `X-API-Key`, or a `/t/<token>/` path token. Headers win over the
 * path token. The form protocol's `token` body field is read later, by the
 * form body reader, and becomes credentials of source `"form"`.
 *
 * @module
 */

import { badRequest } from "../http/http_error.ts";

/** Where a token came from. */
export type CredentialSource = "bearer" | "basic" | "api-key" | "path" | "form";

/** What a client presented to prove who it is; resolved by an {@linkcode Authenticator}. */
export interface Credentials {
  /** The secret; undefined when none was presented. */
  token: string | undefined;
  /** Where it came from; undefined when none was presented. */
  source: CredentialSource | undefined;
}

/** No credentials at all. */
export const NO_CREDENTIALS: Credentials = { token: undefined, source: undefined };

/**
 * The credentials in the request head: headers first, else the path token
 * the router took out of the URL. A malformed `Authorization` header is a 400.
 *
 * @example Usage
 * ```ts
 * import { headCredentials } from "./request_credentials.ts";
 * const headers = new Headers({ authorization: "Bearer s3cret" });
 * console.log(headCredentials(headers, undefined)); // { token: "s3cret", source: "bearer" }
 * ```
 */
export function headCredentials(headers: Headers, pathToken: string | undefined): Credentials {
  const authorization = headers.get("authorization");
  if (authorization !== null) {
    const match = /^(\S+)\s+(\S+)\s*$/.exec(authorization);
    if (!match) throw badRequest("Cannot read Authorization header: expected '<scheme> <token>'");
    const scheme = match[1]!.toLowerCase();
    const value = match[2]!;
    if (scheme === "bearer") return { token: value, source: "bearer" };
    if (scheme === "basic") return { token: basicPassword(value), source: "basic" };
    throw badRequest("Cannot read Authorization header: scheme must be Bearer or Basic");
  }
  const apiKey = headers.get("x-api-key");
  if (apiKey !== null) return { token: apiKey.trim(), source: "api-key" };
  if (pathToken !== undefined && pathToken !== "") return { token: pathToken, source: "path" };
  return NO_CREDENTIALS;
}

function basicPassword(encoded: string): string {
  let decoded: string;
  try {
    decoded = new TextDecoder("utf-8", { fatal: true }).decode(
      Uint8Array.from(atob(encoded), (char) => char.charCodeAt(0)),
    );
  } catch {
    throw badRequest("Cannot read Authorization header: Basic credentials are not base64");
  }
  const colon = decoded.indexOf(":");
  if (colon < 0) throw badRequest("Cannot read Authorization header: Basic credentials lack ':'");
  return decoded.slice(colon + 1);
}
