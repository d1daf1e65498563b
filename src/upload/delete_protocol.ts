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
 * `--allow_overwrite`. A delete and an upload of the same file never
 * interleave (see `UploadService`), so the index and the files agree.
 *
 * @module
 */

import type { PackagePath } from "./package_path.ts";
import type { DeleteIntent, WriteRequest } from "./upload_intent.ts";

/** The 200 answer of a delete. */
export interface DeletedPackage {
  /** Subdir the package was in. */
  subdir: string;
  /** Its filename. */
  filename: string;
  /** Always true. */
  deleted: true;
}

/** The intent of `DELETE /[<channel>/]<subdir>/<filename>`. */
export function deleteIntent(write: WriteRequest, target: PackagePath): DeleteIntent {
  return {
    action: "delete",
    credentials: write.credentials,
    channel: target.channel === "" ? undefined : target.channel,
    subdir: target.subdir,
    filename: target.filename,
  };
}
