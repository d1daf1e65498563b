/**
 * `POST /api/v1/upload/<channel>`: the prefix.dev upload protocol as
 * `rattler-build upload prefix`, `rattler-build publish` and
 * `pixi upload` (0.61 and later) speak it.
 *
 * - `Authorization: Bearer <token>` (Basic with the token as password and
 *   `X-API-Key` work too); checked before any body byte is read.
 * - `<channel>` may contain `/` and must name a channel held here, else 404.
 * - `?force=true` replaces an existing package, if the server was started
 *   with `--allow_overwrite` (else 403); without it an existing package is a 409.
 * - The body is `multipart/form-data` with one part named `file`: its
 *   filename is the package filename, and its part headers carry
 *   `X-File-Name` (must agree with the filename), `X-File-SHA256` (verified
 *   against the received bytes; a mismatch is a 400) and `Content-Length`
 *   (over the limit: 413 before the part is read; otherwise it must match).
 * - An `attestation` part (a Sigstore bundle, sent with `--attestation` or
 *   trusted publishing) is read past and ignored: this server neither checks
 *   nor stores attestations. Other unknown parts are ignored too.
 * - Success is a 201 with the stored package as JSON (rattler accepts any
 *   2xx).
 *
 * A raw (non-multipart) body on the same URL is the legacy protocol
 * (`legacy_protocol.ts`).
 *
 * @module
 */

import { pathSegments } from "../http/path_segments.ts";
import { queryFlag } from "../http/query_flag.ts";
import { STATUS } from "../http/status.ts";
import { declaredLength, type UploadIntent, type WriteRequest } from "./upload_intent.ts";

/**
 * Matches `/api/v1/upload/<channel>` and returns the channel (which may
 * contain `/`); undefined for any other path.
 *
 * @example Usage
 * ```ts
 * import { matchPrefixUploadPath } from "./prefix_protocol.ts";
 * console.log(matchPrefixUploadPath("/api/v1/upload/team/main")); // team/main
 * ```
 */
export function matchPrefixUploadPath(pathname: string): string | undefined {
  const segments = pathSegments(pathname);
  if (segments.length < 4) return undefined;
  if (segments[0] !== "api" || segments[1] !== "v1" || segments[2] !== "upload") return undefined;
  return segments.slice(3).join("/");
}

/** The intent of a multipart `POST /api/v1/upload/<channel>`. */
export function prefixUploadIntent(write: WriteRequest, channel: string): UploadIntent {
  const { request, url } = write;
  return {
    action: "upload",
    protocol: "prefix",
    credentials: write.credentials,
    channel,
    subdir: undefined,
    filename: undefined,
    expectedSha256: undefined,
    replace: queryFlag(url.searchParams, "force"),
    body: { format: "prefix", stream: request.body },
    declaredLength: declaredLength(request.headers),
    contentType: request.headers.get("content-type"),
    checksumMismatchStatus: STATUS.BadRequest,
    successStatus: STATUS.Created,
    refusal: undefined,
  };
}
