/**
 * The one error type that handlers throw to answer a client with a 4xx/5xx.
 *
 * @module
 */

import {
  PackageExtensionError,
  PackageFilenameError,
  PackageFormatError,
  PackageLimitError,
  PackageReadError,
} from "../package/package_errors.ts";
import { STATUS, type Status } from "./status.ts";

/** Options for {@linkcode HttpError}. */
export interface HttpErrorOptions {
  /** Extra response headers, e.g. `WWW-Authenticate` or `Retry-After`. */
  headers?: Record<string, string>;
  /** The underlying error, kept for the log, never sent to the client. */
  cause?: unknown;
}

/**
 * An error that becomes an HTTP response: `status` and a one-line `message`
 * that is safe to show to the client.
 *
 * @example Usage
 * ```ts
 * import { HttpError } from "./http_error.ts";
 * import { STATUS } from "./status.ts";
 * const error = new HttpError(STATUS.Conflict, "Cannot publish package: it already exists");
 * console.log(error.status); // 409
 * ```
 */
export class HttpError extends Error {
  /** The HTTP status to answer with. */
  readonly status: Status;
  /** Extra headers for the response. */
  readonly headers: Record<string, string>;

  constructor(status: Status, message: string, options: HttpErrorOptions = {}) {
    super(message.replaceAll(/[\r\n]+/g, " "), { cause: options.cause });
    this.name = "HttpError";
    this.status = status;
    this.headers = options.headers ?? {};
  }
}

/** The realm sent in `WWW-Authenticate` for a missing or wrong token. */
export const AUTH_REALM = 'Bearer realm="artifact-upload-handler"';

/** Shorthand for a 400 with a one-line reason. */
export function badRequest(message: string, cause?: unknown): HttpError {
  return new HttpError(STATUS.BadRequest, message, { cause });
}

/** Shorthand for a 401 carrying `WWW-Authenticate`. */
export function unauthorized(message: string): HttpError {
  return new HttpError(STATUS.Unauthorized, message, {
    headers: { "www-authenticate": AUTH_REALM },
  });
}

/** Shorthand for a 422: the package is readable but its content is not acceptable. */
export function unprocessable(message: string, cause?: unknown): HttpError {
  return new HttpError(STATUS.UnprocessableContent, message, { cause });
}

/**
 * The {@linkcode HttpError} a thrown value answers with, or undefined for an
 * internal fault. The package readers' errors (`src/package/package_errors.ts`)
 * are mapped here, the one place that knows their statuses: a corrupt or
 * unacceptable package and a passed inspection limit are 422, a bad filename
 * 400, a wrong extension 415, an unreadable spool file 500.
 */
export function httpErrorOf(error: unknown): HttpError | undefined {
  if (error instanceof HttpError) return error;
  const status = error instanceof PackageFormatError || error instanceof PackageLimitError
    ? STATUS.UnprocessableContent
    : error instanceof PackageFilenameError
    ? STATUS.BadRequest
    : error instanceof PackageExtensionError
    ? STATUS.UnsupportedMediaType
    : error instanceof PackageReadError
    ? STATUS.InternalServerError
    : undefined;
  if (status === undefined) return undefined;
  return new HttpError(status, (error as Error).message, { cause: error });
}

/**
 * Turns any thrown value into a response. An {@linkcode HttpError} (or a
 * package error, see {@linkcode httpErrorOf}) answers with its status and
 * message; anything else is an internal fault, answered with a generic 500
 * so that internals never reach the client.
 */
export function errorResponse(error: unknown): Response {
  const httpError = httpErrorOf(error);
  if (httpError) {
    return new Response(httpError.message + "\n", {
      status: httpError.status,
      headers: { "content-type": "text/plain; charset=utf-8", ...httpError.headers },
    });
  }
  return new Response("Internal server error\n", {
    status: STATUS.InternalServerError,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}
