/**
 * The legacy prefix.dev protocol of `pixi upload` (0.60 and earlier) and
 * `rattler-build upload prefix` (0.35 and earlier): `POST` of the raw
 * package to whatever URL the user gives. This server takes it on `POST /`
 * and on `POST /api/v1/upload/<channel>` whenever the body is not multipart.
 *
 * - Token: `Authorization: Bearer` (or Basic, `X-API-Key`, or old pixi's
 *   `/t/<token>/` path prefix); checked before any body byte is read.
 * - `X-File-Name` names the package (required); `X-File-Sha256` is verified
 *   against the received bytes when sent (a mismatch is a 400).
 * - `Content-Type: application/octet-stream`, and `Content-Length` (over
 *   the limit: 413 before any byte is read); a chunked body works as well.
 * - `?force=true` replaces an existing package, as in the current protocol.
 * - Success is **200**, not 201: old pixi counts only 200 as success.
 *
 * @module
 */

import { badRequest } from "../http/http_error.ts";
import { queryFlag } from "../http/query_flag.ts";
import { STATUS } from "../http/status.ts";
import { declaredLength, type UploadIntent, type WriteRequest } from "./upload_intent.ts";

/**
 * Whether a `POST` is the legacy raw protocol rather than a multipart form:
 * its Content-Type is not `multipart/*` and it is `application/octet-stream`
 * or carries `X-File-Name`.
 *
 * @example Usage
 * ```ts
 * import { isLegacyUpload } from "./legacy_protocol.ts";
 * console.log(isLegacyUpload(new Headers({ "x-file-name": "a-1-0.conda" }))); // true
 * ```
 */
export function isLegacyUpload(headers: Headers): boolean {
  const type = (headers.get("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
  if (type.startsWith("multipart/")) return false;
  return type === "application/octet-stream" || headers.has("x-file-name");
}

/** The intent of a raw-body `POST /` (`channel` undefined) or `POST /api/v1/upload/<channel>`. */
export function legacyUploadIntent(
  write: WriteRequest,
  channel: string | undefined,
): UploadIntent {
  const { request, url } = write;
  const filename = request.headers.get("x-file-name")?.trim() || undefined;
  return {
    action: "upload",
    protocol: "legacy",
    credentials: write.credentials,
    channel,
    subdir: undefined,
    filename,
    expectedSha256: request.headers.get("x-file-sha256")?.trim() || undefined,
    replace: queryFlag(url.searchParams, "force"),
    body: { format: "raw", stream: request.body },
    declaredLength: declaredLength(request.headers),
    contentType: request.headers.get("content-type"),
    checksumMismatchStatus: STATUS.BadRequest,
    successStatus: STATUS.OK,
    refusal: filename === undefined
      ? badRequest("Cannot upload: the X-File-Name header is missing")
      : undefined,
  };
}
