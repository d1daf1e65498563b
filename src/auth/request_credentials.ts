/**
 * Reads the token a client presents in HTTP headers: `Authorization: Bearer`,
 * `Authorization: Basic` (the password holds the token) or `X-API-Key`.
 *
 * @module
 */

import { badRequest, unauthorized } from "../http/http_error.ts";
import type { Principal, TokenVerifier } from "./token_verifier.ts";

/**
 * The token in the request's headers, or undefined when none is sent.
 * A malformed `Authorization` header is a 400.
 */
export function headerToken(headers: Headers): string | undefined {
  const authorization = headers.get("authorization");
  if (authorization !== null) {
    const match = /^(\S+)\s+(\S+)\s*$/.exec(authorization);
    if (!match) throw badRequest("Cannot read Authorization header: expected '<scheme> <token>'");
    const scheme = match[1]!.toLowerCase();
    const value = match[2]!;
    if (scheme === "bearer") return value;
    if (scheme === "basic") return basicPassword(value);
    throw badRequest("Cannot read Authorization header: scheme must be Bearer or Basic");
  }
  const apiKey = headers.get("x-api-key");
  return apiKey === null ? undefined : apiKey.trim();
}

/** Verifies `token`; a missing or wrong token is a 401 with `WWW-Authenticate`. */
export async function authenticate(
  verifier: TokenVerifier,
  token: string | undefined,
): Promise<Principal> {
  if (token === undefined || token === "") {
    throw unauthorized("Cannot upload: no token was sent");
  }
  const principal = await verifier.verify(token);
  if (principal === undefined) throw unauthorized("Cannot upload: the token is not valid");
  return principal;
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
