/**
 * The strict HTTP/1.1 request head parser (RFC 9112 §2-§7): the request
 * line, the header fields and the body's framing. Anything a lenient parser
 * might read differently from a proxy in front of us (request smuggling) is
 * refused: obs-fold, bare CR, a field name with spaces or other non-token
 * bytes, control characters in a value, `Content-Length` together with
 * `Transfer-Encoding`, several or malformed `Content-Length`s, and any
 * `Transfer-Encoding` other than a final `chunked`.
 *
 * @module
 */

import { STATUS, type Status } from "./status.ts";

/** A request head that cannot be served: the status to answer and why. */
/** The methods this server answers (others: 405 before any handler runs). */
const KNOWN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]);

export class RequestHeadError extends Error {
  /** 400, 405, 414, 417, 431, 501 or 505. */
  readonly status: Status;

  constructor(status: Status, message: string) {
    super(message);
    this.name = "RequestHeadError";
    this.status = status;
  }
}

/** How the request body is delimited. */
export type BodyFraming =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" };

/** A parsed request head. */
export interface RequestHead {
  /** The method, e.g. `GET`. */
  method: string;
  /** The request target as sent (origin form `/path?query`, or absolute form). */
  target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minorVersion: 0 | 1;
  /** Header fields in order, names lower-cased. */
  fields: [string, string][];
  /** How the body is delimited. */
  framing: BodyFraming;
  /** Whether the client asked for `100 Continue` before sending the body. */
  expectsContinue: boolean;
  /** Whether the client wants the connection kept open after the response. */
  keepAlive: boolean;
}

/** Limits for {@linkcode parseRequestHead}. */
export interface RequestHeadLimits {
  /**
   * Longest request line, in bytes (414 beyond it).
   * @default {8192}
   */
  maxRequestLineBytes?: number;
  /**
   * Most header fields (431 beyond it).
   * @default {100}
   */
  maxFields?: number;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Field value: visible ASCII, obs-text, space and tab; no CR, LF or NUL. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const TARGET = /^[\x21-\x7e]+$/;
const DIGITS = /^[0-9]{1,15}$/;

/**
 * Parses `head`, the bytes of a request head up to but without the empty
 * line that ends it, decoded as Latin-1.
 *
 * @throws {RequestHeadError} for anything that is not a well-formed, unambiguous head
 *
 * @example Usage
 * ```ts
 * import { parseRequestHead } from "./request_head.ts";
 * const head = parseRequestHead("GET /health HTTP/1.1\r\nHost: x");
 * console.log(head.method, head.target, head.framing.kind); // GET /health none
 * ```
 */
export function parseRequestHead(head: string, limits: RequestHeadLimits = {}): RequestHead {
  const maxRequestLine = limits.maxRequestLineBytes ?? 8192;
  const maxFields = limits.maxFields ?? 100;
  // RFC 9112 §2.2: a recipient MAY ignore at least one empty line before the request line.
  const start = head.startsWith("\r\n") ? 2 : 0;
  if (/\r(?!\n)|(?<!\r)\n/.test(head)) {
    throw new RequestHeadError(STATUS.BadRequest, "Cannot read request: bare CR or LF in the head");
  }
  const lines = head.slice(start).split("\r\n");
  const requestLine = lines[0]!;
  if (requestLine.length > maxRequestLine) {
    throw new RequestHeadError(
      STATUS.URITooLong,
      "Cannot read request: the request line is too long",
    );
  }
  const parts = requestLine.split(" ");
  if (parts.length !== 3) {
    throw new RequestHeadError(STATUS.BadRequest, "Cannot read request: malformed request line");
  }
  const [method, target, version] = parts as [string, string, string];
  if (!TOKEN.test(method)) {
    throw new RequestHeadError(STATUS.BadRequest, "Cannot read request: malformed method");
  }
  if (version !== "HTTP/1.1" && version !== "HTTP/1.0") {
    throw new RequestHeadError(
      /^HTTP\/\d\.\d$/.test(version) ? STATUS.HTTPVersionNotSupported : STATUS.BadRequest,
      "Cannot read request: unsupported HTTP version",
    );
  }
  // Methods are case-sensitive (RFC 9110 §9.1): `get` is not GET. CONNECT,
  // TRACE and TRACK are never served (and `new Request` refuses them).
  if (!KNOWN_METHODS.has(method)) {
    throw new RequestHeadError(
      STATUS.MethodNotAllowed,
      "Cannot serve request: the method is not allowed (methods are upper case)",
    );
  }
  if (!TARGET.test(target) || !(target.startsWith("/") || /^https?:\/\//i.test(target))) {
    throw new RequestHeadError(STATUS.BadRequest, "Cannot read request: malformed request target");
  }
  const minorVersion = version === "HTTP/1.1" ? 1 : 0;
  if (lines.length - 1 > maxFields) {
    throw new RequestHeadError(
      STATUS.RequestHeaderFieldsTooLarge,
      `Cannot read request: more than ${maxFields} header fields`,
    );
  }
  const fields: [string, string][] = [];
  for (let index = 1; index < lines.length; index++) {
    const line = lines[index]!;
    if (line.startsWith(" ") || line.startsWith("\t")) {
      throw new RequestHeadError(STATUS.BadRequest, "Cannot read request: obsolete line folding");
    }
    const colon = line.indexOf(":");
    if (colon <= 0) {
      throw new RequestHeadError(STATUS.BadRequest, "Cannot read request: malformed header field");
    }
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) {
      throw new RequestHeadError(STATUS.BadRequest, "Cannot read request: invalid header name");
    }
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (!FIELD_VALUE.test(value)) {
      throw new RequestHeadError(STATUS.BadRequest, "Cannot read request: invalid header value");
    }
    fields.push([name.toLowerCase(), value]);
  }
  const values = (name: string) => fields.filter(([key]) => key === name).map(([, v]) => v);
  const hosts = values("host");
  if (hosts.length > 1) {
    throw new RequestHeadError(STATUS.BadRequest, "Cannot read request: more than one Host");
  }
  if (hosts.length === 0 && minorVersion === 1) {
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is refused (an empty Host is fine).
    throw new RequestHeadError(STATUS.BadRequest, "Cannot read request: no Host");
  }
  const connection = tokens(values("connection"));
  const expect = values("expect").map((value) => value.toLowerCase());
  if (expect.some((value) => value !== "100-continue")) {
    throw new RequestHeadError(
      STATUS.ExpectationFailed,
      "Cannot read request: only Expect: 100-continue is supported",
    );
  }
  return {
    method,
    target,
    minorVersion,
    fields,
    framing: bodyFraming(values("content-length"), values("transfer-encoding"), minorVersion),
    expectsContinue: expect.length > 0 && minorVersion === 1,
    keepAlive: minorVersion === 1
      ? !connection.includes("close")
      : connection.includes("keep-alive"),
  };
}

/** RFC 9112 §6.1-§6.3, refusing every ambiguous combination. */
function bodyFraming(
  contentLengths: string[],
  transferEncodings: string[],
  minorVersion: 0 | 1,
): BodyFraming {
  if (transferEncodings.length > 0) {
    if (contentLengths.length > 0) {
      throw new RequestHeadError(
        STATUS.BadRequest,
        "Cannot read request: both Content-Length and Transfer-Encoding",
      );
    }
    if (minorVersion === 0) {
      throw new RequestHeadError(
        STATUS.BadRequest,
        "Cannot read request: Transfer-Encoding in an HTTP/1.0 request",
      );
    }
    const codings = tokens(transferEncodings);
    if (codings.length !== 1 || codings[0] !== "chunked") {
      throw new RequestHeadError(
        STATUS.NotImplemented,
        "Cannot read request: only Transfer-Encoding: chunked is supported",
      );
    }
    return { kind: "chunked" };
  }
  if (contentLengths.length === 0) return { kind: "none" };
  if (contentLengths.length > 1 || !DIGITS.test(contentLengths[0]!)) {
    throw new RequestHeadError(STATUS.BadRequest, "Cannot read request: invalid Content-Length");
  }
  const length = Number(contentLengths[0]);
  return length === 0 ? { kind: "none" } : { kind: "length", length };
}

/** The comma-separated, lower-cased tokens of a list header, empty items dropped. */
function tokens(values: string[]): string[] {
  return values.flatMap((value) => value.split(","))
    .map((item) => item.trim().toLowerCase())
    .filter((item) => item !== "");
}
