/**
 * Where form uploads wait while they are not yet authenticated. The
 * original protocol sends the token as a body field, so such a request must
 * be read a little before anyone knows who sent it. It waits here, never in
 * an upload slot, and the bytes before its token get a small total budget:
 * at most `budgetBytes`, all within `budgetMs` of the request's start, not
 * restarted by each byte. A client that dribbles a preamble is therefore
 * ended after `budgetMs` (408) or `budgetBytes` (400), and can never hold
 * what authenticated uploads need.
 *
 * The pool holds at most `size` requests; when a new one arrives while it is
 * full, the one that has waited longest is ended (503 with `Retry-After`).
 * A genuine client sends its token within milliseconds, so it is not the
 * one waiting longest; a flood of dribblers only ends each other.
 *
 * @module
 */

import { badRequest, HttpError } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";

/** Options for {@linkcode PreAuthPool}. */
export interface PreAuthPoolOptions {
  /**
   * Requests waiting for their token at once.
   * @default {32}
   */
  size?: number;
  /**
   * Time from the request's start until its token must have arrived, in ms.
   * @default {10000}
   */
  budgetMs?: number;
  /**
   * Body bytes read while waiting for the token field: once this many have
   * been read without it, the next read fails (so at most this plus one
   * chunk of the transport is ever read before the token).
   * @default {65536}
   */
  budgetBytes?: number;
}

/** One request in the pool. */
export interface PreAuthEntry {
  /** The body to read: fails with the budget's or the pool's error while in the pool. */
  body: ReadableStream<Uint8Array>;
  /** The token has arrived: the budget no longer applies and the place is freed. */
  leave(): void;
  /** Whether the request left the pool with its token. */
  readonly authenticated: boolean;
  /** The error that ended the request in the pool (budget spent, pushed out), if any. */
  readonly ended: HttpError | undefined;
}

interface _Waiting {
  end(error: HttpError): void;
}

/** The pool of requests that have not presented their token yet. */
export class PreAuthPool {
  readonly #size: number;
  readonly #budgetMs: number;
  readonly #budgetBytes: number;
  readonly #waiting = new Set<_Waiting>();
  #closed = false;

  constructor(options: PreAuthPoolOptions = {}) {
    this.#size = options.size ?? 32;
    this.#budgetMs = options.budgetMs ?? 10_000;
    this.#budgetBytes = options.budgetBytes ?? 65_536;
  }

  /** Requests waiting now. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /**
   * Puts a request whose body carries its token into the pool; throws 503
   * when the server is shutting down.
   */
  enter(source: ReadableStream<Uint8Array>): PreAuthEntry {
    if (this.#closed) {
      throw new HttpError(STATUS.ServiceUnavailable, "Cannot upload: the server is shutting down", {
        headers: { "retry-after": "5" },
      });
    }
    if (this.#waiting.size >= this.#size) {
      const oldest = this.#waiting.values().next().value!;
      oldest.end(
        new HttpError(
          STATUS.ServiceUnavailable,
          `Cannot upload: ${this.#size} uploads are waiting for their token field; retry`,
          { headers: { "retry-after": "1" } },
        ),
      );
    }
    const reader = source.getReader();
    let inPool = true;
    let authenticated = false;
    let bytes = 0;
    let ended: HttpError | undefined;
    let wake: ((error: HttpError) => void) | undefined;
    const waiting: _Waiting = {
      end: (error) => {
        if (!inPool) return;
        ended = error;
        leave();
        reader.cancel().catch(() => {});
        wake?.(error);
      },
    };
    const timer = setTimeout(
      () =>
        waiting.end(
          new HttpError(
            STATUS.RequestTimeout,
            `Cannot upload: no token field within ${
              Math.round(this.#budgetMs / 1000)
            } s of the request's start`,
          ),
        ),
      this.#budgetMs,
    );
    const leave = () => {
      if (!inPool) return;
      inPool = false;
      clearTimeout(timer);
      this.#waiting.delete(waiting);
    };
    this.#waiting.add(waiting);
    const budgetBytes = this.#budgetBytes;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (ended) return controller.error(ended);
        if (!inPool) {
          // Authenticated: a plain pass-through, no budget, no race.
          const result = await reader.read();
          if (result.done) controller.close();
          else controller.enqueue(result.value);
          return;
        }
        if (bytes >= budgetBytes) {
          // The bytes read so far hold no complete token field, and more are asked for.
          waiting.end(badRequest(
            `Cannot upload: no token field within the first ${budgetBytes} bytes of the form`,
          ));
          return controller.error(ended);
        }
        const interrupted = new Promise<HttpError>((resolve) => wake = resolve);
        try {
          const result = await Promise.race([reader.read(), interrupted]);
          if (result instanceof HttpError) return controller.error(result);
          if (result.done) return controller.close();
          bytes += result.value.byteLength;
          controller.enqueue(result.value);
        } catch (error) {
          controller.error(ended ?? error);
        } finally {
          wake = undefined;
        }
      },
      cancel(reason) {
        leave();
        return reader.cancel(reason);
      },
    }, { highWaterMark: 0 });
    return {
      body,
      leave: () => {
        if (inPool && ended === undefined) authenticated = true;
        leave();
      },
      get authenticated() {
        return authenticated;
      },
      get ended() {
        return ended;
      },
    };
  }

  /** Ends every waiting request (503) and admits none from here on (shutdown). */
  close(): void {
    this.#closed = true;
    for (const waiting of [...this.#waiting]) {
      waiting.end(
        new HttpError(STATUS.ServiceUnavailable, "Cannot upload: the server is shutting down", {
          headers: { "retry-after": "5" },
        }),
      );
    }
  }
}
