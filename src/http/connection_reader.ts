/**
 * Buffered reads from one client connection: request heads (bounded in
 * size), lines and raw body bytes. Bytes read past the end of a head stay
 * buffered for the body or the next pipelined request.
 *
 * @module
 */

import { RequestHeadError } from "./request_head.ts";
import type { ByteConnection } from "./socket_connection.ts";
import { STATUS } from "./status.ts";

const LF = 0x0a;
const CR = 0x0d;
/** Largest chunk taken at once while looking for the end of a head. */
const READ_BYTES = 64 * 1024;
const EMPTY = new Uint8Array(0);

/** Reads a connection through a small buffer. */
export class ConnectionReader {
  readonly #conn: ByteConnection;
  /** Bytes received and not yet consumed. */
  #buffered: Uint8Array = EMPTY;
  /** Total bytes received on this connection. */
  #received = 0;
  /** The connection ended (end of stream) or failed: no more reads. */
  #ended = false;
  #failure: unknown;
  /** A background read while nobody reads (see {@linkcode watchForEnd}). */
  #parked: Promise<void> | undefined;
  #watchLimit = 0;
  /** A read is in flight (reads never overlap). */
  #reading = false;
  #parkAfterRead = false;

  /** Reads from `conn`. */
  constructor(conn: ByteConnection) {
    this.#conn = conn;
  }

  /** Whether unconsumed bytes are buffered (a pipelined request). */
  get hasBuffered(): boolean {
    return this.#buffered.length > 0;
  }

  /** Total bytes received so far. */
  get received(): number {
    return this.#received;
  }

  /**
   * Reads ahead in the background while nobody else reads (a handler runs
   * and does not read the body), so that the client's end of stream or
   * reset is seen at once (on plain TCP nothing else would notice, and the
   * connection's `closed` settles only when a read finds it). What arrives
   * is buffered as usual, up to `maxBuffered` bytes; the next read of any
   * kind stops the watch.
   */
  watchForEnd(maxBuffered: number): void {
    this.#watchLimit = maxBuffered;
    this.#park();
  }

  #park(): void {
    if (this.#watchLimit === 0 || this.#parked !== undefined || this.#ended) return;
    if (this.#buffered.length >= this.#watchLimit) return;
    if (this.#reading) {
      // A read began before the watch (a body stream pulls ahead): watch after it.
      this.#parkAfterRead = true;
      return;
    }
    this.#parked = this.#fill().then(() => {}, () => {}).finally(() => {
      this.#parked = undefined;
      this.#park();
    });
  }

  /** Stops a watch (a read in flight still lands in the buffer). */
  #unpark(): void {
    this.#watchLimit = 0;
    this.#parkAfterRead = false;
  }

  /** Waits for a watch's read in flight; resolves whether it added bytes. */
  async #landed(): Promise<boolean> {
    const before = this.#buffered.length;
    while (this.#parked !== undefined) await this.#parked;
    return this.#buffered.length > before;
  }

  /** The next received chunk, at most `max` bytes; null at end of stream. */
  async #read(max: number): Promise<Uint8Array | null> {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#ended) return null;
    let chunk: Uint8Array | null;
    this.#reading = true;
    try {
      chunk = await this.#conn.readChunk(max);
    } catch (error) {
      this.#failure = error;
      this.#ended = true;
      throw error;
    } finally {
      this.#reading = false;
      if (this.#parkAfterRead) {
        this.#parkAfterRead = false;
        // After the reader has taken this chunk (a task later), so bytes stay in order.
        setTimeout(() => this.#park(), 0);
      }
    }
    if (chunk === null) this.#ended = true;
    else this.#received += chunk.length;
    return chunk;
  }

  /** Drops the first `count` buffered bytes (an emptied buffer pins no read buffer). */
  #consume(count: number): void {
    this.#buffered = count >= this.#buffered.length ? EMPTY : this.#buffered.subarray(count);
  }

  /** Appends one socket read to the buffer; false at end of stream. */
  async #fill(): Promise<boolean> {
    if (this.#parked !== undefined && await this.#landed()) return true;
    const chunk = await this.#read(READ_BYTES);
    if (chunk === null) return false;
    if (this.#buffered.length === 0) {
      this.#buffered = chunk;
    } else {
      const joined = new Uint8Array(this.#buffered.length + chunk.length);
      joined.set(this.#buffered);
      joined.set(chunk, this.#buffered.length);
      this.#buffered = joined;
    }
    return true;
  }

  /**
   * Reads one request head, up to and without its final empty line, as
   * Latin-1 text. Resolves null when the connection ends before a byte of
   * it arrived; calls `onFirstByte` once its first byte is there.
   *
   * @throws {RequestHeadError} 431 when the head exceeds `maxBytes`, 400 when
   * the connection ends in the middle of it
   */
  async readHead(maxBytes: number, onFirstByte: () => void): Promise<string | null> {
    this.#unpark();
    let scanned = 0;
    let announced = false;
    for (;;) {
      if (!announced && this.#buffered.length > 0) {
        announced = true;
        onFirstByte();
      }
      const end = _headEnd(this.#buffered, scanned);
      if (end !== undefined && end.consumed > maxBytes) {
        throw new RequestHeadError(
          STATUS.RequestHeaderFieldsTooLarge,
          `Cannot read request: the head is larger than ${maxBytes} bytes`,
        );
      }
      if (end !== undefined) {
        const head = this.#buffered.subarray(0, end.headLength);
        this.#consume(end.consumed);
        return _latin1(head);
      }
      scanned = Math.max(0, this.#buffered.length - 2);
      if (this.#buffered.length > maxBytes) {
        throw new RequestHeadError(
          STATUS.RequestHeaderFieldsTooLarge,
          `Cannot read request: the head is larger than ${maxBytes} bytes`,
        );
      }
      if (!await this.#fill()) {
        if (this.#buffered.length === 0) return null;
        throw new RequestHeadError(
          STATUS.BadRequest,
          "Cannot read request: the connection ended inside the head",
        );
      }
    }
  }

  /**
   * Reads one CRLF-terminated line (without the CRLF) of at most `maxBytes`.
   *
   * @throws {SyntaxError} for a longer line, a bare LF or an early end of stream
   */
  async readLine(maxBytes: number): Promise<string> {
    this.#unpark();
    let scanned = 0;
    for (;;) {
      const newline = this.#buffered.indexOf(LF, scanned);
      if (newline >= 0) {
        if (newline === 0 || this.#buffered[newline - 1] !== CR) {
          throw new SyntaxError("Cannot read line: bare LF");
        }
        const line = this.#buffered.subarray(0, newline - 1);
        this.#consume(newline + 1);
        return _latin1(line);
      }
      scanned = this.#buffered.length;
      if (scanned > maxBytes) throw new SyntaxError("Cannot read line: it is too long");
      if (!await this.#fill()) throw new SyntaxError("Cannot read line: the connection ended");
    }
  }

  /**
   * Up to `max` bytes: the buffered ones first, else one socket read. Null
   * at end of stream.
   */
  async readSome(max: number): Promise<Uint8Array | null> {
    this.#unpark();
    if (this.#buffered.length > 0) {
      const count = Math.min(max, this.#buffered.length);
      const chunk = this.#buffered.subarray(0, count);
      this.#consume(count);
      return chunk;
    }
    if (this.#parked !== undefined && await this.#landed()) return await this.readSome(max);
    return await this.#read(max);
  }
}

/**
 * Where a head ends in `bytes` (searching from `from`): the empty line after
 * the fields. A bare LF counts as a line end here so that the parser can
 * refuse it rather than wait for a CRLF that never comes.
 */
function _headEnd(
  bytes: Uint8Array,
  from: number,
): { headLength: number; consumed: number } | undefined {
  let index = bytes.indexOf(LF, from);
  while (index >= 0) {
    // A leading empty line before the request line is allowed (RFC 9112 §2.2).
    const leading = index === 1 && bytes[0] === CR;
    if (!leading) {
      if (bytes[index + 1] === LF) return { headLength: index + 1, consumed: index + 2 };
      if (bytes[index + 1] === CR && bytes[index + 2] === LF) {
        const crlf = bytes[index - 1] === CR;
        return { headLength: crlf ? index - 1 : index + 1, consumed: index + 3 };
      }
    }
    index = bytes.indexOf(LF, index + 1);
  }
  return undefined;
}

/** Keeps a leading BOM (as U+FEFF, not ASCII): it must not vanish from a head. */
const UTF8 = new TextDecoder("utf-8", { ignoreBOM: true });
const NOT_ASCII = /[\u0080-\uffff]/;

function _latin1(bytes: Uint8Array): string {
  // Nearly every head is ASCII, where UTF-8 decodes to the same text natively;
  // any other byte (which UTF-8 would change) takes the byte-by-byte way.
  const ascii = UTF8.decode(bytes);
  if (!NOT_ASCII.test(ascii)) return ascii;
  let text = "";
  for (let offset = 0; offset < bytes.length; offset += 8192) {
    text += String.fromCharCode(...bytes.subarray(offset, offset + 8192));
  }
  return text;
}
