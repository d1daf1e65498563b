/**
 * A request body as a `ReadableStream`, read from the connection only as
 * fast as the handler consumes it (backpressure), delimited by
 * `Content-Length` or decoded from `chunked` (RFC 9112 §7.1, trailers read
 * and dropped). The connection needs to know afterwards whether the body
 * was read to its end, so that the next request starts where it should.
 *
 * @module
 */

import type { ConnectionReader } from "./connection_reader.ts";
import { badRequest } from "./http_error.ts";
import type { BodyFraming } from "./request_head.ts";

/** Largest chunk handed to the handler. */
const CHUNK_BYTES = 256 * 1024;
/** Longest chunk-size line or trailer line. */
const LINE_BYTES = 4096;
/** Most trailer bytes accepted after the last chunk. */
const TRAILER_BYTES = 16 * 1024;
/** At most 13 hex digits: every chunk size stays below 2^53 (a safe integer). */
const CHUNK_SIZE = /^([0-9a-fA-F]{1,13})(?:[ \t]*;[\t\x20-\x7e]*)?$/;

/** The state of a body being read. */
export type BodyState = "reading" | "complete" | "broken";

/** Options for {@linkcode RequestBody}. */
export interface RequestBodyOptions {
  /** Called before the first read from the connection (sends `100 Continue`). */
  onFirstRead?: () => Promise<void>;
}

/** One request's body, read from its connection. */
export class RequestBody {
  readonly #reader: ConnectionReader;
  readonly #framing: BodyFraming;
  readonly #onFirstRead: (() => Promise<void>) | undefined;
  #state: BodyState = "reading";
  #started = false;
  /** Bytes left in the body (length framing) or in the current chunk (chunked). */
  #remaining: number;
  /** Chunked: whether the next thing to read is a chunk-size line. */
  #atChunkStart = true;
  /** The read in progress, if any, so that nothing else reads meanwhile. */
  #pending: Promise<unknown> = Promise.resolve();
  #cancelled = false;
  /** The stream handed to the handler. */
  readonly stream: ReadableStream<Uint8Array>;

  /** A body delimited by `framing` (not `none`), read from `reader`. */
  constructor(reader: ConnectionReader, framing: BodyFraming, options: RequestBodyOptions = {}) {
    this.#reader = reader;
    this.#framing = framing;
    this.#onFirstRead = options.onFirstRead;
    this.#remaining = framing.kind === "length" ? framing.length : 0;
    if (framing.kind === "none") this.#state = "complete";
    this.stream = new ReadableStream<Uint8Array>({
      pull: (controller) => {
        if (this.#cancelled) {
          controller.error(
            badRequest("Cannot read request body: the request was already answered"),
          );
          return;
        }
        const read = this.#next().then(
          (chunk) => {
            if (this.#cancelled) return;
            if (chunk !== null) controller.enqueue(chunk);
            if (this.#state === "complete") controller.close();
          },
          (error) => {
            this.#state = "broken";
            if (!this.#cancelled) controller.error(error);
          },
        );
        this.#pending = read;
        return read;
      },
      cancel: () => {
        this.#cancelled = true;
      },
    }, { highWaterMark: 0 });
  }

  /** Whether the body was read to its end, is still (partly) unread, or cannot be. */
  get state(): BodyState {
    return this.#state;
  }

  /** Whether the handler has started reading (and `100 Continue` was sent if asked). */
  get started(): boolean {
    return this.#started;
  }

  /** Body bytes known to be left (length framing), or undefined (chunked). */
  get knownRemaining(): number | undefined {
    return this.#framing.kind === "length" ? this.#remaining : undefined;
  }

  /**
   * Stops handing the body to the handler and waits for a read in progress,
   * so that the connection can be read by someone else (or closed).
   */
  async stop(): Promise<void> {
    this.#cancelled = true;
    await this.#pending.catch(() => {});
  }

  /**
   * Reads and drops what is left of the body, at most `maxBytes`. Resolves
   * true when the body ended within the limit (the connection can go on).
   */
  async discard(maxBytes: number): Promise<boolean> {
    await this.stop();
    let dropped = 0;
    try {
      while (this.#state === "reading") {
        const chunk = await this.#next();
        dropped += chunk?.length ?? 0;
        if (dropped > maxBytes) return false;
      }
    } catch {
      this.#state = "broken";
    }
    return this.#state === "complete";
  }

  /** The next piece of body; null when none is left (then `state` is complete). */
  async #next(): Promise<Uint8Array | null> {
    if (this.#state !== "reading") return null;
    if (!this.#started) {
      this.#started = true;
      await this.#onFirstRead?.();
    }
    return this.#framing.kind === "chunked" ? await this.#nextChunked() : await this.#nextLength();
  }

  async #nextLength(): Promise<Uint8Array | null> {
    const chunk = await this.#reader.readSome(Math.min(this.#remaining, CHUNK_BYTES));
    if (chunk === null) throw _endedEarly();
    this.#remaining -= chunk.length;
    if (this.#remaining === 0) this.#state = "complete";
    return chunk;
  }

  async #nextChunked(): Promise<Uint8Array | null> {
    try {
      if (this.#atChunkStart) {
        const line = await this.#reader.readLine(LINE_BYTES);
        const match = CHUNK_SIZE.exec(line);
        if (!match) throw new SyntaxError("Cannot read chunk: malformed chunk size");
        this.#remaining = parseInt(match[1]!, 16);
        this.#atChunkStart = false;
        if (this.#remaining === 0) {
          await this.#readTrailers();
          this.#state = "complete";
          return null;
        }
      }
      const chunk = await this.#reader.readSome(Math.min(this.#remaining, CHUNK_BYTES));
      if (chunk === null) throw _endedEarly();
      this.#remaining -= chunk.length;
      if (this.#remaining === 0) {
        if (await this.#reader.readLine(2) !== "") {
          throw new SyntaxError("Cannot read chunk: no CRLF after the chunk data");
        }
        this.#atChunkStart = true;
      }
      return chunk;
    } catch (error) {
      if (error instanceof SyntaxError) {
        throw badRequest("Cannot read request body: malformed chunked encoding", error);
      }
      throw error;
    }
  }

  async #readTrailers(): Promise<void> {
    let total = 0;
    for (;;) {
      const line = await this.#reader.readLine(LINE_BYTES);
      if (line === "") return;
      total += line.length + 2;
      if (total > TRAILER_BYTES) throw new SyntaxError("Cannot read trailers: too large");
    }
  }
}

function _endedEarly() {
  return badRequest("Cannot read request body: the connection closed before the body ended");
}
