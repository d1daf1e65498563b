/**
 * A client connection as the HTTP/1.1 code reads and writes it: chunks in,
 * bytes out, with backpressure both ways. {@linkcode TcpConnection} wraps a
 * `Deno.Conn` (plain HTTP); {@linkcode SocketConnection} a `node:tls`
 * socket (HTTPS, see `tls_over_tcp.ts` for why TLS is done that way).
 *
 * @module
 */

import { concatBytes } from "../concat_bytes.ts";
import type { Duplex } from "node:stream";

/** Unread bytes above which the socket stops reading (the client is slowed by TCP). */
const PAUSE_BYTES = 1024 * 1024;

/** What {@linkcode SocketConnection} offers the HTTP code. */
export interface ByteConnection {
  /** The client's address. */
  readonly remoteAddr: Deno.NetAddr;
  /** Our address. */
  readonly localAddr: Deno.NetAddr;
  /** Settles when the client ended its side, either side closed, or the connection failed. */
  readonly closed: Promise<void>;
  /** The next received bytes, at most `max`; null at end of stream. */
  readChunk(max: number): Promise<Uint8Array | null>;
  /**
   * Writes all of `data` (several parts go out as one write: one TLS record
   * and one segment for a small answer); resolves when the socket takes
   * more (backpressure). The bytes must not change afterwards.
   */
  write(data: Uint8Array | readonly Uint8Array[]): Promise<void>;
  /**
   * Writes all of `bytes` and resolves once the connection no longer holds
   * them (encrypted, handed to the kernel), so that the caller may fill the
   * same buffer again.
   */
  send(bytes: Uint8Array): Promise<void>;
  /** Ends our side after what was written (the client sees the end of stream). */
  closeWrite(): void;
  /** Destroys the socket at once; pending reads end, pending writes fail. */
  close(): void;
}

/** A node socket (or any duplex stream) seen as a {@linkcode ByteConnection}. */
export class SocketConnection implements ByteConnection {
  readonly #socket: Duplex;
  readonly #chunks: Uint8Array[] = [];
  #queued = 0;
  #ended = false;
  #error: Error | undefined;
  #wake: (() => void) | undefined;
  readonly remoteAddr: Deno.NetAddr;
  readonly localAddr: Deno.NetAddr;
  readonly closed: Promise<void>;
  #resolveClosed!: () => void;
  readonly #onClose: (() => void) | undefined;
  readonly #flow: { pause(): void; resume(): void };
  #paused = false;

  /**
   * Reads `socket`, whose errors from now on end the connection instead of
   * the process. `options.onClose` also runs on {@linkcode close} (to close
   * what the socket runs over); `options.flow` stops and restarts reading
   * beneath the socket (default: the socket's own pause and resume).
   */
  constructor(
    socket: Duplex,
    addresses: { remoteAddr: Deno.NetAddr; localAddr: Deno.NetAddr },
    options: { onClose?: () => void; flow?: { pause(): void; resume(): void } } = {},
  ) {
    this.#socket = socket;
    this.#onClose = options.onClose;
    this.#flow = options.flow ?? { pause: () => socket.pause(), resume: () => socket.resume() };
    const { remoteAddr, localAddr } = addresses;
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
    this.remoteAddr = remoteAddr;
    this.localAddr = localAddr;
    socket.on("data", (data: Uint8Array) => {
      this.#chunks.push(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      this.#queued += data.byteLength;
      if (this.#queued >= PAUSE_BYTES && !this.#paused) {
        this.#paused = true;
        this.#flow.pause();
      }
      this.#notify();
    });
    // The client's end of stream counts as it going away (the transport is
    // half-open, so no `close` follows by itself): a request's signal aborts.
    socket.on("end", () => {
      this.#ended = true;
      this.#resolveClosed();
      this.#notify();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#resolveClosed();
      this.#notify();
    });
    socket.on("error", (error: Error) => {
      this.#error ??= error;
      this.#resolveClosed();
      this.#notify();
    });
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async readChunk(max: number): Promise<Uint8Array | null> {
    while (this.#chunks.length === 0) {
      if (this.#error !== undefined) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    const chunk = this.#take(max);
    this.#queued -= chunk.length;
    if (this.#queued < PAUSE_BYTES && this.#paused) {
      this.#paused = false;
      this.#flow.resume();
    }
    return chunk;
  }

  /**
   * The oldest queued chunk, at most `max` bytes of it. TLS records (at
   * most 16 KiB) are handed on as they are, not joined into larger chunks:
   * a fresh buffer per join doubled the bytes allocated per byte received,
   * and V8 frees those buffers only at GC, which raised the peak RSS of a
   * 2 GiB upload by about 30 MiB (and joining measured no faster).
   */
  #take(max: number): Uint8Array {
    const first = this.#chunks[0]!;
    if (first.length > max) {
      this.#chunks[0] = first.subarray(max);
      return first.subarray(0, max);
    }
    return this.#chunks.shift()!;
  }

  write(data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    const socket = this.#socket;
    if (socket.destroyed || this.#error !== undefined) {
      return Promise.reject(this.#error ?? new Error("Cannot write: the connection is closed"));
    }
    // Parts joined here cost less than a corked write of each (node's `writev` path).
    if (socket.write(data instanceof Uint8Array ? data : joinedParts(data))) {
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const done = () => {
        socket.off("drain", done);
        socket.off("close", done);
        if (socket.destroyed) reject(new Error("Cannot write: the connection closed"));
        else resolve();
      };
      socket.on("drain", done);
      socket.on("close", done);
    });
  }

  send(bytes: Uint8Array): Promise<void> {
    const socket = this.#socket;
    if (socket.destroyed || this.#error !== undefined) {
      return Promise.reject(this.#error ?? new Error("Cannot write: the connection is closed"));
    }
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const done = (error?: Error | null) => {
        if (settled) return;
        settled = true;
        socket.off("close", closed);
        if (error) reject(error);
        else resolve();
      };
      // A write destroyed before its turn may never call back.
      const closed = () => done(new Error("Cannot write: the connection closed"));
      socket.on("close", closed);
      socket.write(bytes, done);
    });
  }

  closeWrite(): void {
    if (!this.#socket.destroyed) this.#socket.end();
  }

  close(): void {
    this.#socket.destroy();
    this.#onClose?.();
    this.#ended = true;
    this.#resolveClosed();
    this.#notify();
  }
}

/** A `Deno.Conn` seen as a {@linkcode ByteConnection}. */
export class TcpConnection implements ByteConnection {
  readonly #conn: Deno.Conn;
  #closed = false;
  readonly remoteAddr: Deno.NetAddr;
  readonly localAddr: Deno.NetAddr;
  /**
   * Settles on {@linkcode close}, or when a read finds the connection ended
   * or failed (`ConnectionReader.watchForEnd` keeps a read running while a
   * handler waits).
   */
  readonly closed: Promise<void>;
  #resolveClosed!: () => void;

  /** Reads and writes `conn`. */
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
    this.remoteAddr = conn.remoteAddr as Deno.NetAddr;
    this.localAddr = conn.localAddr as Deno.NetAddr;
  }

  async readChunk(max: number): Promise<Uint8Array | null> {
    if (this.#closed) return null;
    const buffer = new Uint8Array(Math.min(max, READ_BYTES));
    let count: number | null;
    try {
      count = await this.#conn.read(buffer);
    } catch (error) {
      this.#resolveClosed();
      if (this.#closed) return null;
      throw error;
    }
    if (count === null) {
      this.#resolveClosed();
      return null;
    }
    return buffer.subarray(0, count);
  }

  async write(data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    const bytes = data instanceof Uint8Array ? data : joinedParts(data);
    let offset = 0;
    while (offset < bytes.length) {
      offset += await this.#conn.write(offset === 0 ? bytes : bytes.subarray(offset));
    }
  }

  /** The same as {@linkcode write}: a `Deno.Conn` write has taken all the bytes when it resolves. */
  send(bytes: Uint8Array): Promise<void> {
    return this.write(bytes);
  }

  closeWrite(): void {
    this.#conn.closeWrite().catch(() => {});
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#resolveClosed();
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }
}

/** Largest single read from a `Deno.Conn`. */
const READ_BYTES = 256 * 1024;

/** `parts` as one buffer: the part itself when there is only one. */
function joinedParts(parts: readonly Uint8Array[]): Uint8Array {
  return parts.length === 1 ? parts[0]! : concatBytes(parts);
}
