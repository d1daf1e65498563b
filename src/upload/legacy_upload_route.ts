/**
 * The legacy prefix.dev protocol of `pixi upload` (0.60 and earlier) and
 * `rattler-build upload prefix` (0.35 and earlier): `POST` of the raw
 * package to whatever URL the user gives. This server takes it on `POST /`
 * and on `POST /api/v1/upload/<channel>` whenever the body is not multipart.
 *
 * - Token: `Authorization: Bearer` (or Basic, `X-API-Key`, or old pixi's
 *   `/t/<token>/` path prefix, which the router turns into a header);
 *   checked before any body byte is read.
 * - `X-File-Name` names the package (required); `X-File-Sha256` is verified
 *   against the received bytes when sent (a mismatch is a 400).
 * - `Content-Type: application/octet-stream`, and `Content-Length` (over
 *   the limit: 413 before any byte is read); a chunked body works as well.
 * - `?force=true` replaces an existing package, as in the current protocol.
 * - Success is **200**, not 201: old pixi counts only 200 as success.
 *
 * @module
 */

import { authenticate, headerToken } from "../auth/request_credentials.ts";
import { badRequest } from "../http/http_error.ts";
import { queryFlag } from "../http/query_flag.ts";
import { STATUS } from "../http/status.ts";
import { type ChannelRouteContext, checkChannelName } from "./channel_name.ts";
import { matchPrefixUploadPath } from "./prefix_upload_route.ts";
import { rawBody } from "./raw_upload.ts";

/** Handles a raw-body `POST /` or `POST /api/v1/upload/<channel>`. */
export async function handleLegacyUpload(
  request: Request,
  context: ChannelRouteContext,
): Promise<Response> {
  const { uploads, verifier } = context;
  const url = new URL(request.url);
  const principal = await authenticate(verifier, headerToken(request.headers));
  const target = matchPrefixUploadPath(url.pathname);
  if (target !== undefined) checkChannelName(target.channel, context.channelName);
  const filename = request.headers.get("x-file-name")?.trim();
  if (filename === undefined || filename === "") {
    throw badRequest("Cannot upload: the X-File-Name header is missing");
  }
  uploads.checkFilename(filename);
  const body = rawBody(request, uploads);
  const stored = await uploads.accept(body, {
    filename,
    principal,
    expectedSha256: request.headers.get("x-file-sha256")?.trim() || undefined,
    replace: queryFlag(url.searchParams, "force"),
  });
  return Response.json(stored, { status: STATUS.OK });
}

/**
 * Whether a `POST` is the legacy raw protocol rather than a multipart form:
 * its Content-Type is not `multipart/*` and it is `application/octet-stream`
 * or carries `X-File-Name`.
 */
export function isLegacyUpload(request: Request): boolean {
  const type = (request.headers.get("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
  if (type.startsWith("multipart/")) return false;
  return type === "application/octet-stream" || request.headers.has("x-file-name");
}
