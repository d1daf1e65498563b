/**
 * The HTTP(S) listener: `Deno.serve` on the configured address, with TLS
 * certificates that can be replaced without a restart (the old listener
 * stops accepting and drains its connections while a new one binds the same
 * port a moment later) and a shutdown that waits for running requests.
 *
 * @module
 */

import type { Logger } from "./log.ts";

/** TLS material in PEM form, as `Deno.serve` takes it. */
export interface TlsPem {
  /** Certificate chain. */
  cert: string;
  /** Private key. */
  key: string;
}

/** Options for {@linkcode Listener.start}. */
export interface ListenerOptions {
  /** Address to bind. */
  hostname: string;
  /** Port (0: any free port). */
  port: number;
  /** TLS material, or undefined for plain HTTP. */
  tls: TlsPem | undefined;
  /** The request handler. */
  handler: (request: Request, info: Deno.ServeHandlerInfo) => Promise<Response>;
  /** Where reloads are logged. */
  logger: Logger;
}

/** A running listener whose certificate can be swapped. */
export class Listener {
  readonly #options: ListenerOptions;
  #server: Deno.HttpServer<Deno.NetAddr>;
  #port: number;
  readonly #finished: Promise<void>;
  #resolveFinished!: () => void;
  #stopping = false;

  private constructor(options: ListenerOptions) {
    this.#options = options;
    this.#server = serve(options, options.port);
    this.#port = this.#server.addr.port;
    this.#finished = new Promise((resolve) => this.#resolveFinished = resolve);
  }

  /** Binds and starts serving; throws Deno's errors (e.g. `AddrInUse`). */
  static start(options: ListenerOptions): Listener {
    return new Listener(options);
  }

  /** The port actually bound. */
  get port(): number {
    return this.#port;
  }

  /** Settles once {@linkcode shutdown} has finished. */
  get finished(): Promise<void> {
    return this.#finished;
  }

  /**
   * Serves new connections with `tls` from now on. The old listener stops
   * accepting at once and finishes its running requests (uploads in progress
   * complete); the new one binds the freed port within milliseconds, so only
   * a connection attempted in that gap is refused (clients retry).
   * `reusePort` would close the gap but needs `--unstable-net` with TLS.
   */
  async reloadTls(tls: TlsPem): Promise<void> {
    if (this.#stopping) return;
    if (this.#options.tls === undefined) {
      throw new Error("Cannot reload TLS: the server runs without TLS");
    }
    const previous = this.#server;
    const draining = previous.shutdown();
    let lastError: unknown;
    for (let attempt = 0; attempt < REBIND_ATTEMPTS; attempt++) {
      try {
        this.#server = serve({ ...this.#options, tls }, this.#port);
        this.#options.tls = tls;
        lastError = undefined;
        break;
      } catch (error) {
        lastError = error;
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    }
    if (lastError !== undefined) {
      this.#options.logger.error("cannot listen again after TLS reload", {
        port: this.#port,
        reason: lastError instanceof Error ? lastError.message : String(lastError),
      });
      throw lastError;
    }
    await draining;
  }

  /** Stops accepting connections and waits for running requests. */
  async shutdown(): Promise<void> {
    this.#stopping = true;
    await this.#server.shutdown();
    this.#resolveFinished();
  }
}

/** Attempts to bind the port again after a reload (2 ms apart). */
const REBIND_ATTEMPTS = 500;

function serve(options: ListenerOptions, port: number): Deno.HttpServer<Deno.NetAddr> {
  const common = {
    hostname: options.hostname,
    port,
    onListen: () => {},
    onError: () => new Response("Internal server error\n", { status: 500 }),
  };
  return options.tls
    ? Deno.serve({ ...common, cert: options.tls.cert, key: options.tls.key }, options.handler)
    : Deno.serve(common, options.handler);
}
