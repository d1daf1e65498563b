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
  /** Reloads run one after the other. */
  #swaps: Promise<void> = Promise.resolve();
  /** Replaced listeners still finishing their requests. */
  readonly #draining = new Set<Promise<void>>();

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
   * Serves new connections with `tls` from now on. The material is checked
   * first (a certificate that does not parse or does not match its key
   * throws, and the current listener goes on serving untouched). Then the old
   * listener stops accepting at once and finishes its running requests
   * (uploads in progress complete); the new one binds the freed port within
   * milliseconds, so only a connection attempted in that gap is refused
   * (clients retry). `reusePort` would close the gap but needs
   * `--unstable-net` with TLS. Resolves once the new listener serves.
   */
  reloadTls(tls: TlsPem): Promise<void> {
    const swapped = this.#swaps.then(() => this.#swap(tls));
    this.#swaps = swapped.catch(() => {});
    return swapped;
  }

  /** Replaces the server; the old one drains in the background ({@linkcode shutdown} waits for it). */
  async #swap(tls: TlsPem): Promise<void> {
    if (this.#stopping) return;
    if (this.#options.tls === undefined) {
      throw new Error("Cannot reload TLS: the server runs without TLS");
    }
    checkTls(tls, this.#options.hostname);
    const previous = this.#server;
    const draining = previous.shutdown();
    this.#draining.add(draining);
    draining.finally(() => this.#draining.delete(draining)).catch(() => {});
    try {
      this.#server = await this.#bind(tls);
      this.#options.tls = tls;
    } catch (error) {
      this.#options.logger.error("cannot listen with the new certificate; keeping the old one", {
        port: this.#port,
        reason: error instanceof Error ? error.message : String(error),
      });
      this.#server = await this.#bind(this.#options.tls);
      throw error;
    }
  }

  /** Binds the port again, retrying while the old listener still holds it. */
  async #bind(tls: TlsPem): Promise<Deno.HttpServer<Deno.NetAddr>> {
    for (let attempt = 1;; attempt++) {
      try {
        return serve({ ...this.#options, tls }, this.#port);
      } catch (error) {
        if (!(error instanceof Deno.errors.AddrInUse) || attempt >= REBIND_ATTEMPTS) {
          if (error instanceof Deno.errors.AddrInUse) {
            this.#options.logger.error("cannot listen again after TLS reload", {
              port: this.#port,
              reason: error.message,
            });
          }
          throw error;
        }
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    }
  }

  /**
   * Stops accepting connections and waits for running requests, including
   * those still running on a listener replaced by a TLS reload.
   */
  async shutdown(): Promise<void> {
    this.#stopping = true;
    await this.#swaps;
    await Promise.all([this.#server.shutdown(), ...this.#draining]);
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

/**
 * Throws when `tls` cannot be served (a certificate or key that does not
 * parse, or a key that does not belong to the certificate), by opening and
 * closing a TLS listener on a free port.
 */
function checkTls(tls: TlsPem, hostname: string): void {
  let probe: Deno.TlsListener;
  try {
    probe = Deno.listenTls({ hostname, port: 0, cert: tls.cert, key: tls.key });
  } catch (error) {
    throw new Error(
      `Cannot reload TLS: ${error instanceof Error ? error.message.split("\n")[0] : String(error)}`,
    );
  }
  probe.close();
}
