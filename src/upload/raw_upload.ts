/**
 * The part every raw-body protocol shares (legacy prefix/pixi, quetz,
 * Artifactory): the request body is the package itself, streamed into the
 * spool without being held in memory, chunked or with a `Content-Length`.
 *
 * @module
 */

import { badRequest } from "../http/http_error.ts";
import { declaredLength } from "./form_upload_route.ts";
import type { UploadService } from "./upload_service.ts";

/**
 * The request's body, to hand to {@linkcode UploadService.accept}, after the
 * checks that need no body byte: a declared `Content-Length` over the limit
 * is a 413 (a chunked body is counted as it streams), no body at all is a
 * 400. Call it only once the request is authenticated.
 */
export function rawBody(request: Request, uploads: UploadService): ReadableStream<Uint8Array> {
  uploads.checkDeclaredLength(declaredLength(request.headers));
  if (request.body === null) throw badRequest("Cannot upload: the request has no body");
  return request.body;
}
