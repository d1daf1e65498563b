/**
 * Guards a request body while it streams in: a client that stops sending is
 * cut off after an idle timeout, a server shutdown can abort it, and the
 * bytes are counted.
 *
 * @module
 */

import { HttpError } from "./http_error.ts";
import { STATUS } from "./status.ts";

/** Options for {@linkcode guardBody}. */
export interface GuardBodyOptions {
  /** Longest wait for the next chunk, in ms; then the body fails with 408. */
  idleMs: number;
  /** When aborted, the body fails with 503 (the server is shutting down). */
  signal?: AbortSignal;
  /** Called with the size of every chunk that arrives. */
  onBytes?: (bytes: number) => void;
}

/**
 * Wraps `body` so that a read waiting longer than `idleMs` for the next
 * chunk fails with {@linkcode HttpError} 408, an aborted `signal` fails it
 * with 503, and in both cases the source is cancelled.
 *
 * @example Usage
 * ```ts
 * import { guardBody } from "./guarded_body.ts";
 * const body = guardBody(new Blob(["data"]).stream(), { idleMs: 1000 });
 * console.log(await new Response(body).text()); // "data"
 * ```
 */
export function guardBody(
  body: ReadableStream<Uint8Array>,
  options: GuardBodyOptions,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  const { idleMs, signal, onBytes } = options;
  const fail = (controller: ReadableStreamDefaultController<Uint8Array>, error: HttpError) => {
    reader.cancel().catch(() => {});
    controller.error(error);
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (signal?.aborted) return fail(controller, shuttingDown());
      let timer: ReturnType<typeof setTimeout> | undefined;
      let onAbort: (() => void) | undefined;
      const interrupted = new Promise<"timeout" | "aborted">((done) => {
        timer = setTimeout(() => done("timeout"), idleMs);
        onAbort = () => done("aborted");
        signal?.addEventListener("abort", onAbort, { once: true });
      });
      try {
        const result = await Promise.race([reader.read(), interrupted]);
        if (result === "timeout") {
          fail(
            controller,
            new HttpError(
              STATUS.RequestTimeout,
              `Cannot read request body: nothing arrived for ${Math.round(idleMs / 1000)} s`,
            ),
          );
        } else if (result === "aborted") {
          fail(controller, shuttingDown());
        } else if (result.done) {
          controller.close();
        } else {
          onBytes?.(result.value.byteLength);
          controller.enqueue(result.value);
        }
      } catch (error) {
        controller.error(error);
      } finally {
        clearTimeout(timer);
        if (onAbort) signal?.removeEventListener("abort", onAbort);
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

function shuttingDown(): HttpError {
  return new HttpError(
    STATUS.ServiceUnavailable,
    "Cannot finish upload: the server is shutting down; retry",
    { headers: { "retry-after": "5" } },
  );
}
