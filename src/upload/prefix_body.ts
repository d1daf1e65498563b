/**
 * Reads the prefix.dev protocol's multipart body: one part named `file`,
 * whose filename (or `X-File-Name` part header) names the package, with
 * `X-File-SHA256` and `Content-Length` part headers; other parts
 * (`attestation`, ...) are read past and not kept.
 *
 * @module
 */

import { badRequest } from "../http/http_error.ts";
import { parseMultipart } from "./multipart_stream.ts";
import type { SpooledArtifact, UploadService } from "./upload_service.ts";

/** An artifact spooled from a body, with what the body declared about it. */
export interface ReceivedUpload {
  /** The spooled bytes and their digests. */
  artifact: SpooledArtifact;
  /** The package filename. */
  filename: string;
  /** The sha256 the body declared. */
  expectedSha256: string | undefined;
  /** The subdir the body declared (the form's `arch`). */
  expectedSubdir: string | undefined;
}

/** Options for {@linkcode receivePrefixForm}. */
export interface ReceivePrefixFormOptions {
  /**
   * Called with the file part's filename before any of its bytes are kept;
   * throws to refuse it (a scope violation).
   */
  onFilename?(filename: string): void;
}

/**
 * Reads the prefix.dev body, spooling its `file` part; on any failure
 * nothing is left in the spool.
 */
export async function receivePrefixForm(
  body: ReadableStream<Uint8Array>,
  boundary: string,
  uploads: UploadService,
  options: ReceivePrefixFormOptions = {},
): Promise<ReceivedUpload> {
  let artifact: SpooledArtifact | undefined;
  let filename: string | undefined;
  let expectedSha256: string | undefined;
  try {
    for await (const part of parseMultipart(body, boundary)) {
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
        options.onFilename?.(filename);
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
  return { artifact, filename, expectedSha256, expectedSubdir: undefined };
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
