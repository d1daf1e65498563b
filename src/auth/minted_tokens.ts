/**
 * Short-lived upload tokens minted for trusted publishers: random, kept only
 * as their sha256, each bound to the identity (publisher name, scope and CI
 * run) it was minted for, and forgotten when it expires. They live in memory:
 * a restart ends them, and CI mints a new one per run anyway.
 *
 * @module
 */

import { generateToken, sha256, toHex } from "./token_hash.ts";
import type { Identity } from "./token_scope.ts";

/** How long a minted token is valid by default: 15 minutes. */
export const MINTED_TOKEN_TTL_MS = 15 * 60 * 1000;

/** Options for {@linkcode MintedTokens}. */
export interface MintedTokensOptions {
  /**
   * How long a token is valid, in ms.
   * @default {MINTED_TOKEN_TTL_MS}
   */
  ttlMs?: number;
  /**
   * Most tokens alive at once; minting more is refused until some expire.
   * @default {10000}
   */
  maxLive?: number;
  /**
   * The clock, in ms since the epoch.
   * @default {Date.now}
   */
  now?: () => number;
}

/** A freshly minted token. */
export interface MintedToken {
  /** The secret, given once to the client and never stored. */
  token: string;
  /** When it stops being accepted. */
  expiresAt: Date;
}

interface Minted {
  identity: Identity;
  expiresAt: number;
}

/**
 * The live minted tokens.
 *
 * @example Usage
 * ```ts
 * import { MintedTokens } from "./minted_tokens.ts";
 * import { UNRESTRICTED_SCOPE } from "./token_scope.ts";
 * const tokens = new MintedTokens();
 * const { token } = tokens.mint({ kind: "publisher", name: "ci", scope: UNRESTRICTED_SCOPE });
 * console.log((await tokens.identify(token))?.name); // ci
 * ```
 */
export class MintedTokens {
  readonly #byHash = new Map<string, Minted>();
  readonly #ttlMs: number;
  readonly #maxLive: number;
  readonly #now: () => number;

  constructor(options: MintedTokensOptions = {}) {
    this.#ttlMs = options.ttlMs ?? MINTED_TOKEN_TTL_MS;
    this.#maxLive = options.maxLive ?? 10_000;
    this.#now = options.now ?? Date.now;
  }

  /** Number of tokens not yet swept (some may have expired since). */
  get size(): number {
    return this.#byHash.size;
  }

  /**
   * Mints a token for `identity`. Throws a `RangeError` when
   * {@linkcode MintedTokensOptions.maxLive} tokens are alive.
   */
  async mint(identity: Identity): Promise<MintedToken> {
    this.#sweep();
    if (this.#byHash.size >= this.#maxLive) {
      throw new RangeError(
        `Cannot mint token: ${this.#byHash.size} minted tokens are alive; try again later`,
      );
    }
    const token = generateToken();
    const expiresAt = this.#now() + this.#ttlMs;
    this.#byHash.set(toHex(await sha256(token)), { identity, expiresAt });
    return { token, expiresAt: new Date(expiresAt) };
  }

  /** The identity a live token was minted for, or undefined (unknown or expired). */
  async identify(token: string): Promise<Identity | undefined> {
    if (token.length === 0 || token.length > 4096) return undefined;
    // A map lookup by the sha256 of a 256-bit random secret: learning how
    // much of a hash matched tells nothing about any token.
    const key = toHex(await sha256(token));
    const minted = this.#byHash.get(key);
    if (minted === undefined) return undefined;
    if (this.#now() >= minted.expiresAt) {
      this.#byHash.delete(key);
      return undefined;
    }
    return minted.identity;
  }

  #sweep(): void {
    const now = this.#now();
    for (const [key, minted] of this.#byHash) {
      if (now >= minted.expiresAt) this.#byHash.delete(key);
    }
  }
}
