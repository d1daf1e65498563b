/**
 * Sends one HTTP request whose body is a byte range of a local file,
 * streamed with a `Content-Length`. Deno's `fetch` sends a stream body
 * chunked, which S3 and Ceph RGW refuse (411), and a buffer body is copied
 * on its way in (a 512 MiB upload in 16 MiB buffers peaked at 266 MiB RSS);
 * `node:http` streams the file in 1 MiB reads (122 MiB RSS for 512 MiB in one
 * PUT). The answer comes back as a `Response` with the (small) body read.
 *
 * @module
 */

import { createReadStream } from "node:fs";
import http from "node:http";
import https from "node:https";

/** What to send. */
export interface FileBodyRequest {
  /** Full URL. */
  url: string;
  /** `PUT` or `POST`. */
  method: string;
  /** Request headers (signed); `content-length` is set from `length`. */
  headers: Headers;
  /** Local file to read the body from. */
  path: string;
  /** First byte of the body in the file. */
  offset: number;
  /** Body length in bytes. */
  length: number;
  /** Cuts the request off when the connection is idle this long, in ms. */
  idleTimeoutMs: number;
  /** Cancels the request. */
  signal?: AbortSignal;
}

const READ_SIZE = 1024 * 1024;

/** Sends the request; rejects on a network failure or abort, resolves with any status. */
export function sendFileBody(request: FileBodyRequest): Promise<Response> {
  const url = new URL(request.url);
  const headers: Record<string, string> = {};
  request.headers.forEach((value, name) => {
    headers[name] = value;
  });
  headers["content-length"] = String(request.length);
  const transport = url.protocol === "https:" ? https : http;
  return new Promise<Response>((resolve, reject) => {
    const outgoing = transport.request({
      protocol: url.protocol,
      hostname: url.hostname,
      port: url.port,
      path: url.pathname + url.search,
      method: request.method,
      headers,
      agent: false,
      timeout: request.idleTimeoutMs,
      ...(request.signal ? { signal: request.signal } : {}),
    }, (incoming) => {
      const chunks: Uint8Array<ArrayBuffer>[] = [];
      incoming.on("data", (chunk: Uint8Array<ArrayBuffer>) => chunks.push(chunk));
      incoming.on("error", reject);
      incoming.on("end", () => {
        const answer = new Headers();
        for (const [name, value] of Object.entries(incoming.headers)) {
          if (value !== undefined) {
            answer.set(name, Array.isArray(value) ? value.join(", ") : value);
          }
        }
        const status = incoming.statusCode ?? 0;
        const body = status === 204 || status === 304 ? null : new Blob(chunks);
        resolve(new Response(body, { status, headers: answer }));
      });
    });
    outgoing.on("error", reject);
    outgoing.on("timeout", () => {
      outgoing.destroy(new Error(`no progress in ${request.idleTimeoutMs} ms`));
    });
    if (request.length === 0) {
      outgoing.end();
      return;
    }
    const file = createReadStream(request.path, {
      start: request.offset,
      end: request.offset + request.length - 1,
      highWaterMark: READ_SIZE,
    });
    file.on("error", (error) => {
      outgoing.destroy(error);
      reject(error);
    });
    file.pipe(outgoing);
  });
}
