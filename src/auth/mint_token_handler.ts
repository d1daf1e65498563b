/**
 * `POST /api/oidc/mint_token`: trusted publishing's token exchange (see
 * `mint_token_request.ts` for the protocol and `token_minter.ts` for the
 * checks). A refused ID token counts as a failed token attempt of the
 * client's address, like a wrong upload token.
 *
 * @module
 */

import { HttpError } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";
import type { Logger } from "../log.ts";
import type { AuthThrottle } from "./auth_throttle.ts";
import { mintTokenResponse, readMintTokenRequest } from "./mint_token_request.ts";
import type { TokenMinter } from "./token_minter.ts";
import { identityFields } from "./token_scope.ts";

/** What {@linkcode handleMintToken} needs. */
export interface MintTokenContext {
  /** Verifies ID tokens and mints upload tokens; undefined without trusted publishers. */
  minter: TokenMinter | undefined;
  /** Failed-token slow-down per client address. */
  throttle: AuthThrottle;
  /** Where the "minted upload token" line goes. */
  logger: Logger;
  /** Longest wait for the next chunk of the request body, in ms (408 after it). */
  bodyIdleMs: number;
  /** Aborts a body still being read (server shutdown: 503). */
  signal?: AbortSignal;
  /** Called once per refused ID token (metrics). */
  onFailure?: () => void;
}

/**
 * Answers a mint request from `client`: 200 with the upload token as the
 * whole body, or the minter's 401/403/502/503, or 404 when no trusted
 * publisher is configured.
 */
export async function handleMintToken(
  request: Request,
  client: string,
  context: MintTokenContext,
): Promise<Response> {
  const { minter } = context;
  if (minter === undefined || minter.size === 0) {
    await request.body?.cancel();
    throw new HttpError(
      STATUS.NotFound,
      "Cannot mint token: this server has no trusted publishers (--trusted_publishers)",
    );
  }
  // The body is read before the throttle admits the attempt: a client that
  // stalls its body must not hold one of its address's throttle places.
  const jwt = await readMintTokenRequest(request, {
    idleMs: context.bodyIdleMs,
    ...(context.signal ? { signal: context.signal } : {}),
  });
  const attempt = context.throttle.admit(client);
  try {
    const minted = await minter.mint(jwt);
    attempt.succeeded();
    context.logger.info("minted upload token", {
      ...identityFields(minted.identity),
      expires: minted.expiresAt.toISOString(),
      client,
    });
    return mintTokenResponse(minted.token);
  } catch (error) {
    const refused = error instanceof HttpError &&
      (error.status === STATUS.Unauthorized || error.status === STATUS.Forbidden);
    if (!refused) {
      attempt.succeeded();
      throw error;
    }
    context.onFailure?.();
    await attempt.failed(request.signal);
    throw error;
  }
}
