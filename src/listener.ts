/**
 * The HTTP(S) listener: our own accept loop over `Deno.listen`, TLS by
 * `node:tls` on each accepted connection (see `http/tls_over_tcp.ts` for
 * why), and {@linkcode Http1Connection} serving each one. Owning the
 * connections gives what `Deno.serve` lacks: deadlines for request heads
 * (TLS handshake included) and idle keep-alive connections, caps on open
 * connections (in total and per client address), `TCP_NODELAY`, an accept
 * loop that outlives every accept error (`EMFILE` included), and a shutdown
 * that lets running requests read their bodies to the end.
 *
 * TLS certificates can be replaced without a restart: new connections get
 * the new certificate, open ones go on with theirs, and the listening
 * socket stays open.
 *
 * @module
 */

import { createSecureContext, type SecureContext } from "node:tls";
import {
  type ConnectionHandler,
  Http1Connection,
  type Http1ConnectionOptions,
} from "./http/http1_connection.ts";
import { ConnectionLimits } from "./http/connection_limits.ts";
import { type ByteConnection, SocketConnection, TcpConnection } from "./http/socket_connection.ts";
import { startTlsSession } from "./http/tls_over_tcp.ts";
import type { Logger } from "./log.ts";

/** TLS material in PEM form. */
export interface TlsPem {
  /** Certificate chain. */
  cert: string;
  /** Private key. */
  key: string;
}

/** Connection limits and timeouts of a {@linkcode Listener}. */
export interface ConnectionSettings {
  /** Longest time for a complete request head (and the TLS handshake), in ms. */
  headerTimeoutMs: number;
  /** Longest wait for the next request on a kept-alive connection, in ms. */
  idleTimeoutMs: number;
  /** Most connections open at once. */
  maxConnections: number;
  /** Most connections open at once from one client address. */
  maxConnectionsPerClient: number;
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
  handler: ConnectionHandler;
  /** Where reloads and connection trouble are logged. */
  logger: Logger;
  /** Limits and timeouts. */
  connections: ConnectionSettings;
}

/** Largest request head, in bytes. */
const MAX_HEAD_BYTES = 64 * 1024;
/** Unread request body bytes dropped to keep a connection alive after a response. */
const MAX_DRAIN_BYTES = 64 * 1024;
/** Longest pause of the accept loop after an accept error, in ms. */
const MAX_BACKOFF_MS = 1_000;

/** A running listener whose certificate can be swapped. */
export class Listener {
  readonly #options: ListenerOptions;
  readonly #limits: ConnectionLimits;
  readonly #connectionOptions: Http1ConnectionOptions;
  readonly #warnings: _RateLimitedWarnings;
  readonly #listener: Deno.TcpListener;
  #secureContext: SecureContext | undefined;
  readonly #connections = new Set<Http1Connection>();
  readonly #finished: Promise<void>;
  #resolveFinished!: () => void;
  #allClosed: (() => void) | undefined;
  #stopping = false;

  private constructor(options: ListenerOptions) {
    this.#options = options;
    const { connections } = options;
    this.#limits = new ConnectionLimits({
      maxConnections: connections.maxConnections,
      maxPerClient: connections.maxConnectionsPerClient,
    });
    this.#connectionOptions = {
      handler: options.handler,
      scheme: options.tls ? "https" : "http",
      headerTimeoutMs: connections.headerTimeoutMs,
      idleTimeoutMs: connections.idleTimeoutMs,
      maxHeadBytes: MAX_HEAD_BYTES,
      maxDrainBytes: MAX_DRAIN_BYTES,
      onRefused: ({ status, reason, client }) =>
        this.#warnings.warn(`refused-${status}`, "request head refused", {
          status,
          reason,
          client,
        }),
    };
    this.#warnings = new _RateLimitedWarnings(options.logger);
    if (options.tls) {
      _checkTls(options.tls, options.hostname);
      this.#secureContext = _secureContext(options.tls);
    }
    this.#listener = Deno.listen({ hostname: options.hostname, port: options.port });
    this.#finished = new Promise((resolve) => this.#resolveFinished = resolve);
    this.#acceptLoop();
  }

  /** Binds and starts serving; throws Deno's errors (e.g. `AddrInUse`). */
  static start(options: ListenerOptions): Listener {
    return new Listener(options);
  }

  /** The port actually bound. */
  get port(): number {
    return this.#listener.addr.port;
  }

  /** Client connections open now. */
  get openConnections(): number {
    return this.#connections.size;
  }

  /** Settles once {@linkcode shutdown} has finished. */
  get finished(): Promise<void> {
    return this.#finished;
  }

  /**
   * Serves new connections with `tls` from now on. The material is checked
   * first: a certificate that does not parse or does not match its key
   * throws, and the current one goes on serving. The listening socket stays
   * open (no connection is refused), and open connections, running uploads
   * included, go on with the certificate they started with.
   */
  reloadTls(tls: TlsPem): Promise<void> {
    if (this.#stopping) return Promise.resolve();
    if (this.#options.tls === undefined) {
      return Promise.reject(new Error("Cannot reload TLS: the server runs without TLS"));
    }
    try {
      _checkTls(tls, this.#options.hostname);
      this.#secureContext = _secureContext(tls);
    } catch (error) {
      return Promise.reject(error);
    }
    this.#options.tls = tls;
    return Promise.resolve();
  }

  /**
   * Accepts connections until the shutdown. An error of one connection (the
   * client reset it before the accept returned: `ENOTCONN`, `ECONNABORTED`)
   * is counted in a rate-limited log line and the loop accepts the next at
   * once: pausing there would let a flood of resets stop the server. Any
   * other error (out of file descriptors, `EMFILE`) is logged and followed
   * by a pause that doubles up to 1 s while errors go on, so the pending
   * connections wait in the kernel's backlog until some close.
   */
  async #acceptLoop(): Promise<void> {
    let backoffMs = 0;
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#stopping) return;
        if (_isConnectionError(error)) {
          this.#warnings.warn("accept-reset", "connection ended before it was accepted", {
            reason: error instanceof Error ? error.message : String(error),
          });
          continue;
        }
        backoffMs = Math.min(MAX_BACKOFF_MS, Math.max(10, backoffMs * 2));
        this.#warnings.warn("accept", "cannot accept connections; pausing", {
          reason: error instanceof Error ? error.message : String(error),
          pause_ms: backoffMs,
        });
        await new Promise((resolve) => setTimeout(resolve, backoffMs));
        continue;
      }
      backoffMs = 0;
      this.#adopt(conn);
    }
  }

  /** Serves `conn` when the caps allow it, else closes it at once. */
  #adopt(conn: Deno.TcpConn): void {
    let release: (() => void) | "total" | "client" | undefined;
    try {
      const remote = conn.remoteAddr;
      release = this.#limits.admit(remote.hostname);
      if (typeof release === "string") {
        _close(conn);
        this.#warnings.warn(release, "connection refused: too many open connections", {
          cap: release === "total" ? "--max_connections" : "--max_connections_per_client",
          client: remote.hostname,
          open: this.#limits.open,
        });
        return;
      }
      if (this.#stopping) {
        release();
        _close(conn);
        return;
      }
      conn.setNoDelay(true);
      const connection = new Http1Connection(this.#byteConnection(conn), this.#connectionOptions);
      this.#connections.add(connection);
      const done = release;
      connection.serve().finally(() => {
        done();
        this.#connections.delete(connection);
        if (this.#connections.size === 0) this.#allClosed?.();
      });
    } catch (error) {
      if (typeof release === "function") release();
      _close(conn);
      this.#warnings.warn("adopt", "cannot serve a connection", {
        reason: error instanceof Error ? error.message : String(error),
      });
    }
  }

  #byteConnection(conn: Deno.TcpConn): ByteConnection {
    if (this.#secureContext === undefined) return new TcpConnection(conn);
    const { socket, flow } = startTlsSession(conn, this.#secureContext);
    return new SocketConnection(socket, conn, { onClose: () => _close(conn), flow });
  }

  /**
   * Stops accepting, closes idle keep-alive connections at once and lets
   * the others finish their running request (its response says
   * `Connection: close`). Connections still open after `forceAfterMs` are
   * closed. Resolves when none is left.
   */
  async shutdown(forceAfterMs = Infinity): Promise<void> {
    if (!this.#stopping) {
      this.#stopping = true;
      try {
        this.#listener.close();
      } catch {
        // already closed
      }
      for (const connection of this.#connections) connection.drain();
      if (this.#connections.size > 0) {
        const allClosed = new Promise<void>((resolve) => this.#allClosed = resolve);
        const timer = Number.isFinite(forceAfterMs)
          ? setTimeout(() => {
            for (const connection of this.#connections) connection.close();
          }, forceAfterMs)
          : undefined;
        await allClosed;
        clearTimeout(timer);
      }
      this.#resolveFinished();
    }
    await this.#finished;
  }
}

/** Warnings logged at most once per key every 10 s, with the count of those left out. */
class _RateLimitedWarnings {
  readonly #logger: Logger;
  readonly #last = new Map<string, { at: number; suppressed: number }>();

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  warn(key: string, message: string, fields: Record<string, unknown>): void {
    const now = performance.now();
    const last = this.#last.get(key);
    if (last !== undefined && now - last.at < 10_000) {
      last.suppressed++;
      return;
    }
    this.#last.set(key, { at: now, suppressed: 0 });
    this.#logger.warn(message, {
      ...fields,
      ...(last?.suppressed ? { since_last_logged: last.suppressed } : {}),
    });
  }
}

/** `accept()` errors of the connection being accepted, not of the listener or the process. */
const _CONNECTION_ERROR_CODES = new Set([
  "ENOTCONN",
  "ECONNABORTED",
  "ECONNRESET",
  "EPROTO",
  "EPERM",
  "ENETDOWN",
  "ENETUNREACH",
  "EHOSTDOWN",
  "EHOSTUNREACH",
  "ENONET",
  "ENOPROTOOPT",
  "EOPNOTSUPP",
]);

/** Whether an `accept()` error belongs to one connection only (see {@linkcode _CONNECTION_ERROR_CODES}). */
function _isConnectionError(error: unknown): boolean {
  if (
    error instanceof Deno.errors.NotConnected ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.ConnectionReset
  ) return true;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && _CONNECTION_ERROR_CODES.has(code);
}

function _secureContext(tls: TlsPem): SecureContext {
  return createSecureContext({ cert: tls.cert, key: tls.key });
}

function _close(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/**
 * Throws when `tls` cannot be served (a certificate or key that does not
 * parse, or a key that does not belong to the certificate), by opening and
 * closing a TLS listener on a free port.
 */
function _checkTls(tls: TlsPem, hostname: string): void {
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
