/**
 * `PUT /<channel>/<subdir>/<filename>`: the Artifactory deploy protocol as
 * `rattler-build upload artifactory`, `pixi upload --method put` and
 * `curl -T` speak it. Since this server serves the channel at
 * `/<subdir>/...`, `PUT /<subdir>/<filename>` (channel omitted) is the same
 * upload.
 *
 * - `Authorization: Bearer <token>` or `Basic` with any user name and the
 *   token as password (`X-API-Key` and `/t/<token>/` work too); checked
 *   before any body byte is read.
 * - `<channel>`, when present, must name a channel held here (else 404);
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

import { badRequest } from "../http/http_error.ts";
import { queryFlag } from "../http/query_flag.ts";
import { STATUS } from "../http/status.ts";
import type { PackagePath } from "./package_path.ts";
import { declaredLength, type UploadIntent, type WriteRequest } from "./upload_intent.ts";

/** The intent of `PUT /[<channel>/]<subdir>/<filename>`. */
export function artifactoryUploadIntent(write: WriteRequest, target: PackagePath): UploadIntent {
  const { request, url } = write;
  const headers = request.headers;
  return {
    action: "upload",
    protocol: "artifactory",
    credentials: write.credentials,
    channel: target.channel === "" ? undefined : target.channel,
    subdir: target.subdir,
    filename: target.filename,
    expectedSha256: headers.get("x-checksum-sha256")?.trim() ||
      headers.get("x-file-sha256")?.trim() || undefined,
    replace: queryFlag(url.searchParams, "force"),
    body: { format: "raw", stream: request.body },
    declaredLength: declaredLength(headers),
    contentType: headers.get("content-type"),
    checksumMismatchStatus: STATUS.BadRequest,
    successStatus: STATUS.Created,
    refusal: headers.get("x-checksum-deploy")?.trim().toLowerCase() === "true"
      ? badRequest("Cannot upload: checksum-only deploy (X-Checksum-Deploy) is not supported")
      : undefined,
  };
}
