/**
 * `POST /api/channels/<channel>/upload/<filename>?force=<bool>&sha256=<hex>`:
 * the quetz upload protocol as `rattler-build upload quetz` speaks it.
 *
 * - `X-API-Key: <token>` (Bearer and Basic work too); checked before any
 *   body byte is read.
 * - `<channel>` must name a channel held here, else 404.
 * - The body is the raw package, usually chunked with no `Content-Length`
 *   and no `Content-Type`.
 * - `sha256` is verified against the received bytes when given; a mismatch
 *   is a 406, as quetz answers.
 * - `force=true` replaces an existing package if the server allows it
 *   (`--allow_overwrite`, else 403); otherwise an existing package is a 409.
 *   rattler always sends `force=false`.
 * - Success is a 201 with the stored package as JSON.
 *
 * @module
 */

import { pathSegments } from "../http/path_segments.ts";
import { queryFlag } from "../http/query_flag.ts";
import { STATUS } from "../http/status.ts";
import { declaredLength, type UploadIntent, type WriteRequest } from "./upload_intent.ts";

/** Where a quetz upload goes, from its URL. */
export interface QuetzUploadTarget {
  /** The channel named in the URL. */
  channel: string;
  /** The package filename named in the URL. */
  filename: string;
}

/**
 * Matches `/api/channels/<channel>/upload/<filename>`; undefined for any
 * other path.
 *
 * @example Usage
 * ```ts
 * import { matchQuetzUploadPath } from "./quetz_protocol.ts";
 * console.log(matchQuetzUploadPath("/api/channels/main/upload/foo-1.0-0.conda"));
 * // { channel: "main", filename: "foo-1.0-0.conda" }
 * ```
 */
export function matchQuetzUploadPath(pathname: string): QuetzUploadTarget | undefined {
  const segments = pathSegments(pathname);
  if (segments.length < 5 || segments[0] !== "api" || segments[1] !== "channels") {
    return undefined;
  }
  if (segments.at(-2) !== "upload") return undefined;
  return { channel: segments.slice(2, -2).join("/"), filename: segments.at(-1)! };
}

/** The intent of `POST /api/channels/<channel>/upload/<filename>`. */
export function quetzUploadIntent(write: WriteRequest, target: QuetzUploadTarget): UploadIntent {
  const { request, url } = write;
  return {
    action: "upload",
    protocol: "quetz",
    credentials: write.credentials,
    channel: target.channel,
    subdir: undefined,
    filename: target.filename,
    expectedSha256: url.searchParams.get("sha256")?.trim() || undefined,
    replace: queryFlag(url.searchParams, "force"),
    body: { format: "raw", stream: request.body },
    declaredLength: declaredLength(request.headers),
    contentType: request.headers.get("content-type"),
    checksumMismatchStatus: STATUS.NotAcceptable,
    successStatus: STATUS.Created,
    refusal: undefined,
  };
}
