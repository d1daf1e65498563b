/**
 * A raw HTTP/1.1 client over one TLS (or TCP) connection, for tests that
 * must control every byte: heads sent in pieces, framing attacks, several
 * requests on one connection, and watching when the server closes it.
 *
 * @module
 */

import { concatBytes } from "../../src/concat_bytes.ts";

/** One parsed response. */
export interface RawResponse {
  /** Status code. */
  status: number;
  /** Header fields, names lower-cased (repeated names joined with ", "). */
  headers: Map<string, string>;
  /** The body (empty for HEAD, 1xx, 204, 304). */
  body: Uint8Array;
}

/** Options for {@linkcode openRaw}. */
export interface OpenRawOptions {
  /** CA certificate file for TLS; none for plain TCP. */
  caFile?: string;
}

const ENCODER = new TextEncoder();

/** A connection and the bytes received on it. */
export class RawConnection implements Disposable {
  readonly conn: Deno.Conn;
  #buffered = new Uint8Array(0);
  #ended = false;
  #reading: Promise<boolean> | undefined;

  constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  /** Writes text (as Latin-1) or bytes; resolves false when the server had closed. */
  async send(data: string | Uint8Array): Promise<boolean> {
    const bytes = typeof data === "string" ? _latin1(data) : data;
    try {
      let offset = 0;
      while (offset < bytes.length) offset += await this.conn.write(bytes.subarray(offset));
      return true;
    } catch {
      return false;
    }
  }

  /** One read at a time: a read left running by {@linkcode closedWithin} is reused. */
  #fill(): Promise<boolean> {
    this.#reading ??= this.#readMore().finally(() => this.#reading = undefined);
    return this.#reading;
  }

  async #readMore(): Promise<boolean> {
    if (this.#ended) return false;
    const chunk = new Uint8Array(64 * 1024);
    let count: number | null;
    try {
      count = await this.conn.read(chunk);
    } catch {
      count = null;
    }
    if (count === null) {
      this.#ended = true;
      return false;
    }
    const joined = new Uint8Array(this.#buffered.length + count);
    joined.set(this.#buffered);
    joined.set(chunk.subarray(0, count), this.#buffered.length);
    this.#buffered = joined;
    return true;
  }

  /**
   * Reads one response (a `100 Continue` is returned like any other).
   * `head: true` for the answer to a HEAD request.
   */
  async readResponse(options: { head?: boolean } = {}): Promise<RawResponse> {
    let end: number;
    while ((end = _indexOf(this.#buffered, "\r\n\r\n")) < 0) {
      if (!await this.#fill()) throw new Error("Cannot read response: the connection ended");
    }
    const lines = new TextDecoder().decode(this.#buffered.subarray(0, end)).split("\r\n");
    this.#buffered = this.#buffered.subarray(end + 4);
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!)?.[1]);
    const headers = new Map<string, string>();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      const name = line.slice(0, colon).toLowerCase();
      const value = line.slice(colon + 1).trim();
      headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
    }
    if (options.head || status < 200 || status === 204 || status === 304) {
      return { status, headers, body: new Uint8Array(0) };
    }
    if (headers.get("transfer-encoding") === "chunked") {
      return { status, headers, body: await this.#readChunked() };
    }
    const length = headers.has("content-length") ? Number(headers.get("content-length")) : null;
    if (length === null) {
      while (await this.#fill());
      const body = this.#buffered;
      this.#buffered = new Uint8Array(0);
      return { status, headers, body };
    }
    while (this.#buffered.length < length) {
      if (!await this.#fill()) throw new Error("Cannot read response: the body was cut short");
    }
    const body = this.#buffered.slice(0, length);
    this.#buffered = this.#buffered.subarray(length);
    return { status, headers, body };
  }

  async #readChunked(): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    for (;;) {
      let lineEnd: number;
      while ((lineEnd = _indexOf(this.#buffered, "\r\n")) < 0) {
        if (!await this.#fill()) throw new Error("Cannot read chunk: the connection ended");
      }
      const size = parseInt(new TextDecoder().decode(this.#buffered.subarray(0, lineEnd)), 16);
      this.#buffered = this.#buffered.subarray(lineEnd + 2);
      while (this.#buffered.length < size + 2) {
        if (!await this.#fill()) throw new Error("Cannot read chunk: the connection ended");
      }
      if (size === 0) {
        this.#buffered = this.#buffered.subarray(2);
        return concatBytes(parts);
      }
      parts.push(this.#buffered.slice(0, size));
      this.#buffered = this.#buffered.subarray(size + 2);
    }
  }

  /**
   * Resolves with the ms until the server ended the connection (end of
   * stream or reset), or null if it is still open after `timeoutMs`. Bytes
   * received meanwhile are kept.
   */
  async closedWithin(timeoutMs: number): Promise<number | null> {
    const started = performance.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    try {
      for (;;) {
        const more = await Promise.race([this.#fill(), timeout]);
        if (more === "timeout") return null;
        if (!more) return performance.now() - started;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  [Symbol.dispose](): void {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

/** Opens a connection to `url`'s host and port. */
export async function openRaw(url: string, options: OpenRawOptions = {}): Promise<RawConnection> {
  const { hostname, port } = new URL(url);
  const conn = options.caFile === undefined
    ? await Deno.connect({ hostname, port: Number(port) })
    : await Deno.connectTls({
      hostname,
      port: Number(port),
      caCerts: [await Deno.readTextFile(options.caFile)],
      alpnProtocols: ["http/1.1"],
    });
  return new RawConnection(conn);
}

function _indexOf(bytes: Uint8Array, text: string): number {
  const pattern = ENCODER.encode(text);
  outer: for (let index = 0; index <= bytes.length - pattern.length; index++) {
    for (let offset = 0; offset < pattern.length; offset++) {
      if (bytes[index + offset] !== pattern[offset]) continue outer;
    }
    return index;
  }
  return -1;
}

function _latin1(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let index = 0; index < text.length; index++) bytes[index] = text.charCodeAt(index);
  return bytes;
}
