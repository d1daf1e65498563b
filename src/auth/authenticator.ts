/**
 * Resolves credentials into an {@linkcode Identity} (a configured token, or
 * a token minted for a trusted publisher), once per request, and
 * feeds the failed-token throttle from that result: a wrong token, or a
 * request that ends without presenting one, is a failure whose answer the
 * throttle may hold back (see `auth_throttle.ts`).
 *
 * @module
 */

import { HttpError, unauthorized } from "../http/http_error.ts";
import type { AuthThrottle } from "./auth_throttle.ts";
import type { MintedTokens } from "./minted_tokens.ts";
import type { Credentials, CredentialSource } from "./request_credentials.ts";
import type { Identity as TokenIdentity } from "./token_scope.ts";
import type { TokenVerifier } from "./token_verifier.ts";

/** Who a request acts as, once its credentials are verified: name, scope and CI run. */
export interface Identity extends TokenIdentity {
  /** Where the token came from. */
  source: CredentialSource;
}

/** Options for {@linkcode Authenticator}. */
export interface AuthenticatorOptions {
  /** Called once per failed attempt (metrics). */
  onFailure?: () => void;
  /** Tokens minted for trusted publishers, accepted besides the configured ones. */
  minted?: MintedTokens;
}

/** Verifies credentials under the per-address throttle. */
export class Authenticator {
  readonly #verifier: TokenVerifier;
  readonly #throttle: AuthThrottle;
  readonly #options: AuthenticatorOptions;

  constructor(verifier: TokenVerifier, throttle: AuthThrottle, options: AuthenticatorOptions = {}) {
    this.#verifier = verifier;
    this.#throttle = throttle;
    this.#options = options;
  }

  /**
   * The identity of `credentials` sent from `client`. Throws 429 when the
   * address has too many unanswered attempts (before verifying), and a 401
   * for a missing or wrong token once the throttle lets the failure be
   * answered. `signal` ends a held wait when the client goes away.
   */
  async authenticate(
    credentials: Credentials,
    client: string,
    signal?: AbortSignal,
  ): Promise<Identity> {
    const attempt = this.#throttle.admit(client);
    const { token, source } = credentials;
    let identity: TokenIdentity | undefined;
    try {
      identity = token === undefined || token === "" || source === undefined
        ? undefined
        : await this.#verifier.identify(token) ?? await this.#options.minted?.identify(token);
    } catch (error) {
      attempt.succeeded(); // not an answer about the token
      throw error;
    }
    if (identity !== undefined && source !== undefined) {
      attempt.succeeded();
      return { ...identity, source };
    }
    this.#options.onFailure?.();
    await attempt.failed(signal);
    throw unauthorized(
      token === undefined || token === ""
        ? "Cannot upload: no token was sent"
        : "Cannot upload: the token is not valid",
    );
  }

  /**
   * Counts a request that ends without presenting a token (its token field
   * never came, or came after the artifact) as a failed attempt, and
   * rethrows `error` once the throttle lets the failure be answered.
   */
  async refuse(error: HttpError, client: string, signal?: AbortSignal): Promise<never> {
    let attempt;
    try {
      attempt = this.#throttle.admit(client);
    } catch (refused) {
      if (refused instanceof HttpError) throw error;
      throw refused;
    }
    this.#options.onFailure?.();
    await attempt.failed(signal);
    throw error;
  }
}
