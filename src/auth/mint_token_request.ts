/**
 * The prefix.dev trusted-publishing exchange as rattler-build and pixi speak
 * it: `POST /api/oidc/mint_token` with the JSON body `{"token": "<JWT>"}`;
 * the answer's whole body is the upload token, which the client then sends
 * as `Authorization: Bearer` to the prefix upload route. So the body is the
 * token and nothing else: no newline, no JSON.
 *
 * @module
 */

import { guardBody } from "../http/guarded_body.ts";
import { badRequest, HttpError } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";

/** The path clients post their ID token to. */
export const MINT_TOKEN_PATH = "/api/oidc/mint_token";

/** Largest mint request body read: ID tokens are a few KiB. */
export const MAX_MINT_REQUEST_BYTES = 64 * 1024;

/** Longest time for the whole mint request body (a few KiB of JSON), in ms. */
export const MINT_REQUEST_DEADLINE_MS = 10_000;

/** Options for {@linkcode readMintTokenRequest}. */
export interface ReadMintTokenOptions {
  /**
   * Longest wait for the next body chunk, in ms; then 408.
   * @default {no idle guard}
   */
  idleMs?: number;
  /** When aborted (server shutdown), the read fails with 503. */
  signal?: AbortSignal;
  /**
   * Longest time for the whole body, in ms; then 408.
   * @default {MINT_REQUEST_DEADLINE_MS}
   */
  totalMs?: number;
}

/**
 * The ID token in a mint request. Throws {@linkcode HttpError}: 413 for a
 * body over {@linkcode MAX_MINT_REQUEST_BYTES}, 400 for anything but
 * `{"token": "<non-empty string>"}`, 408 for a body that stalls
 * (`options.idleMs`) or takes longer than `options.totalMs`, 503 when
 * `options.signal` aborts.
 *
 * @example Usage
 * ```ts
 * import { readMintTokenRequest } from "./mint_token_request.ts";
 * const request = new Request("https://example.com/api/oidc/mint_token", {
 *   method: "POST",
 *   body: JSON.stringify({ token: "a.b.c" }),
 * });
 * console.log(await readMintTokenRequest(request)); // a.b.c
 * ```
 */
export async function readMintTokenRequest(
  request: Request,
  options: ReadMintTokenOptions = {},
): Promise<string> {
  const length = request.headers.get("content-length");
  if (length !== null && Number(length) > MAX_MINT_REQUEST_BYTES) {
    await request.body?.cancel();
    throw tooLarge();
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (request.body !== null) {
    const { idleMs, signal, totalMs = MINT_REQUEST_DEADLINE_MS } = options;
    const body = idleMs === undefined
      ? request.body
      : guardBody(request.body, { idleMs, ...(signal ? { signal } : {}) });
    const reader = body.getReader();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<"deadline">((resolve) => {
      timer = setTimeout(() => resolve("deadline"), totalMs);
    });
    try {
      while (true) {
        const result = await Promise.race([reader.read(), deadline]);
        if (result === "deadline") {
          reader.cancel().catch(() => {});
          throw new HttpError(
            STATUS.RequestTimeout,
            `Cannot mint token: the request body took longer than ${Math.round(totalMs / 1000)} s`,
          );
        }
        if (result.done) break;
        size += result.value.byteLength;
        if (size > MAX_MINT_REQUEST_BYTES) {
          await reader.cancel();
          throw tooLarge();
        }
        chunks.push(result.value);
      }
    } finally {
      clearTimeout(timer);
    }
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw expected();
  }
  const token = typeof body === "object" && body !== null
    ? (body as Record<string, unknown>).token
    : undefined;
  if (typeof token !== "string" || token.trim() === "") throw expected();
  return token.trim();
}

/** The answer to a successful mint: the token as the whole body, never cached. */
export function mintTokenResponse(token: string): Response {
  return new Response(token, {
    status: STATUS.OK,
    headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" },
  });
}

function tooLarge(): HttpError {
  return new HttpError(
    STATUS.ContentTooLarge,
    `Cannot mint token: the request body is over ${MAX_MINT_REQUEST_BYTES} bytes`,
  );
}

function expected(): HttpError {
  return badRequest('Cannot mint token: expected the JSON body {"token": "<OIDC ID token>"}');
}
