/**
 * Trusted publishing: exchanges a CI job's OIDC ID token for a short-lived
 * upload token. The token's issuer picks the candidate publishers, its
 * signature and times are verified ({@linkcode OidcVerifier}), then its
 * audience and claims must match one publisher; the minted token carries
 * that publisher's name and scope and the CI run's repository, run id and
 * workflow. A refusal is a 401 (the token is not valid here) or 403 (valid,
 * but no publisher's claims match), with a reason naming the claim.
 *
 * @module
 */

import * as jose from "jose";
import { HttpError, unauthorized } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";
import { matchGlob } from "./glob_pattern.ts";
import { type MintedToken, MintedTokens } from "./minted_tokens.ts";
import { OidcIssuerUnavailable, OidcTokenRejected, OidcVerifier } from "./oidc_verifier.ts";
import { type CiRun, type Identity, quote } from "./token_scope.ts";
import type { TrustedPublisher } from "./trusted_publishers.ts";

/** The audience older rattler-build and pixi releases ask GitHub for. */
export const PREFIX_DEV_AUDIENCE = "prefix.dev";

/** Options for {@linkcode TokenMinter}. */
export interface TokenMinterOptions {
  /**
   * The host name clients upload to (newer rattler releases ask for it as
   * the audience); with `prefix.dev`, the audience of a publisher that names
   * none.
   */
  serverName?: string;
  /**
   * Verifies the ID tokens.
   * @default {new OidcVerifier()}
   */
  verifier?: OidcVerifier;
  /**
   * Where minted tokens live.
   * @default {new MintedTokens()}
   */
  minted?: MintedTokens;
}

/** A minted token and who it is for. */
export interface MintResult extends MintedToken {
  /** The publisher and CI run the token speaks for. */
  identity: Identity;
}

interface Mismatch {
  /** How many checks passed before this one failed. */
  passed: number;
  error: HttpError;
}

/**
 * Mints upload tokens for trusted publishers.
 *
 * @example Usage
 * ```ts ignore
 * import { TokenMinter } from "./token_minter.ts";
 * const minter = new TokenMinter(publishers, { serverName: "conda.example.com" });
 * const { token } = await minter.mint(jwtFromCi);
 * ```
 */
export class TokenMinter {
  #publishers: readonly TrustedPublisher[];
  readonly #serverName: string | undefined;
  readonly #verifier: OidcVerifier;
  /** The tokens minted so far; the front door asks it for a bearer's identity. */
  readonly minted: MintedTokens;

  constructor(publishers: readonly TrustedPublisher[], options: TokenMinterOptions = {}) {
    this.#publishers = publishers;
    this.#serverName = options.serverName?.toLowerCase();
    this.#verifier = options.verifier ?? new OidcVerifier();
    this.minted = options.minted ?? new MintedTokens();
  }

  /** Number of trusted publishers. */
  get size(): number {
    return this.#publishers.length;
  }

  /** Replaces the trusted publishers at once (a reload); minted tokens stay valid. */
  replace(publishers: readonly TrustedPublisher[]): void {
    this.#publishers = publishers;
  }

  /** The audiences a publisher accepts, lowercase. */
  audiencesOf(publisher: TrustedPublisher): string[] {
    const audiences = publisher.audiences ??
      [...(this.#serverName === undefined ? [] : [this.#serverName]), PREFIX_DEV_AUDIENCE];
    return audiences.map((audience) => audience.toLowerCase());
  }

  /**
   * Verifies `jwt` and mints a token for the publisher it matches. Throws
   * {@linkcode HttpError}: 401 for a token that is not valid here, 403 when
   * no publisher's claims match, 502 when the issuer cannot be reached, 503
   * when too many minted tokens are alive.
   */
  async mint(jwt: string): Promise<MintResult> {
    let unverified: jose.JWTPayload;
    try {
      unverified = jose.decodeJwt(jwt);
    } catch {
      throw unauthorized("Cannot mint token: the token is not a JWT");
    }
    const issuer = unverified.iss;
    const publishers = this.#publishers;
    const candidates = publishers.filter((publisher) => publisher.issuer === issuer);
    if (typeof issuer !== "string" || candidates.length === 0) {
      throw unauthorized(
        `Cannot mint token: issuer ${quote(String(issuer))} is not a trusted publisher's issuer`,
      );
    }
    let claims: jose.JWTPayload;
    try {
      claims = await this.#verifier.verify(jwt, issuer);
    } catch (error) {
      if (error instanceof OidcTokenRejected) {
        throw unauthorized(`Cannot mint token: ${error.message}`);
      }
      if (error instanceof OidcIssuerUnavailable) {
        throw new HttpError(STATUS.BadGateway, `Cannot mint token: ${error.message}`, {
          cause: error,
        });
      }
      throw error;
    }
    let best: Mismatch | undefined;
    for (const publisher of candidates) {
      const mismatch = this.#mismatch(publisher, claims);
      if (mismatch === undefined) {
        const identity: Identity = {
          kind: "publisher",
          name: publisher.name,
          scope: publisher.scope,
          run: ciRun(claims),
        };
        try {
          return { ...await this.minted.mint(identity), identity };
        } catch (error) {
          if (error instanceof RangeError) {
            throw new HttpError(STATUS.ServiceUnavailable, error.message, {
              headers: { "retry-after": "60" },
            });
          }
          throw error;
        }
      }
      if (best === undefined || mismatch.passed > best.passed) best = mismatch;
    }
    throw best!.error;
  }

  /** Why `claims` do not match `publisher` (undefined when they do). */
  #mismatch(publisher: TrustedPublisher, claims: jose.JWTPayload): Mismatch | undefined {
    const accepted = this.audiencesOf(publisher);
    const audiences = (typeof claims.aud === "string" ? [claims.aud] : claims.aud ?? [])
      .map((audience) => String(audience).toLowerCase());
    if (!audiences.some((audience) => accepted.includes(audience))) {
      return {
        passed: 0,
        error: unauthorized(
          `Cannot mint token: audience ${
            audiences.length === 0 ? "(none)" : audiences.map(quote).join(", ")
          } is not accepted here (expected ${accepted.map(quote).join(" or ")})`,
        ),
      };
    }
    let passed = 1;
    for (const [claim, pattern] of Object.entries(publisher.claims)) {
      const value = claimText(claims[claim]);
      if (value === undefined) {
        return {
          passed,
          error: new HttpError(
            STATUS.Forbidden,
            `Cannot mint token: the token has no claim ${
              quote(claim)
            }, which a trusted publisher requires`,
          ),
        };
      }
      if (!matchGlob(pattern, value)) {
        return {
          passed,
          error: new HttpError(
            STATUS.Forbidden,
            `Cannot mint token: claim ${quote(claim)} is ${
              quote(value)
            }, which no trusted publisher accepts`,
          ),
        };
      }
      passed++;
    }
    return undefined;
  }
}

/** A claim as text: strings as they are, numbers and booleans spelled out. */
function claimText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return undefined;
}

/** The CI run from GitHub's or GitLab's claims. */
function ciRun(claims: jose.JWTPayload): CiRun {
  const pick = (...names: string[]) => {
    for (const name of names) {
      const value = claimText(claims[name]);
      // deno-lint-ignore no-control-regex
      if (value !== undefined) return value.replace(/[\u0000-\u001f\u007f]/g, "").slice(0, 200);
    }
    return undefined;
  };
  const run: CiRun = {};
  const repository = pick("repository", "project_path");
  const runId = pick("run_id", "pipeline_id");
  const workflow = pick("workflow_ref", "ci_config_ref_uri", "workflow");
  if (repository !== undefined) run.repository = repository;
  if (runId !== undefined) run.runId = runId;
  if (workflow !== undefined) run.workflow = workflow;
  return run;
}
