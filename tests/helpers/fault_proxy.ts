/**
 * A TCP proxy in front of the test S3 engine that injects faults per
 * connection: the client must not reuse connections (a fetch client with
 * `poolMaxIdlePerHost: 0`), so each connection carries one request and the
 * proxy decides from its request line. SigV4 still verifies: the signed
 * `Host` header reaches the engine unchanged.
 *
 * @module
 */

/** What the proxy does with one request. */
export type Fault =
  | "pass" // forward and answer
  | "503" // answer 503 SlowDown without forwarding
  | "drop" // close the connection without forwarding or answering
  | "lose-response" // forward, let the engine act, then close without answering
  | "hang" // read the request, never answer
  | "slow-body"; // forward, but hold the rest of the answer 1 s after its first bytes

/** A request as the proxy saw it. */
export interface SeenRequest {
  /** `PUT`, `GET`, ... */
  method: string;
  /** Path and query. */
  target: string;
  /** What was done with it. */
  fault: Fault;
}

/** A running proxy. */
export interface FaultProxy {
  /** `http://127.0.0.1:PORT`. */
  endpoint: string;
  /** Every request, in arrival order. */
  seen: SeenRequest[];
  /** Stops listening and closes open connections. */
  [Symbol.asyncDispose](): Promise<void>;
}

const SLOW_DOWN = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n" +
  "Content-Length: 60\r\nConnection: close\r\n\r\n" +
  "<Error><Code>SlowDown</Code><Message></Message></Error>     ";

// Reads the rest of a request with a Content-Length body, so an early answer
// is read by the client instead of breaking its upload.
async function drainBody(client: Deno.Conn, head: Uint8Array): Promise<void> {
  const text = new TextDecoder().decode(head);
  const headEnd = text.indexOf("\r\n\r\n");
  const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(text)?.[1] ?? "0");
  if (headEnd === -1) return;
  // The head is ASCII, so its byte length is its text length.
  let remaining = length - (head.byteLength - (headEnd + 4));
  const buffer = new Uint8Array(65536);
  while (remaining > 0) {
    const read = await client.read(buffer);
    if (read === null) return;
    remaining -= read;
  }
}

/** Starts a proxy to `upstream` (`http://127.0.0.1:PORT`) deciding each request with `decide`. */
export function startFaultProxy(
  upstream: string,
  decide: (method: string, target: string) => Fault,
): FaultProxy {
  const upstreamUrl = new URL(upstream);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const seen: SeenRequest[] = [];
  const open = new Set<Deno.Conn>();
  const handle = async (client: Deno.Conn) => {
    open.add(client);
    let server: Deno.Conn | undefined;
    try {
      const first = new Uint8Array(65536);
      const read = await client.read(first);
      if (read === null) return;
      const head = first.subarray(0, read);
      const line = new TextDecoder().decode(head).split("\r\n")[0] ?? "";
      const [method = "", target = ""] = line.split(" ");
      const fault = decide(method, target);
      seen.push({ method, target, fault });
      if (fault === "503") {
        await drainBody(client, head);
        await client.write(new TextEncoder().encode(SLOW_DOWN));
        return;
      }
      if (fault === "drop") return;
      if (fault === "hang") {
        await client.readable.pipeTo(new WritableStream()).catch(() => {});
        return;
      }
      server = await Deno.connect({
        hostname: upstreamUrl.hostname,
        port: Number(upstreamUrl.port),
      });
      open.add(server);
      await server.write(head);
      const upload = client.readable.pipeTo(server.writable).catch(() => {});
      if (fault === "lose-response") {
        // Wait for the engine's answer (it has acted), then hang up on the client.
        const reader = server.readable.getReader();
        await reader.read();
        reader.releaseLock();
        return;
      }
      if (fault === "slow-body") {
        const reader = server.readable.getReader();
        const first = await reader.read();
        if (!first.done) await client.write(first.value);
        await new Promise((resolve) => setTimeout(resolve, 1000));
        reader.releaseLock();
      }
      await server.readable.pipeTo(client.writable).catch(() => {});
      await upload;
    } catch {
      // a closed socket ends the exchange
    } finally {
      for (const conn of [client, server]) {
        if (conn === undefined) continue;
        open.delete(conn);
        try {
          conn.close();
        } catch {
          // already closed
        }
      }
    }
  };
  const accepting = (async () => {
    for await (const conn of listener) handle(conn);
  })().catch(() => {});
  return {
    endpoint: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    seen,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const conn of open) {
        try {
          conn.close();
        } catch {
          // already closed
        }
      }
      await accepting;
    },
  };
}
