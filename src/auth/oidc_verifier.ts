/**
 * Verifies a CI provider's OIDC ID token (a JWT) with the `jose` library:
 * the issuer's keys come from OpenID discovery (`<issuer>/.well-known/
 * openid-configuration` → `jwks_uri`), cached, and fetched again when a token
 * names an unknown key id (at most once per cool-down). Only RS256 and
 * ES256 signatures are accepted, never `none`; `iss` must be the expected
 * issuer, `exp`, `nbf` and `iat` are checked with a small leeway. The
 * audience and the other claims are the caller's to check.
 *
 * Fetches use the global `fetch` unless told otherwise, so Deno's
 * `DENO_CERT` decides which extra CA the issuer's TLS may chain to.
 *
 * @module
 */

import * as jose from "jose";
import { quote } from "./token_scope.ts";

/** Oldest `iat` accepted: one day. */
const MAX_TOKEN_AGE_SECONDS = 86_400;

/** The signature algorithms accepted. */
export const OIDC_ALGORITHMS: readonly string[] = ["RS256", "ES256"];

/** The token was refused: its reason reads well after "Cannot mint token: ". */
export class OidcTokenRejected extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OidcTokenRejected";
  }
}

/** The issuer's discovery document or key set could not be had. */
export class OidcIssuerUnavailable extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "OidcIssuerUnavailable";
  }
}

/** Options for {@linkcode OidcVerifier}. */
export interface OidcVerifierOptions {
  /**
   * The fetch used for discovery and key sets (tests pass one with their CA).
   * @default {globalThis.fetch}
   */
  fetch?: typeof fetch;
  /**
   * Leeway for `exp`, `nbf` and `iat`, in seconds.
   * @default {60}
   */
  clockToleranceSeconds?: number;
  /**
   * Least time between two key set fetches caused by unknown key ids, in ms.
   * @default {30000}
   */
  jwksCooldownMs?: number;
  /**
   * Time to wait for the issuer to answer, in ms.
   * @default {5000}
   */
  timeoutMs?: number;
  /**
   * After a failed discovery, how long to answer with that failure before
   * asking the issuer again, in ms.
   * @default {10000}
   */
  discoveryRetryMs?: number;
  /**
   * The clock, in ms since the epoch.
   * @default {Date.now}
   */
  now?: () => number;
}

interface IssuerKeys {
  keys: jose.RemoteJWKSet;
  failedAt?: number;
  failure?: OidcIssuerUnavailable;
}

/**
 * Verifies ID tokens of known issuers, keeping one key set per issuer.
 *
 * @example Usage
 * ```ts ignore
 * import { OidcVerifier } from "./oidc_verifier.ts";
 * const verifier = new OidcVerifier();
 * const claims = await verifier.verify(jwt, "https://token.actions.githubusercontent.com");
 * console.log(claims.repository);
 * ```
 */
export class OidcVerifier {
  readonly #options: OidcVerifierOptions;
  readonly #issuers = new Map<string, Promise<IssuerKeys>>();

  constructor(options: OidcVerifierOptions = {}) {
    this.#options = options;
  }

  /**
   * The verified claims of `jwt`, issued by `issuer`. Throws
   * {@linkcode OidcTokenRejected} for a token that is not valid and
   * {@linkcode OidcIssuerUnavailable} when the issuer's keys cannot be had.
   */
  async verify(jwt: string, issuer: string): Promise<jose.JWTPayload> {
    let header: jose.ProtectedHeaderParameters;
    try {
      header = jose.decodeProtectedHeader(jwt);
    } catch {
      throw new OidcTokenRejected("the token is not a JWT");
    }
    if (typeof header.alg !== "string" || !OIDC_ALGORITHMS.includes(header.alg)) {
      throw new OidcTokenRejected(
        `algorithm ${quote(String(header.alg))} is not accepted (${
          OIDC_ALGORITHMS.join(", ")
        } only)`,
      );
    }
    const { keys } = await this.#keysOf(issuer);
    const tolerance = this.#options.clockToleranceSeconds ?? 60;
    try {
      const { payload } = await jose.jwtVerify(jwt, keys, {
        issuer,
        algorithms: [...OIDC_ALGORITHMS],
        clockTolerance: tolerance,
        // Bounds `iat` both ways. GitLab issues a job's ID token when the
        // job starts, so a long build uploads with an old `iat`; `exp` is
        // what ends a token, this only refuses nonsense.
        maxTokenAge: MAX_TOKEN_AGE_SECONDS,
        requiredClaims: ["exp", "iat"],
        currentDate: new Date((this.#options.now ?? Date.now)()),
      });
      return payload;
    } catch (error) {
      throw rejection(error, header);
    }
  }

  /** The issuer's key set, after discovery; failures are remembered for a while. */
  async #keysOf(issuer: string): Promise<IssuerKeys> {
    const now = (this.#options.now ?? Date.now)();
    let pending = this.#issuers.get(issuer);
    if (pending !== undefined) {
      const known = await pending;
      if (known.failure === undefined) return known;
      if (now - known.failedAt! < (this.#options.discoveryRetryMs ?? 10_000)) throw known.failure;
      this.#issuers.delete(issuer);
    }
    pending = this.#discover(issuer).catch((error: unknown): IssuerKeys => ({
      keys: undefined as unknown as jose.RemoteJWKSet,
      failedAt: (this.#options.now ?? Date.now)(),
      failure: error instanceof OidcIssuerUnavailable
        ? error
        : new OidcIssuerUnavailable(`cannot discover issuer ${issuer}`, { cause: error }),
    }));
    this.#issuers.set(issuer, pending);
    const known = await pending;
    if (known.failure !== undefined) throw known.failure;
    return known;
  }

  async #discover(issuer: string): Promise<IssuerKeys> {
    const fetcher = this.#options.fetch ?? fetch;
    const timeoutMs = this.#options.timeoutMs ?? 5000;
    const url = issuer.replace(/\/+$/, "") + "/.well-known/openid-configuration";
    let document: unknown;
    try {
      const response = await fetcher(url, {
        headers: { accept: "application/json" },
        redirect: "error",
        signal: AbortSignal.timeout(timeoutMs),
      });
      if (!response.ok) {
        await response.body?.cancel();
        throw new OidcIssuerUnavailable(
          `the issuer's discovery document ${url} answered ${response.status}`,
        );
      }
      const text = await response.text();
      if (text.length > 1024 * 1024) {
        throw new OidcIssuerUnavailable(`the issuer's discovery document ${url} is too large`);
      }
      document = JSON.parse(text);
    } catch (error) {
      if (error instanceof OidcIssuerUnavailable) throw error;
      throw new OidcIssuerUnavailable(
        `cannot fetch the issuer's discovery document ${url}: ${describe(error)}`,
        { cause: error },
      );
    }
    const fields = (document ?? {}) as Record<string, unknown>;
    if (fields.issuer !== issuer) {
      throw new OidcIssuerUnavailable(
        `the discovery document ${url} names issuer ${quote(String(fields.issuer))}, not ${
          quote(issuer)
        }`,
      );
    }
    const jwksUri = fields.jwks_uri;
    if (typeof jwksUri !== "string" || !jwksUri.startsWith("https://")) {
      throw new OidcIssuerUnavailable(`the discovery document ${url} has no https jwks_uri`);
    }
    const options: jose.RemoteJWKSetOptions = {
      timeoutDuration: timeoutMs,
      cooldownDuration: this.#options.jwksCooldownMs ?? 30_000,
      cacheMaxAge: 10 * 60 * 1000,
    };
    if (this.#options.fetch !== undefined) {
      options[jose.customFetch] = this.#options.fetch as jose.FetchImplementation;
    }
    return { keys: jose.createRemoteJWKSet(new URL(jwksUri), options) };
  }
}

/** Turns a jose error into the reason a client reads. */
function rejection(error: unknown, header: jose.ProtectedHeaderParameters): Error {
  const { errors } = jose;
  if (error instanceof errors.JWTExpired && error.claim === "iat") {
    return new OidcTokenRejected("claim 'iat' is more than a day ago");
  }
  if (error instanceof errors.JWTExpired) {
    const exp = typeof error.payload.exp === "number"
      ? ` at ${new Date(error.payload.exp * 1000).toISOString()}`
      : "";
    return new OidcTokenRejected(`the token expired${exp}`);
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === "iss") {
      return new OidcTokenRejected(
        `claim 'iss' is ${quote(String(error.payload.iss))}, not the expected issuer`,
      );
    }
    if (error.claim === "nbf") return new OidcTokenRejected("the token is not valid yet (nbf)");
    if (error.claim === "iat") {
      return new OidcTokenRejected(
        error.reason === "check_failed"
          ? "claim 'iat' is in the future"
          : `claim 'iat' is ${error.reason}`,
      );
    }
    return new OidcTokenRejected(
      `claim ${quote(error.claim)} is ${error.reason.replace("_", " ")}`,
    );
  }
  if (error instanceof errors.JOSEAlgNotAllowed) {
    return new OidcTokenRejected(
      `algorithm ${quote(String(header.alg))} is not accepted (${OIDC_ALGORITHMS.join(", ")} only)`,
    );
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return new OidcTokenRejected("the signature does not verify with the issuer's key");
  }
  if (error instanceof errors.JWKSNoMatchingKey) {
    return new OidcTokenRejected(
      `the issuer has no key ${
        header.kid === undefined ? `for algorithm ${header.alg}` : quote(header.kid)
      } (kid)`,
    );
  }
  if (error instanceof errors.JWKSMultipleMatchingKeys) {
    return new OidcTokenRejected("the token names no key id (kid) and the issuer has several keys");
  }
  if (error instanceof errors.JWKSTimeout) {
    return new OidcIssuerUnavailable("the issuer's key set did not answer in time", {
      cause: error,
    });
  }
  if (error instanceof errors.JWKSInvalid) {
    return new OidcIssuerUnavailable("the issuer's key set is not a valid JWKS", { cause: error });
  }
  if (
    error instanceof errors.JWSInvalid || error instanceof errors.JWTInvalid ||
    error instanceof errors.JOSENotSupported || error instanceof errors.JWKInvalid
  ) {
    return new OidcTokenRejected("the token is not a valid signed JWT");
  }
  return new OidcIssuerUnavailable(`cannot fetch the issuer's key set: ${describe(error)}`, {
    cause: error,
  });
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause === undefined ? "" : `: ${describe(error.cause)}`;
  return `${error.message}${cause}`.split("\n")[0]!.slice(0, 300);
}
