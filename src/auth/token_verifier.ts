/**
 * Checks upload tokens against the configured token hashes in constant time.
 *
 * @module
 */

import { DEFAULT_SALT, fromHex, isTokenHash, sha256, toHex } from "./token_hash.ts";

/** Who uploaded: a short id derived from the matching hash, never the token itself. */
export type Principal = string;

/**
 * Verifies tokens against one or more hashes (several may be active during a
 * rotation). Every configured hash is compared, byte by byte, without early
 * exit, so the time taken does not depend on how much of a hash matched.
 *
 * @example Usage
 * ```ts
 * import { TokenVerifier } from "./token_verifier.ts";
 * import { hashToken } from "./token_hash.ts";
 * const verifier = new TokenVerifier([await hashToken("secret")]);
 * console.log(await verifier.verify("secret") !== undefined); // true
 * ```
 */
export class TokenVerifier {
  readonly #hashes: Uint8Array[];
  readonly #ids: Principal[];
  readonly #salt: string;

  /** `hashes` are hex sha256 of salt + token; `salt` defaults to the original tool's. */
  constructor(hashes: readonly string[], salt?: string) {
    for (const hash of hashes) {
      if (!isTokenHash(hash)) {
        throw new TypeError(`Cannot use token hash: ${JSON.stringify(hash)} is not 64 hex digits`);
      }
    }
    this.#hashes = hashes.map((hash) => fromHex(hash.toLowerCase()));
    this.#ids = [];
    this.#salt = salt ?? DEFAULT_SALT;
  }

  /** Number of active hashes. */
  get size(): number {
    return this.#hashes.length;
  }

  /** Returns the principal of a valid token, or undefined. */
  async verify(token: string): Promise<Principal | undefined> {
    if (token.length === 0 || token.length > 4096) return undefined;
    const candidate = await sha256(this.#salt + token);
    let match = -1;
    for (let index = 0; index < this.#hashes.length; index++) {
      // Constant-time comparison; every hash is compared in full.
      const expected = this.#hashes[index]!;
      let difference = expected.length ^ candidate.length;
      for (let i = 0; i < expected.length; i++) difference |= expected[i]! ^ (candidate[i] ?? 0);
      if (difference === 0) match = index;
    }
    if (match < 0) return undefined;
    return await this.#principal(match);
  }

  async #principal(index: number): Promise<Principal> {
    this.#ids[index] ??= "token:" +
      toHex(await sha256(toHex(this.#hashes[index]!))).slice(0, 8);
    return this.#ids[index]!;
  }
}
