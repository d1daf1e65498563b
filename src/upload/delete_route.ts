/**
 * `DELETE /<subdir>/<filename>` (or `DELETE /<channel>/<subdir>/<filename>`):
 * removes a package and its index record, so that clients stop seeing it.
 *
 * - The same tokens as uploads (`Authorization: Bearer`, Basic with the
 *   token as password, `X-API-Key`, `/t/<token>/`); a missing or wrong token
 *   is a 401.
 * - A channel other than this server's, an unknown subdir, or no such
 *   package is a 404; a name that is not a package filename is a 400/415.
 * - Success is a 200 with `{"subdir", "filename", "deleted": true}`.
 *
 * Deleting is allowed whether or not the server runs with
 * `--allow_overwrite`.
 *
 * @module
 */

import { authenticate, headerToken } from "../auth/request_credentials.ts";
import { HttpError } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";
import type { ChannelRouteContext } from "./channel_name.ts";
import { checkPackagePath, matchPackagePath } from "./package_path.ts";

/** The 200 answer of a delete. */
export interface DeletedPackage {
  /** Subdir the package was in. */
  subdir: string;
  /** Its filename. */
  filename: string;
  /** Always true. */
  deleted: true;
}

/** Handles `DELETE /<subdir>/<filename>` and `DELETE /<channel>/<subdir>/<filename>`. */
export async function handleDelete(
  request: Request,
  context: ChannelRouteContext,
): Promise<Response> {
  const { uploads, verifier } = context;
  const principal = await authenticate(verifier, headerToken(request.headers));
  const target = matchPackagePath(new URL(request.url).pathname);
  if (target === undefined) {
    throw new HttpError(STATUS.NotFound, "Cannot delete: the path names no subdir and file");
  }
  checkPackagePath(target, context.channelName, { action: "delete" });
  const removed = await uploads.remove(target.subdir, target.filename, principal);
  if (!removed) {
    throw new HttpError(
      STATUS.NotFound,
      `Cannot delete: ${target.subdir}/${target.filename} does not exist`,
    );
  }
  const body: DeletedPackage = { subdir: target.subdir, filename: target.filename, deleted: true };
  return Response.json(body, { status: STATUS.OK });
}
