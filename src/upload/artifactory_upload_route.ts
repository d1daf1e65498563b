/**
 * `PUT /<channel>/<subdir>/<filename>`: the Artifactory deploy protocol as
 * `rattler-build upload artifactory`, `pixi upload --method put` and
 * `curl -T` speak it. Since this
 * server serves the channel at `/<subdir>/...`, `PUT /<subdir>/<filename>`
 * (channel omitted) is the same upload.
 *
 * - `Authorization: Bearer <token>` or `Basic` with any user name and the
 *   token as password (`X-API-Key` works too); checked before any body byte
 *   is read.
 * - `<channel>`, when present, must name this server's channel (else 404);
 *   `<subdir>` must be a conda subdir (else 404) and must agree with the
 *   package's `info/index.json` (else 422).
 * - The body is the raw package, chunked or with a `Content-Length`.
 * - `X-Checksum-Sha256` (Artifactory's checksum header) or else
 *   `X-File-Sha256` (sent by `pixi upload --method put`) is verified against
 *   the received bytes when sent (a mismatch is a 400). Checksum-only deploy
 *   (`X-Checksum-Deploy: true`) is not supported: 400.
 * - Overwrite: Artifactory itself overwrites silently; this server does not.
 *   An existing package is a 409 unless the URL asks `?force=true` and the
 *   server was started with `--allow_overwrite` (else 403).
 * - Success is a 201 with the stored package as JSON.
 *
 * @module
 */

import { authenticate, headerToken } from "../auth/request_credentials.ts";
import { badRequest, HttpError } from "../http/http_error.ts";
import { queryFlag } from "../http/query_flag.ts";
import { STATUS } from "../http/status.ts";
import type { ChannelRouteContext } from "./channel_name.ts";
import { createdResponse } from "./form_upload_route.ts";
import { checkPackagePath, matchPackagePath } from "./package_path.ts";
import { rawBody } from "./raw_upload.ts";

/** Handles `PUT /<channel>/<subdir>/<filename>` and `PUT /<subdir>/<filename>`. */
export async function handleArtifactoryUpload(
  request: Request,
  context: ChannelRouteContext,
): Promise<Response> {
  const { uploads, verifier } = context;
  const url = new URL(request.url);
  const principal = await authenticate(verifier, headerToken(request.headers));
  const target = matchPackagePath(url.pathname);
  if (target === undefined) {
    throw new HttpError(STATUS.NotFound, "Cannot upload: the path names no subdir and file");
  }
  checkPackagePath(target, context.channelName);
  uploads.checkFilename(target.filename);
  if (queryFlagHeader(request.headers, "x-checksum-deploy")) {
    throw badRequest("Cannot upload: checksum-only deploy (X-Checksum-Deploy) is not supported");
  }
  const replace = queryFlag(url.searchParams, "force");
  const stored = await uploads.accept(rawBody(request, uploads), {
    filename: target.filename,
    principal,
    expectedSha256: declaredSha256(request.headers),
    expectedSubdir: target.subdir,
    replace,
  });
  return createdResponse(stored);
}

/** Artifactory's `X-Checksum-Sha256`, else the `X-File-Sha256` of `pixi upload --method put`. */
function declaredSha256(headers: Headers): string | undefined {
  return headers.get("x-checksum-sha256")?.trim() || headers.get("x-file-sha256")?.trim() ||
    undefined;
}

function queryFlagHeader(headers: Headers, name: string): boolean {
  return headers.get(name)?.trim().toLowerCase() === "true";
}
