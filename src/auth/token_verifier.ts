/**
 * Checks upload tokens against the configured token hashes in constant time
 * and names who sent them: a verified token yields its {@linkcode Identity}
 * (the token's name and scope).
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { TokenEntry } from "./token_file.ts";
import { DEFAULT_SALT, fromHex, isTokenHash, sha256, toHex } from "./token_hash.ts";
import { type Identity, UNRESTRICTED_SCOPE } from "./token_scope.ts";

interface Known {
  hash: Uint8Array;
  identity: Identity;
}

/**
 * Verifies tokens against one or more hashes (several may be active during a
 * rotation). Every configured hash is compared, byte by byte, without early
 * exit, so the time taken does not depend on how much of a hash matched.
 * {@linkcode TokenVerifier.replace} swaps the whole list at once (a reload
 * of the token hash file); a verification sees the old or the new list,
 * never a mix.
 *
 * @example Usage
 * ```ts
 * import { TokenVerifier } from "./token_verifier.ts";
 * import { hashToken } from "./token_hash.ts";
 * const verifier = new TokenVerifier([await hashToken("secret")]);
 * console.log((await verifier.identify("secret"))?.kind); // token
 * ```
 */
export class TokenVerifier {
  #known: Known[] = [];
  readonly #salt: string;

  /**
   * `entries` are token file entries, or bare hashes (hex sha256 of salt +
   * token, which may do everything); `salt` defaults to the original tool's.
   */
  constructor(entries: readonly (string | TokenEntry)[], salt?: string) {
    this.#salt = salt ?? DEFAULT_SALT;
    this.replace(entries);
  }

  /** Number of active hashes. */
  get size(): number {
    return this.#known.length;
  }

  /** Replaces every accepted token at once. Throws a `TypeError` for a malformed hash. */
  replace(entries: readonly (string | TokenEntry)[]): void {
    const known = entries.map((entry): Known => {
      const { hash, name, scope } = typeof entry === "string"
        ? { hash: entry, name: undefined, scope: UNRESTRICTED_SCOPE }
        : entry;
      if (!isTokenHash(hash)) {
        throw new TypeError("Cannot use token hash: it is not 64 hex digits");
      }
      const bytes = fromHex(hash.toLowerCase());
      return { hash: bytes, identity: { kind: "token", name: name ?? unnamed(bytes), scope } };
    });
    this.#known = known;
  }

  /** Returns the identity of a valid token, or undefined. */
  async identify(token: string): Promise<Identity | undefined> {
    if (token.length === 0 || token.length > 4096) return undefined;
    const known = this.#known;
    const candidate = await sha256(this.#salt + token);
    let match: Known | undefined;
    for (const entry of known) {
      // Constant-time comparison; every hash is compared in full.
      const expected = entry.hash;
      let difference = expected.length ^ candidate.length;
      for (let i = 0; i < expected.length; i++) difference |= expected[i]! ^ (candidate[i] ?? 0);
      if (difference === 0) match = entry;
    }
    return match?.identity;
  }
}

/**
 * The name of a bare hash: `token:` and 8 hex digits of the sha256 of the
 * hash's hex, so logs can tell tokens apart without holding the hash.
 */
function unnamed(hash: Uint8Array): string {
  return "token:" + createHash("sha256").update(toHex(hash)).digest("hex").slice(0, 8);
}
