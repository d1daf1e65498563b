/**
 * Serves HTTP/1.1 on one client connection: request heads under a deadline,
 * keep-alive under an idle timeout, request bodies as streams, responses
 * written by {@linkcode writeResponse}. What the client sent decides only
 * this connection's fate: every failure ends in a closed socket, never in
 * an exception out of {@linkcode Http1Connection.serve}.
 *
 * @module
 */

import { ConnectionReader } from "./connection_reader.ts";
import { errorResponse, HttpError } from "./http_error.ts";
import { RequestBody } from "./request_body.ts";
import { parseRequestHead, type RequestHead, RequestHeadError } from "./request_head.ts";
import { writeResponse } from "./response_writer.ts";
import type { ByteConnection } from "./socket_connection.ts";
import { STATUS } from "./status.ts";

/** The request handler, as `Deno.serve` takes it. */
export type ConnectionHandler = (
  request: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Promise<Response>;

/** Options for {@linkcode Http1Connection}. */
export interface Http1ConnectionOptions {
  /** Answers requests. */
  handler: ConnectionHandler;
  /** `https` or `http`, for request URLs. */
  scheme: "http" | "https";
  /** Longest time for a complete request head (and the TLS handshake), in ms. */
  headerTimeoutMs: number;
  /** Longest wait for the next request on a kept-alive connection, in ms. */
  idleTimeoutMs: number;
  /** Largest request head, in bytes (431 beyond it). */
  maxHeadBytes: number;
  /** Unread body bytes read and dropped to keep a connection alive after a response. */
  maxDrainBytes: number;
  /** Told of every request head refused before the handler (for a rate-limited log line). */
  onRefused?: (refusal: { status: number; reason: string; client: string }) => void;
}

const ENCODER = new TextEncoder();
/** The `Allow` of a 405 for a method no route knows. */
const ALLOWED_METHODS = "GET, HEAD, POST, PUT, DELETE";
const CONTINUE = ENCODER.encode("HTTP/1.1 100 Continue\r\n\r\n");
/** How long a closing connection goes on reading (and dropping) what the client still sends. */
const LINGER_MS = 2_000;
/** Most bytes read and dropped while lingering. */
const LINGER_BYTES = 1024 * 1024;

/** One client connection and the requests on it. */
export class Http1Connection {
  readonly #conn: ByteConnection;
  readonly #options: Http1ConnectionOptions;
  readonly #reader: ConnectionReader;
  readonly #remoteAddr: Deno.NetAddr;
  /** When the connection is closed unless re-armed or disarmed first (ms, `performance.now()`). */
  #deadline = Infinity;
  /** The pending timer, and when it fires: never later than the deadline. */
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #closed = false;
  /** Sends under way (see {@linkcode #send}). */
  #sending = 0;
  /** Waiting for the first byte of a request (closed at once on drain). */
  #idle = true;
  #draining = false;
  /** Aborts the signal of the request being handled: the client went away. */
  #requestAbort: AbortController | undefined;

  /** Serves `conn` (not yet read from). */
  constructor(conn: ByteConnection, options: Http1ConnectionOptions) {
    this.#conn = conn;
    this.#options = options;
    this.#reader = new ConnectionReader(conn);
    this.#remoteAddr = conn.remoteAddr;
    conn.closed.then(() => this.#requestAbort?.abort());
  }

  /**
   * Closes the connection now if it waits for a request; otherwise the
   * running request finishes and its response says `Connection: close`.
   */
  drain(): void {
    this.#draining = true;
    if (this.#idle) this.close();
  }

  /** Closes the socket (a pending read or write fails). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#conn.close();
  }

  /**
   * Closes the connection after `ms` unless re-armed or disarmed first.
   * Arming and disarming only move the deadline: a timer is set again only
   * when the deadline comes before the pending one fires (a timer per
   * request and per write cost a few percent of a small file's answer).
   */
  #arm(ms: number): void {
    if (this.#closed) return; // no timer may outlive the connection
    const deadline = performance.now() + ms;
    this.#deadline = deadline;
    if (this.#timer !== undefined && this.#timerAt <= deadline) return;
    this.#schedule(deadline, ms);
  }

  #disarm(): void {
    this.#deadline = Infinity;
  }

  #schedule(at: number, ms: number): void {
    clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(this.#onTimer, ms);
  }

  /** The timer fired: close when the deadline has passed, else wait for it. */
  readonly #onTimer = (): void => {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    if (!Number.isFinite(this.#deadline)) return;
    const left = this.#deadline - performance.now();
    if (left <= 0) this.close();
    else this.#schedule(this.#deadline, left);
  };

  /** Serves requests until the connection ends; never rejects. */
  async serve(): Promise<void> {
    try {
      await this.#serveRequests();
    } catch {
      // A socket error or a deadline: this connection ends, the server goes on.
    } finally {
      this.close();
    }
  }

  async #serveRequests(): Promise<void> {
    const { headerTimeoutMs, idleTimeoutMs, maxHeadBytes } = this.#options;
    // The first head's deadline runs from the accept, so it covers the TLS handshake.
    this.#arm(headerTimeoutMs);
    let first = true;
    while (!this.#closed) {
      this.#idle = !this.#reader.hasBuffered;
      if (this.#idle && this.#draining) return;
      if (!first) this.#arm(idleTimeoutMs);
      let headText: string | null;
      try {
        headText = await this.#reader.readHead(maxHeadBytes, () => {
          this.#idle = false;
          if (!first) this.#arm(headerTimeoutMs);
        });
      } catch (error) {
        if (error instanceof RequestHeadError) {
          await this.#refuse(error, false);
          return;
        }
        throw error;
      }
      if (headText === null) return;
      this.#disarm();
      first = false;
      let head: RequestHead;
      try {
        head = parseRequestHead(headText);
      } catch (error) {
        if (error instanceof RequestHeadError) {
          await this.#refuse(error, /^[^\r\n]* HTTP\/1\.0(?:\r|$)/.test(headText));
          return;
        }
        throw error;
      }
      if (!await this.#serveRequest(head)) return;
    }
  }

  /** Serves one request; resolves whether the connection stays open. */
  async #serveRequest(head: RequestHead): Promise<boolean> {
    let url: URL;
    try {
      url = this.#requestUrl(head);
    } catch {
      return await this.#refuse(
        new RequestHeadError(STATUS.BadRequest, "Cannot read request: invalid Host or target"),
        head.minorVersion === 0,
      );
    }
    let continueSent = false;
    const body = new RequestBody(this.#reader, head.framing, {
      onFirstRead: async () => {
        if (head.expectsContinue) {
          continueSent = true;
          await this.#write(CONTINUE);
        }
      },
    });
    const bodyAllowed = head.method !== "GET" && head.method !== "HEAD";
    let completed!: () => void;
    const info: Deno.ServeHandlerInfo<Deno.NetAddr> = {
      remoteAddr: this.#remoteAddr,
      completed: new Promise<void>((resolve) => completed = resolve),
    };
    let response: Response;
    const abort = new AbortController();
    this.#requestAbort = abort;
    try {
      const request = new Request(url, {
        method: head.method,
        headers: head.fields,
        body: bodyAllowed && head.framing.kind !== "none" ? body.stream : null,
        signal: abort.signal,
      });
      // A client that goes away while the handler waits (and does not read
      // the body) aborts the request's signal at once.
      this.#reader.watchForEnd(this.#options.maxDrainBytes);
      response = await this.#options.handler(request, info);
    } catch (error) {
      response = errorResponse(error instanceof HttpError ? error : new Error("handler failed"));
    }
    if (abort.signal.aborted) {
      // The client ended or reset its side while the handler ran: no answer is
      // sent (a held failed-token answer let go because its client left must not
      // reach a client that only half-closed), and the connection is closed.
      await response.body?.cancel().catch(() => {});
      this.#requestAbort = undefined;
      completed();
      return false;
    }
    // Keep the connection only if the next request's first byte is known: the body was
    // read to its end, or what is left is small and the client is sending it.
    let keepAlive = head.keepAlive && !this.#draining;
    let drain = false;
    if (body.state === "broken") keepAlive = false;
    else if (body.state === "reading") {
      const remaining = body.knownRemaining;
      const clientSends = !head.expectsContinue || continueSent;
      drain = keepAlive && clientSends && remaining !== undefined &&
        remaining <= this.#options.maxDrainBytes;
      keepAlive = drain;
    }
    let reusable: boolean;
    try {
      reusable = await writeResponse(response, {
        head: head.method === "HEAD",
        close: !keepAlive,
        http10: head.minorVersion === 0,
        write: (data) => this.#write(data),
        send: (bytes) => this.#send(bytes),
      });
    } finally {
      this.#requestAbort = undefined;
      completed();
    }
    if (drain) {
      this.#arm(this.#options.headerTimeoutMs);
      reusable &&= await body.discard(this.#options.maxDrainBytes);
      this.#disarm();
    }
    if (!reusable) {
      if (body.state === "reading") {
        await body.stop();
        await this.#linger();
      }
      return false;
    }
    return true;
  }

  /** Answers a head that cannot be served, then closes. */
  async #refuse(error: RequestHeadError, http10: boolean): Promise<false> {
    this.#options.onRefused?.({
      status: error.status,
      reason: error.message,
      client: this.#remoteAddr.hostname,
    });
    const response = new Response(error.message + "\n", {
      status: error.status,
      headers: {
        "content-type": "text/plain; charset=utf-8",
        ...(error.status === STATUS.MethodNotAllowed ? { allow: ALLOWED_METHODS } : {}),
      },
    });
    await writeResponse(response, {
      head: false,
      close: true,
      http10,
      write: (data) => this.#write(data),
    }).catch(() => {});
    await this.#linger();
    return false;
  }

  /**
   * Ends the connection after a `Connection: close` response while the
   * client may still be sending: our side is shut at once (the client sees
   * the end of the response), and what still arrives is read and dropped
   * for a moment so that the close does not reset the connection before
   * the client has read the response.
   */
  async #linger(): Promise<void> {
    if (this.#closed) return;
    this.#conn.closeWrite();
    this.#arm(LINGER_MS);
    let dropped = 0;
    while (!this.#closed && dropped < LINGER_BYTES) {
      const chunk = await this.#reader.readSome(64 * 1024).catch(() => null);
      if (chunk === null) break;
      dropped += chunk.length;
    }
  }

  /** Writes `bytes`; a client that takes nothing for the idle timeout is closed. */
  async #write(data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    this.#arm(this.#options.idleTimeoutMs);
    await this.#conn.write(data);
    this.#disarm();
  }

  /**
   * Sends `bytes` (see {@linkcode ByteConnection.send}); several may be under
   * way. The client is closed when none of them progresses for the idle timeout.
   */
  async #send(bytes: Uint8Array): Promise<void> {
    this.#sending++;
    this.#arm(this.#options.idleTimeoutMs);
    try {
      await this.#conn.send(bytes);
    } finally {
      this.#sending--;
      if (this.#sending > 0) this.#arm(this.#options.idleTimeoutMs);
      else this.#disarm();
    }
  }

  #requestUrl(head: RequestHead): URL {
    const host = head.fields.find(([name]) => name === "host")?.[1];
    const local = this.#conn.localAddr;
    const authority = host !== undefined && host !== ""
      ? host
      : local.hostname.includes(":")
      ? `[${local.hostname}]:${local.port}`
      : `${local.hostname}:${local.port}`;
    if (/[/?#@\\\s]/.test(authority)) throw new TypeError("Cannot use Host: invalid");
    // Origin form (nearly every request): one parse of the whole URL.
    if (head.target.startsWith("/")) {
      return new URL(`${this.#options.scheme}://${authority}${head.target}`);
    }
    const base = new URL(`${this.#options.scheme}://${authority}/`);
    const absolute = new URL(head.target);
    return new URL(base.origin + absolute.pathname + absolute.search);
  }
}
