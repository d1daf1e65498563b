/**
 * Reads the original protocol's multipart form (`POST /`): the fields
 * `token`, `sha256`, `arch` and `artifact`, in the order they come. The
 * `token` field, when the request is not authenticated yet, is handed to
 * `onToken`, which authenticates it and takes an upload slot before the
 * artifact is read.
 *
 * @module
 */

import type { Identity } from "../auth/authenticator.ts";
import { badRequest, unauthorized } from "../http/http_error.ts";
import { parseMultipart } from "./multipart_stream.ts";
import type { ReceivedUpload } from "./prefix_body.ts";
import type { SpooledArtifact, UploadService } from "./upload_service.ts";

/** Options for {@linkcode receiveForm}. */
export interface ReceiveFormOptions {
  /** The identity of head credentials; undefined when the token must come in the form. */
  identity: Identity | undefined;
  /** Authenticates the `token` field (throws 401) and admits the upload. */
  onToken(token: string): Promise<Identity>;
  /**
   * Called with the artifact's filename before any of its bytes are kept;
   * throws to refuse it (a scope violation).
   */
  onArtifact?(identity: Identity, filename: string): void;
}

/**
 * Reads the form, spooling its artifact; on any failure nothing is left in
 * the spool.
 */
export async function receiveForm(
  body: ReadableStream<Uint8Array>,
  boundary: string,
  uploads: UploadService,
  options: ReceiveFormOptions,
): Promise<ReceivedUpload & { identity: Identity }> {
  let identity = options.identity;
  let artifact: SpooledArtifact | undefined;
  let filename: string | undefined;
  let expectedSha256: string | undefined;
  let expectedSubdir: string | undefined;
  try {
    for await (const part of parseMultipart(body, boundary)) {
      switch (part.name) {
        case "token": {
          const token = (await part.text()).trim();
          identity ??= await options.onToken(token);
          break;
        }
        case "sha256":
          expectedSha256 = (await part.text()).trim();
          break;
        case "arch":
          expectedSubdir = (await part.text()).trim();
          break;
        case "artifact": {
          if (identity === undefined) {
            await part.body.cancel();
            throw unauthorized("Cannot upload: the token field must come before the artifact");
          }
          if (artifact !== undefined) {
            await part.body.cancel();
            throw badRequest("Cannot upload: the form has more than one artifact field");
          }
          try {
            filename = uploads.checkFilename(part.filename);
            options.onArtifact?.(identity, filename);
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
    if (identity === undefined) throw unauthorized("Cannot upload: no token was sent");
    if (artifact === undefined || filename === undefined) {
      throw badRequest("Cannot upload: the form has no artifact field");
    }
  } catch (error) {
    if (artifact) await uploads.discard(artifact);
    throw error;
  }
  return {
    identity,
    artifact,
    filename,
    expectedSha256,
    expectedSubdir: expectedSubdir || undefined,
  };
}
