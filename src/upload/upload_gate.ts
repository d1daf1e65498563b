/**
 * Admission of write requests: a cap on concurrent uploads (503 with
 * `Retry-After` beyond it) and the signal that aborts the uploads still
 * running when a graceful shutdown's deadline passes.
 *
 * @module
 */

import { HttpError } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";

/** Limits and drains concurrent uploads. */
export class UploadGate {
  readonly #limit: number;
  readonly #abort = new AbortController();
  #inFlight = 0;
  #closed = false;

  /** At most `limit` uploads run at once. */
  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Uploads running now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Fires when running uploads must stop (shutdown deadline passed). */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /**
   * Admits one upload and returns the function that releases its slot; throws
   * 503 when the cap is reached or the server is shutting down.
   */
  enter(): () => void {
    if (this.#closed) {
      throw new HttpError(STATUS.ServiceUnavailable, "Cannot upload: the server is shutting down", {
        headers: { "retry-after": "5" },
      });
    }
    if (this.#inFlight >= this.#limit) {
      throw new HttpError(
        STATUS.ServiceUnavailable,
        `Cannot upload: ${this.#limit} uploads are already in progress; retry shortly`,
        { headers: { "retry-after": "2" } },
      );
    }
    this.#inFlight++;
    let released = false;
    return () => {
      if (!released) {
        released = true;
        this.#inFlight--;
      }
    };
  }

  /** Admits no more uploads (a shutdown has begun). */
  close(): void {
    this.#closed = true;
  }

  /** Aborts the bodies of the uploads still running. */
  abortRunning(): void {
    this.#abort.abort();
  }
}
