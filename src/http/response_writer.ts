/**
 * Writes a `Response` to an HTTP/1.1 connection. The head and a body known
 * to be small go out in one write (a response split into a small head and a
 * body meets the client's delayed ACK and Nagle's algorithm: 40 ms per
 * response); larger bodies stream with backpressure, `chunked` when their
 * length is unknown. A large body of known length from a byte stream (a
 * file) is read into two buffers used in turn, each filled again once the
 * connection has sent it: memory stays flat whatever the size of the file.
 * HEAD answers carry GET's headers, `Content-Length` included, and no body.
 *
 * @module
 */

/** Options for {@linkcode writeResponse}. */
export interface WriteResponseOptions {
  /** Whether the request was HEAD (no body is sent). */
  head: boolean;
  /** Whether the connection closes after this response (`Connection: close`). */
  close: boolean;
  /** HTTP/1.0 client: no chunked encoding; keep-alive only when asked. */
  http10: boolean;
  /** Writes bytes to the connection (all of them, or throws); several parts go out as one write. */
  write: (data: Uint8Array | readonly Uint8Array[]) => Promise<void>;
  /**
   * Writes bytes and resolves once the connection no longer holds them, so
   * that the buffer may be filled again.
   * @default {write}
   */
  send?: (bytes: Uint8Array) => Promise<void>;
}

/** Bodies up to this size are sent with the head in one write when their length is unknown. */
const COALESCE_BYTES = 64 * 1024;
/** Size of each of the two buffers a large byte-stream body is sent through. */
const SEND_BUFFER_BYTES = 256 * 1024;
const ENCODER = new TextEncoder();
const CRLF = ENCODER.encode("\r\n");
/** Headers that describe the connection or the framing: set here, never taken from the handler. */
const HOP_BY_HOP: ReadonlySet<string> = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "proxy-connection",
]);

/** Bodies of responses made by {@linkcode bytesResponse}, taken without a stream. */
const _knownBodies = new WeakMap<Response, Uint8Array>();

/**
 * A response whose body is `body`, held as bytes: {@linkcode writeResponse}
 * sends them with the head in one write without making a stream of them
 * (a stream per response was ~4 % of the time of a small cached file).
 * Anything else reading the response still finds the same body.
 */
export function bytesResponse(body: Uint8Array<ArrayBuffer>, init: ResponseInit): Response {
  const response = new Response(body, init);
  _knownBodies.set(response, body);
  return response;
}

/**
 * Writes `response`. Resolves whether the connection can carry another
 * request: false when the body could not be framed (a `Content-Length`
 * that did not match the body, an HTTP/1.0 body of unknown length) or
 * `options.close` was set.
 */
export async function writeResponse(
  response: Response,
  options: WriteResponseOptions,
): Promise<boolean> {
  const status = response.status;
  const headers: [string, string][] = [];
  let contentLength: number | undefined;
  let hasDate = false;
  for (const [name, value] of response.headers) {
    if (HOP_BY_HOP.has(name)) continue;
    if (name === "content-length") {
      contentLength = Number(value);
      continue;
    }
    if (name === "date") hasDate = true;
    headers.push([name, value]);
  }
  if (!hasDate) headers.push(["date", _httpDate()]);
  const bodyless = options.head || status < 200 || status === 204 || status === 304;
  const known = _knownBodies.get(response);
  if (known !== undefined && !bodyless && (contentLength ?? known.length) === known.length) {
    headers.push(["content-length", String(known.length)]);
    await options.write([_head(status, headers, options.close, options.http10), known]);
    return !options.close;
  }
  if (bodyless) {
    response.body?.cancel().catch(() => {});
    if (contentLength !== undefined && status !== 204) {
      headers.push(["content-length", String(contentLength)]);
    }
    await options.write(_head(status, headers, options.close, options.http10));
    return !options.close;
  }
  let close = options.close;
  if (response.body !== null && contentLength !== undefined && contentLength > SEND_BUFFER_BYTES) {
    const byob = _byobReader(response.body);
    if (byob !== undefined) {
      try {
        return await _sendThroughBuffers(byob, status, headers, contentLength, options);
      } catch (error) {
        byob.cancel().catch(() => {});
        throw error;
      }
    }
  }
  if (response.body !== null && contentLength !== undefined && contentLength <= COALESCE_BYTES) {
    // A small body of known length is taken whole: cheaper than a stream reader's reads.
    let body: Uint8Array;
    try {
      body = await response.bytes();
    } catch (error) {
      response.body.cancel().catch(() => {});
      throw error;
    }
    headers.push(["content-length", String(contentLength)]);
    const head = _head(status, headers, close, options.http10);
    // A body that does not match its announced length: what was announced (at most), then close.
    await options.write([head, body.subarray(0, contentLength)]);
    return body.length === contentLength && !close;
  }
  const reader = response.body?.getReader();
  if (reader === undefined) {
    headers.push(["content-length", "0"]);
    await options.write(_head(status, headers, close, options.http10));
    return !close;
  }
  try {
    if (contentLength !== undefined) {
      return await _writeKnownLength(reader, status, headers, contentLength, options);
    }
    // Unknown length: gather what comes quickly up to COALESCE_BYTES; a body that ends
    // within it gets a Content-Length and goes out with the head in one write.
    const first: Uint8Array[] = [];
    let gathered = 0;
    let ended = false;
    while (gathered < COALESCE_BYTES) {
      const { done, value } = await reader.read();
      if (done) {
        ended = true;
        break;
      }
      first.push(value);
      gathered += value.length;
    }
    if (ended) {
      headers.push(["content-length", String(gathered)]);
      await options.write([_head(status, headers, close, options.http10), ...first]);
      return !close;
    }
    if (options.http10) {
      // No chunked encoding in HTTP/1.0: the body ends where the connection does.
      close = true;
      await options.write([_head(status, headers, close, true), ...first]);
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return false;
        await options.write(value);
      }
    }
    headers.push(["transfer-encoding", "chunked"]);
    await options.write([_head(status, headers, close, false), ..._chunk(first)]);
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (value.length > 0) await options.write(_chunk([value]));
    }
    await options.write(ENCODER.encode("0\r\n\r\n"));
    return !close;
  } catch (error) {
    reader.cancel().catch(() => {});
    throw error;
  }
}

async function _writeKnownLength(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  status: number,
  headers: [string, string][],
  contentLength: number,
  options: WriteResponseOptions,
): Promise<boolean> {
  headers.push(["content-length", String(contentLength)]);
  let head: Uint8Array | undefined = _head(status, headers, options.close, options.http10);
  let sent = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    let chunk = value;
    if (sent + chunk.length > contentLength) {
      // More body than announced: send what was announced, then close.
      chunk = chunk.subarray(0, contentLength - sent);
      await options.write(head ? [head, chunk] : chunk);
      reader.cancel().catch(() => {});
      return false;
    }
    sent += chunk.length;
    await options.write(head ? [head, chunk] : chunk);
    head = undefined;
  }
  if (head) await options.write(head);
  return sent === contentLength && !options.close;
}

/** A BYOB reader of `body`, or undefined when it is not a byte stream. */
function _byobReader(body: ReadableStream<Uint8Array>): ReadableStreamBYOBReader | undefined {
  try {
    return body.getReader({ mode: "byob" });
  } catch {
    return undefined;
  }
}

/**
 * Sends a body of known length read into two buffers in turn: one is sent
 * while the other is filled, and a buffer is filled again only once the
 * connection has sent it. The head goes out with the first chunk.
 */
async function _sendThroughBuffers(
  reader: ReadableStreamBYOBReader,
  status: number,
  headers: [string, string][],
  contentLength: number,
  options: WriteResponseOptions,
): Promise<boolean> {
  headers.push(["content-length", String(contentLength)]);
  const head = _head(status, headers, options.close, options.http10);
  const send = options.send ?? options.write;
  const buffers = [new ArrayBuffer(SEND_BUFFER_BYTES), new ArrayBuffer(SEND_BUFFER_BYTES)];
  const sending: (Promise<void> | undefined)[] = [undefined, undefined];
  let slot = 0;
  let sent = 0;
  let prefix = head.length;
  try {
    while (sent < contentLength) {
      const previous = sending[slot];
      sending[slot] = undefined;
      await previous;
      const room = Math.min(SEND_BUFFER_BYTES - prefix, contentLength - sent);
      const { done, value } = await reader.read(new Uint8Array(buffers[slot]!, prefix, room));
      if (done || value === undefined) break;
      // The read took the buffer over and hands it back as `value.buffer`.
      const buffer = value.buffer as ArrayBuffer;
      buffers[slot] = buffer;
      if (prefix > 0) new Uint8Array(buffer, 0, prefix).set(head);
      const out = new Uint8Array(buffer, 0, prefix + value.byteLength);
      sent += value.byteLength;
      prefix = 0;
      const pending = send(out);
      pending.catch(() => {}); // awaited below; never an unhandled rejection meanwhile
      sending[slot] = pending;
      slot = 1 - slot;
    }
  } finally {
    await Promise.all(sending);
  }
  if (prefix > 0) await options.write(head);
  // Bounded by the announced length: what the stream may still hold is not sent.
  reader.cancel().catch(() => {});
  return sent === contentLength && !options.close;
}

function _head(
  status: number,
  headers: [string, string][],
  close: boolean,
  http10: boolean,
): Uint8Array {
  let text = `HTTP/1.1 ${status} ${REASONS[status] ?? "Status"}\r\n`;
  for (const [name, value] of headers) text += `${name}: ${value}\r\n`;
  if (close) text += "connection: close\r\n";
  else if (http10) text += "connection: keep-alive\r\n";
  text += "\r\n";
  return _latin1(text);
}

/** `data` as one chunk of the chunked coding: size line, the parts, CRLF. */
function _chunk(data: readonly Uint8Array[]): Uint8Array[] {
  let length = 0;
  for (const part of data) length += part.length;
  return [ENCODER.encode(`${length.toString(16)}\r\n`), ...data, CRLF];
}

const NOT_ASCII = /[\u0080-\uffff]/;

/** Header values are ByteStrings (code points up to 0xff): one byte each. */
function _latin1(text: string): Uint8Array {
  // Nearly every head is ASCII, where UTF-8 is the same bytes and the native encoder is faster.
  if (!NOT_ASCII.test(text)) return ENCODER.encode(text);
  const bytes = new Uint8Array(text.length);
  for (let index = 0; index < text.length; index++) bytes[index] = text.charCodeAt(index);
  return bytes;
}

let _dateSecond = 0;
let _dateText = "";

/** The `Date` header value, computed at most once a second. */
function _httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== _dateSecond) {
    _dateSecond = second;
    _dateText = new Date(now).toUTCString();
  }
  return _dateText;
}

const REASONS: Record<number, string> = {
  100: "Continue",
  200: "OK",
  201: "Created",
  204: "No Content",
  206: "Partial Content",
  301: "Moved Permanently",
  304: "Not Modified",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  406: "Not Acceptable",
  408: "Request Timeout",
  409: "Conflict",
  411: "Length Required",
  413: "Content Too Large",
  414: "URI Too Long",
  415: "Unsupported Media Type",
  416: "Range Not Satisfiable",
  417: "Expectation Failed",
  422: "Unprocessable Content",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported",
  507: "Insufficient Storage",
};
