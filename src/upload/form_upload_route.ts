/**
 * `POST /`: the original tool's upload protocol. A multipart form with the
 * fields `token` and `artifact` (as `curl -F` and Python `requests` send it),
 * plus the optional `sha256` and `arch` fields; `Authorization: Bearer` is
 * accepted instead of the `token` field.
 *
 * @module
 */

import { authenticate, headerToken } from "../auth/request_credentials.ts";
import type { Principal, TokenVerifier } from "../auth/token_verifier.ts";
import { badRequest, unauthorized } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";
import { multipartBoundary, parseMultipart } from "./multipart_stream.ts";
import type { SpooledArtifact, StoredPackage, UploadService } from "./upload_service.ts";

/** What an upload route needs. */
export interface UploadRouteContext {
  /** The shared upload path. */
  uploads: UploadService;
  /** Checks tokens. */
  verifier: TokenVerifier;
}

/** Handles `POST /` with a multipart body. */
export async function handleFormUpload(
  request: Request,
  context: UploadRouteContext,
): Promise<Response> {
  const { uploads, verifier } = context;
  const sentToken = headerToken(request.headers);
  let principal: Principal | undefined = sentToken === undefined
    ? undefined
    : await authenticate(verifier, sentToken);
  uploads.checkDeclaredLength(declaredLength(request.headers));
  const boundary = multipartBoundary(request.headers.get("content-type"));
  if (request.body === null) throw badRequest("Cannot upload: the request has no body");

  let artifact: SpooledArtifact | undefined;
  let filename: string | undefined;
  let expectedSha256: string | undefined;
  let expectedSubdir: string | undefined;
  try {
    for await (const part of parseMultipart(request.body, boundary)) {
      switch (part.name) {
        case "token": {
          const token = await part.text();
          principal ??= await authenticate(verifier, token.trim());
          break;
        }
        case "sha256":
          expectedSha256 = (await part.text()).trim();
          break;
        case "arch":
          expectedSubdir = (await part.text()).trim();
          break;
        case "artifact": {
          if (principal === undefined) {
            await part.body.cancel();
            throw unauthorized("Cannot upload: the token field must come before the artifact");
          }
          if (artifact !== undefined) {
            await part.body.cancel();
            throw badRequest("Cannot upload: the form has more than one artifact field");
          }
          try {
            filename = uploads.checkFilename(part.filename);
          } catch (error) {
            await part.body.cancel();
            throw error;
          }
          artifact = await uploads.receive(part.body);
          break;
        }
        default:
          await part.text();
      }
    }
    if (principal === undefined) throw unauthorized("Cannot upload: no token was sent");
    if (artifact === undefined || filename === undefined) {
      throw badRequest("Cannot upload: the form has no artifact field");
    }
  } catch (error) {
    if (artifact) await uploads.discard(artifact);
    throw error;
  }
  const stored = await uploads.publish(artifact, {
    filename,
    principal,
    expectedSha256,
    expectedSubdir: expectedSubdir === "" ? undefined : expectedSubdir,
  });
  return createdResponse(stored);
}

/** The 201 answer describing a stored package. */
export function createdResponse(stored: StoredPackage): Response {
  return Response.json(stored, { status: STATUS.Created });
}

/**
 * The body length a client declared, trusted only without
 * `Transfer-Encoding` (as hono's body limit does).
 */
export function declaredLength(headers: Headers): number | undefined {
  if (headers.has("transfer-encoding")) return undefined;
  const value = headers.get("content-length");
  if (value === null || !/^\d+$/.test(value)) return undefined;
  return Number(value);
}
