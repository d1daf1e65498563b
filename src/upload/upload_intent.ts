/**
 * What a write request asks for, independent of the protocol that carried
 * it: each protocol file turns a request into one of these with a small pure
 * function, and the front door (`front_door.ts`) carries it out.
 *
 * @module
 */

import type { Credentials } from "../auth/request_credentials.ts";
import type { HttpError } from "../http/http_error.ts";
import type { Status } from "../http/status.ts";

/** A write request as the route table hands it to a protocol. */
export interface WriteRequest {
  /** The request itself (its headers and body). */
  request: Request;
  /** The request URL (its query). */
  url: URL;
  /** The path without any `/t/<token>/` prefix. */
  pathname: string;
  /** The credentials of the request head, resolved once. */
  credentials: Credentials;
}

/** How the package arrives in the body. */
export type UploadBodyFormat =
  /** The body is the package (legacy, quetz, Artifactory). */
  | "raw"
  /** The original form: `token`, `sha256`, `arch` and `artifact` fields. */
  | "form"
  /** prefix.dev: one `file` part whose headers name and checksum it. */
  | "prefix";

/** An upload of one package. */
export interface UploadIntent {
  action: "upload";
  /** The protocol's name, for logs and metrics. */
  protocol: string;
  /** The credentials of the request head (the form may add a `token` field). */
  credentials: Credentials;
  /** The channel the URL names; undefined when it names none. */
  channel: string | undefined;
  /** The subdir the client declared (URL); the package must agree. */
  subdir: string | undefined;
  /** The filename, when the head names it; undefined when the body does. */
  filename: string | undefined;
  /** The sha256 the head declared; verified against the received bytes. */
  expectedSha256: string | undefined;
  /** Whether an existing package may be replaced (needs `--allow_overwrite`). */
  replace: boolean;
  /** The body and how to read it. */
  body: { format: UploadBodyFormat; stream: ReadableStream<Uint8Array> | null };
  /** `Content-Length`, trusted only without `Transfer-Encoding`. */
  declaredLength: number | undefined;
  /** The request's `Content-Type` (the multipart boundary). */
  contentType: string | null;
  /** Status of a sha256 mismatch (quetz: 406). */
  checksumMismatchStatus: Status;
  /** Status of the success answer (the stored package as JSON). */
  successStatus: Status;
  /** Something the protocol cannot do with this request, answered after authentication. */
  refusal: HttpError | undefined;
}

/** A delete of one package. */
export interface DeleteIntent {
  action: "delete";
  /** The credentials of the request head. */
  credentials: Credentials;
  /** The channel the URL names; undefined when it names none. */
  channel: string | undefined;
  /** The package's subdir. */
  subdir: string;
  /** The package's filename. */
  filename: string;
}

/** Whatever a write request asks for. */
export type WriteIntent = UploadIntent | DeleteIntent;

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
