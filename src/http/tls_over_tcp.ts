/**
 * Server-side TLS on an accepted `Deno.TcpConn`, done by `node:tls` over a
 * duplex stream that reads and writes the connection.
 *
 * Why not `Deno.listenTls`: in Deno 2.9 a `Deno.TlsConn` closed before its
 * handshake completes keeps its TCP socket open for as long as the client
 * stays silent, so no deadline can free the descriptor of a client that
 * connects and sends nothing; and a `TlsConn` has no `setNoDelay`. Why not a
 * `node:net` server either: its accept loop stops for good after one
 * `EMFILE`. Accepting with `Deno.listen` (our own loop, which survives
 * `EMFILE`) and doing TLS here gives a socket that closes at once in any
 * state and takes `TCP_NODELAY`; reading through the duplex costs about 15 %
 * of raw TLS read speed, far above what an upload's hashing and writing take.
 *
 * @module
 */

import { Duplex } from "node:stream";
import { type SecureContext, TLSSocket } from "node:tls";

/** Bytes asked of the connection per read. */
const READ_BYTES = 64 * 1024;

/** A TLS session on a connection, and the switch for reading from it. */
export interface TlsSession {
  /** The decrypted side. */
  socket: TLSSocket;
  /** Reading from the connection as the TLS layer asks: on (default) or off. */
  flow: { pause(): void; resume(): void };
}

/**
 * Starts a TLS server session on `conn` with `secureContext`, offering
 * HTTP/1.1 by ALPN. Errors (a failed handshake, a reset) surface as the
 * socket's `error` event; destroying the socket closes `conn`. While
 * `flow` is paused nothing more is read from the connection, so a
 * consumer slower than the client slows the client down (TCP backpressure)
 * instead of buffering.
 */
export function startTlsSession(conn: Deno.TcpConn, secureContext: SecureContext): TlsSession {
  let paused = false;
  let wanted = false;
  // One read buffer per connection, and a copy of just the bytes read,
  // rather than a fresh 64 KiB buffer per read for a head of a few hundred bytes.
  const buffer = new Uint8Array(READ_BYTES);
  const pull = () => {
    wanted = false;
    conn.read(buffer).then(
      (count) => transport.push(count === null ? null : buffer.slice(0, count)),
      (error) => transport.destroy(error),
    );
  };
  const transport: Duplex = new Duplex({
    read() {
      if (paused) wanted = true;
      else pull();
    },
    write(chunk: Uint8Array, _encoding, callback) {
      _writeAll(conn, chunk).then(() => callback(), callback);
    },
    final(callback) {
      conn.closeWrite().then(() => callback(), () => callback());
    },
    destroy(error, callback) {
      try {
        conn.close();
      } catch {
        // already closed
      }
      callback(error);
    },
  });
  transport.on("error", () => {});
  const socket = new TLSSocket(transport, {
    isServer: true,
    secureContext,
    ALPNProtocols: ["http/1.1"],
  });
  return {
    socket,
    flow: {
      pause: () => paused = true,
      resume: () => {
        paused = false;
        if (wanted) pull();
      },
    },
  };
}

async function _writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    offset += await conn.write(offset === 0 ? bytes : bytes.subarray(offset));
  }
}
