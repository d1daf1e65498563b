/**
 * `POST /` (and `POST /NAME/` for a `--channel NAME=DIR` channel): the
 * original tool's upload protocol. A multipart form with the
 * fields `token` and `artifact` (as `curl -F` and Python `requests` send it),
 * plus the optional `sha256` and `arch` fields; `Authorization: Bearer` (or
 * any other head credentials) is accepted instead of the `token` field.
 *
 * The `token` field must come before `artifact` (else 401). Until it has
 * arrived the request is not authenticated: it waits in the small pre-token
 * pool, not in an upload slot, and the bytes before the token get a small
 * total budget (see `pre_auth_pool.ts`). Success is a 201 with the stored
 * package as JSON.
 *
 * @module
 */

import { STATUS } from "../http/status.ts";
import { declaredLength, type UploadIntent, type WriteRequest } from "./upload_intent.ts";

/**
 * Matches `/NAME/` (or `/NAME`), the root of a channel served at `/NAME/`,
 * and returns NAME; undefined for any other path. Whether a channel of that
 * name exists is the front door's to say (404).
 *
 * @example Usage
 * ```ts
 * import { matchChannelRootPath } from "./form_protocol.ts";
 * console.log(matchChannelRootPath("/staging/")); // staging
 * console.log(matchChannelRootPath("/staging/linux-64/")); // undefined
 * ```
 */
export function matchChannelRootPath(pathname: string): string | undefined {
  return /^\/([A-Za-z0-9][A-Za-z0-9_-]{0,63})\/?$/.exec(pathname)?.[1];
}

/**
 * The intent of a multipart `POST /` (`channel` undefined) or `POST /NAME/`.
 *
 * @example Usage
 * ```ts
 * import { formUploadIntent } from "./form_protocol.ts";
 * const request = new Request("https://x/", { method: "POST", body: new FormData() });
 * const intent = formUploadIntent({
 *   request,
 *   url: new URL(request.url),
 *   pathname: "/",
 *   credentials: { token: undefined, source: undefined },
 * });
 * console.log(intent.body.format); // form
 * ```
 */
export function formUploadIntent(write: WriteRequest, channel?: string): UploadIntent {
  const { request } = write;
  return {
    action: "upload",
    protocol: "form",
    credentials: write.credentials,
    channel,
    subdir: undefined,
    filename: undefined,
    expectedSha256: undefined,
    replace: false,
    body: { format: "form", stream: request.body },
    declaredLength: declaredLength(request.headers),
    contentType: request.headers.get("content-type"),
    checksumMismatchStatus: STATUS.BadRequest,
    successStatus: STATUS.Created,
    refusal: undefined,
  };
}
