/**
 * The `--trusted_publishers` file: a JSON list of CI workflows that may
 * publish without a stored secret. Each names the OIDC `issuer`, the claims
 * its tokens must carry (exact values or globs), the accepted `audience`, and
 * the same `name`/`channels`/`packages`/`can` scope as a token:
 *
 * ```json
 * [{
 *   "name": "mylib-release",
 *   "issuer": "https://token.actions.githubusercontent.com",
 *   "claims": {
 *     "repository": "acme/mylib",
 *     "workflow_ref": "acme/mylib/.github/workflows/release.yml@refs/tags/v*",
 *     "environment": "release"
 *   },
 *   "channels": ["main"],
 *   "packages": ["mylib", "mylib-*"],
 *   "can": ["upload"]
 * }]
 * ```
 *
 * @module
 */

import { matchesEverything } from "./glob_pattern.ts";
import { readAuthFile } from "./read_auth_file.ts";
import { quote, type Scope, scopeFromLists, type ScopeLists } from "./token_scope.ts";

/** One trusted publisher. */
export interface TrustedPublisher {
  /** Its name in logs, the audit log and metrics. */
  name: string;
  /** The OIDC issuer, exactly as in the tokens' `iss` claim (https). */
  issuer: string;
  /** The audiences accepted; undefined: the server's name and `prefix.dev`. */
  audiences?: readonly string[];
  /** Claim name → exact value or glob that the token's claim must match. */
  claims: Readonly<Record<string, string>>;
  /** What its minted tokens may do. */
  scope: Scope;
}

/**
 * Claims that say whose workflow it is. A publisher must pin at least one of
 * them (not to `*`): otherwise every repository on the issuer could publish.
 */
export const IDENTITY_CLAIMS: readonly string[] = [
  "repository",
  "repository_id",
  "repository_owner",
  "repository_owner_id",
  "project_path",
  "project_id",
  "namespace_path",
  "namespace_id",
  "sub",
];

/** Claims checked by the verifier itself, never by a publisher's `claims`. */
const RESERVED_CLAIMS = ["iss", "aud", "exp", "nbf", "iat", "jti"];
const KEYS = ["name", "issuer", "audience", "claims", "channels", "packages", "can"];
const PUBLISHER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const CLAIM_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/**
 * Parses the JSON text of a trusted publishers file. Throws a `SyntaxError`
 * naming the publisher (by position and name) and the field.
 *
 * @example Usage
 * ```ts
 * import { parseTrustedPublishers } from "./trusted_publishers.ts";
 * const [publisher] = parseTrustedPublishers(JSON.stringify([{
 *   name: "mylib-release",
 *   issuer: "https://token.actions.githubusercontent.com",
 *   claims: { repository: "acme/mylib" },
 * }]));
 * console.log(publisher?.claims.repository); // acme/mylib
 * ```
 */
export function parseTrustedPublishers(text: string): TrustedPublisher[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new SyntaxError(`not JSON: ${(error as Error).message}`);
  }
  if (!Array.isArray(json)) throw new SyntaxError("expected a JSON list of publishers");
  const names = new Set<string>();
  return json.map((item, index) => {
    const label = `publisher ${index + 1}${
      isRecord(item) && typeof item.name === "string" ? ` (${quote(item.name)})` : ""
    }`;
    try {
      const publisher = parsePublisher(item);
      if (names.has(publisher.name)) throw new SyntaxError("its name is used twice");
      names.add(publisher.name);
      return publisher;
    } catch (error) {
      if (!(error instanceof SyntaxError)) throw error;
      throw new SyntaxError(`${label}: ${error.message}`);
    }
  });
}

function parsePublisher(item: unknown): TrustedPublisher {
  if (!isRecord(item)) throw new SyntaxError("expected an object");
  for (const key of Object.keys(item)) {
    if (!KEYS.includes(key)) {
      throw new SyntaxError(`unknown field ${quote(key)} (fields: ${KEYS.join(", ")})`);
    }
  }
  const name = item.name;
  if (typeof name !== "string" || !PUBLISHER_NAME.test(name)) {
    throw new SyntaxError("name must be a name (letters, digits, . _ -; at most 64)");
  }
  const issuer = item.issuer;
  if (typeof issuer !== "string" || !isHttpsUrl(issuer)) {
    throw new SyntaxError(
      "issuer must be an https URL, e.g. https://token.actions.githubusercontent.com",
    );
  }
  const claims = parseClaims(item.claims);
  const lists: { -readonly [K in keyof ScopeLists]: ScopeLists[K] } = {};
  for (const key of ["channels", "packages", "can"] as const) {
    if (item[key] !== undefined) lists[key] = stringList(key, item[key]);
  }
  const publisher: TrustedPublisher = { name, issuer, claims, scope: scopeFromLists(lists) };
  if (item.audience !== undefined) {
    const audiences = typeof item.audience === "string"
      ? [item.audience]
      : stringList("audience", item.audience);
    if (audiences.length === 0 || audiences.some((audience) => audience === "")) {
      throw new SyntaxError("audience must be a non-empty string or list of strings");
    }
    publisher.audiences = audiences;
  }
  return publisher;
}

function parseClaims(value: unknown): Record<string, string> {
  if (!isRecord(value)) {
    throw new SyntaxError(
      `claims must be an object such as {"repository": "owner/name"} (one of ${
        IDENTITY_CLAIMS.join(", ")
      } at least)`,
    );
  }
  const claims: Record<string, string> = {};
  for (const [claim, pattern] of Object.entries(value)) {
    if (!CLAIM_NAME.test(claim)) {
      throw new SyntaxError(`claims: ${quote(claim)} is not a claim name`);
    }
    if (RESERVED_CLAIMS.includes(claim)) {
      throw new SyntaxError(
        `claims: ${quote(claim)} is checked by the server itself (use "issuer" and "audience")`,
      );
    }
    if (typeof pattern !== "string" || pattern === "") {
      throw new SyntaxError(`claims: ${claim} must be a non-empty string (exact value or glob)`);
    }
    claims[claim] = pattern;
  }
  const pinned = IDENTITY_CLAIMS.some((claim) =>
    claims[claim] !== undefined && !matchesEverything(claims[claim]!)
  );
  if (!pinned) {
    throw new SyntaxError(
      `claims must pin one of ${
        IDENTITY_CLAIMS.join(", ")
      } to a value (else any repository on the issuer could publish)`,
    );
  }
  return claims;
}

function stringList(field: string, value: unknown): string[] {
  if (!Array.isArray(value) || value.some((item) => typeof item !== "string")) {
    throw new SyntaxError(`${field} must be a list of strings`);
  }
  return value as string[];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isHttpsUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return url.protocol === "https:" && url.search === "" && url.hash === "" &&
      url.username === "" && url.password === "";
  } catch {
    return false;
  }
}

/**
 * Reads and parses a trusted publishers file. Throws an `Error` whose
 * message names the file ("Cannot read trusted publishers file F: ...").
 */
export async function readTrustedPublishers(path: string): Promise<TrustedPublisher[]> {
  return await readAuthFile(path, "trusted publishers file", parseTrustedPublishers);
}
