/**
 * `POST /api/v1/upload/<channel>`: the prefix.dev upload protocol as
 * `rattler-build upload prefix`, `rattler-build publish` and
 * `pixi upload` (0.61 and later) speak it.
 *
 * - `Authorization: Bearer <token>` (Basic with the token as password and
 *   `X-API-Key` work too); checked before any body byte is read.
 * - `<channel>` may contain `/` and must name this server's channel, else 404.
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
 * A raw (non-multipart) body on the same URL is the legacy protocol; the
 * router sends it to {@linkcode handleLegacyUpload}.
 *
 * @module
 */

import { authenticate, headerToken } from "../auth/request_credentials.ts";
import { badRequest } from "../http/http_error.ts";
import { pathSegments } from "../http/path_segments.ts";
import { queryFlag } from "../http/query_flag.ts";
import { type ChannelRouteContext, checkChannelName } from "./channel_name.ts";
import { createdResponse, declaredLength } from "./form_upload_route.ts";
import { multipartBoundary, parseMultipart } from "./multipart_stream.ts";
import type { SpooledArtifact } from "./upload_service.ts";

/** Where a prefix upload goes, from its URL. */
export interface PrefixUploadTarget {
  /** The channel named in the URL (may contain `/`). */
  channel: string;
}

/**
 * Matches `/api/v1/upload/<channel>`; undefined for any other path.
 *
 * @example Usage
 * ```ts
 * import { matchPrefixUploadPath } from "./prefix_upload_route.ts";
 * console.log(matchPrefixUploadPath("/api/v1/upload/team/main")); // { channel: "team/main" }
 * ```
 */
export function matchPrefixUploadPath(pathname: string): PrefixUploadTarget | undefined {
  const segments = pathSegments(pathname);
  if (segments.length < 4) return undefined;
  if (segments[0] !== "api" || segments[1] !== "v1" || segments[2] !== "upload") return undefined;
  return { channel: segments.slice(3).join("/") };
}

/** Handles `POST /api/v1/upload/<channel>` with a multipart body. */
export async function handlePrefixUpload(
  request: Request,
  context: ChannelRouteContext,
): Promise<Response> {
  const { uploads, verifier } = context;
  const url = new URL(request.url);
  const principal = await authenticate(verifier, headerToken(request.headers));
  const target = matchPrefixUploadPath(url.pathname);
  if (target === undefined) throw badRequest("Cannot upload: the path has no channel");
  checkChannelName(target.channel, context.channelName);
  const replace = queryFlag(url.searchParams, "force");
  uploads.checkDeclaredLength(declaredLength(request.headers));
  const boundary = multipartBoundary(request.headers.get("content-type"));
  if (request.body === null) throw badRequest("Cannot upload: the request has no body");

  let artifact: SpooledArtifact | undefined;
  let filename: string | undefined;
  let expectedSha256: string | undefined;
  try {
    for await (const part of parseMultipart(request.body, boundary)) {
      if (part.name !== "file") {
        // `attestation` and anything else: read past, not kept.
        await part.body.cancel();
        continue;
      }
      if (artifact !== undefined) {
        await part.body.cancel();
        throw badRequest("Cannot upload: the form has more than one file part");
      }
      let partLength: number | undefined;
      try {
        filename = uploads.checkFilename(partFilename(part.filename, part.headers));
        expectedSha256 = part.headers.get("x-file-sha256")?.trim() || undefined;
        partLength = partContentLength(part.headers);
        uploads.checkDeclaredLength(partLength);
      } catch (error) {
        await part.body.cancel();
        throw error;
      }
      artifact = await uploads.receive(part.body);
      if (partLength !== undefined && partLength !== artifact.size) {
        throw badRequest(
          `Cannot upload: the file part declared ${partLength} bytes but ${artifact.size} arrived`,
        );
      }
    }
    if (artifact === undefined || filename === undefined) {
      throw badRequest("Cannot upload: the form has no file part");
    }
  } catch (error) {
    if (artifact) await uploads.discard(artifact);
    throw error;
  }
  const stored = await uploads.publish(artifact, {
    filename,
    principal,
    expectedSha256,
    replace,
  });
  return createdResponse(stored);
}

/** The package filename: the part's filename and its `X-File-Name` header must agree. */
function partFilename(filename: string | undefined, headers: Headers): string | undefined {
  const declared = headers.get("x-file-name")?.trim();
  if (filename === undefined || filename === "") return declared;
  if (declared !== undefined && declared !== "" && declared !== filename) {
    throw badRequest(
      `Cannot upload: X-File-Name ${
        JSON.stringify(declared.slice(0, 100))
      } differs from the part's filename ${JSON.stringify(filename.slice(0, 100))}`,
    );
  }
  return filename;
}

function partContentLength(headers: Headers): number | undefined {
  const value = headers.get("content-length");
  if (value === null) return undefined;
  if (!/^\d{1,16}$/.test(value.trim())) {
    throw badRequest("Cannot upload: the file part's Content-Length is not a number");
  }
  return Number(value.trim());
}
