/**
 * writeResponse() as the connection layer calls it, with the bytes it
 * writes collected: a small answer in one write, bodies that do not match
 * their `Content-Length` cut to it with the connection closed, and a large
 * file body sent through two reused buffers.
 */

import { concatBytes } from "../src/concat_bytes.ts";
import assert from "node:assert/strict";
import {
  bytesResponse,
  writeResponse,
  type WriteResponseOptions,
} from "../src/http/response_writer.ts";

interface Written {
  writes: Uint8Array[];
  sends: Uint8Array[];
  options: WriteResponseOptions;
}

/** Options whose writes copy what they are given, as a socket would send it. */
function collecting(overrides: Partial<WriteResponseOptions> = {}): Written {
  const writes: Uint8Array[] = [];
  const sends: Uint8Array[] = [];
  const join = (data: Uint8Array | readonly Uint8Array[]) =>
    concatBytes(data instanceof Uint8Array ? [data] : data);
  return {
    writes,
    sends,
    options: {
      head: false,
      close: false,
      http10: false,
      write: (data) => {
        writes.push(join(data));
        return Promise.resolve();
      },
      send: async (bytes) => {
        // The socket takes its time, and reads the bytes only then: a buffer
        // filled again before its send resolved would show here.
        await new Promise((resolve) => setTimeout(resolve, 1));
        sends.push(bytes.slice());
      },
      ...overrides,
    },
  };
}

function split(bytes: Uint8Array): { head: string; body: Uint8Array } {
  const text = new TextDecoder("latin1").decode(bytes);
  const end = text.indexOf("\r\n\r\n") + 4;
  return { head: text.slice(0, end), body: bytes.subarray(end) };
}

function fileStream(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream({
    type: "bytes",
    pull(controller) {
      const request = controller.byobRequest!;
      const view = request.view as Uint8Array;
      const count = Math.min(view.byteLength, bytes.length - offset, 100_000);
      view.set(bytes.subarray(offset, offset + count));
      offset += count;
      request.respond(count);
      if (offset === bytes.length) controller.close();
    },
  });
}

Deno.test("writeResponse() sends a small answer's head and body in one write", async () => {
  const out = collecting();
  const body = new TextEncoder().encode("hello");
  const reusable = await writeResponse(
    new Response(body, { headers: { "content-length": "5", etag: '"x"' } }),
    out.options,
  );
  assert.equal(reusable, true);
  assert.equal(out.writes.length, 1);
  const { head, body: sent } = split(out.writes[0]!);
  assert.match(head, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(head, /\r\ncontent-length: 5\r\n/);
  assert.deepEqual(sent, body);
});

Deno.test("writeResponse() sends a bytesResponse's bytes with its head in one write, its stream untouched", async () => {
  const out = collecting();
  const body = new TextEncoder().encode("channel file");
  const response = bytesResponse(body, {
    status: 206,
    headers: { "content-length": String(body.length), etag: '"y"' },
  });
  assert.equal(await writeResponse(response, out.options), true);
  assert.equal(out.writes.length, 1);
  const { head, body: sent } = split(out.writes[0]!);
  assert.match(head, /^HTTP\/1\.1 206 Partial Content\r\n/);
  assert.match(head, /\r\ncontent-length: 12\r\n/);
  assert.deepEqual(sent, body);
  // The body was never turned into a stream and read: it is still there for anyone else.
  assert.equal(response.bodyUsed, false);
  assert.equal(await response.text(), "channel file");

  // A Content-Length that does not match the bytes: the stream path cuts and closes, as for any response.
  const mismatch = collecting();
  const longer = bytesResponse(new TextEncoder().encode("0123456789"), {
    headers: { "content-length": "4" },
  });
  assert.equal(await writeResponse(longer, mismatch.options), false);
  assert.equal(new TextDecoder().decode(split(mismatch.writes[0]!).body), "0123");
});

Deno.test("writeResponse() cuts a body longer than its Content-Length to it, and one shorter ends the connection", async () => {
  const longer = collecting();
  assert.equal(
    await writeResponse(
      new Response("0123456789", { headers: { "content-length": "4" } }),
      longer.options,
    ),
    false,
  );
  assert.equal(new TextDecoder().decode(split(longer.writes[0]!).body), "0123");
  const shorter = collecting();
  assert.equal(
    await writeResponse(
      new Response("012", { headers: { "content-length": "4" } }),
      shorter.options,
    ),
    false,
  );
  assert.equal(new TextDecoder().decode(split(shorter.writes[0]!).body), "012");
});

Deno.test("writeResponse() sends a 3 MiB file body in chunks of at most 256 KiB, each buffer refilled only once sent", async () => {
  const size = 3 * 1024 * 1024 + 77;
  const bytes = new Uint8Array(size);
  for (let index = 0; index < size; index++) bytes[index] = (index * 2654435761) >>> 24;
  const out = collecting();
  const reusable = await writeResponse(
    new Response(fileStream(bytes), { headers: { "content-length": String(size) } }),
    out.options,
  );
  assert.equal(reusable, true);
  assert.equal(out.writes.length, 0, "the head goes out with the first chunk");
  assert.ok(out.sends.length >= 12 && out.sends.every((part) => part.length <= 256 * 1024));
  const all = new Uint8Array(out.sends.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of out.sends) {
    all.set(part, offset);
    offset += part.length;
  }
  const { head, body } = split(all);
  assert.match(head, new RegExp(`\\r\\ncontent-length: ${size}\\r\\n`));
  assert.ok(body.length === size && body.every((byte, i) => byte === bytes[i]));
});

Deno.test("writeResponse() answers HEAD with the Content-Length of GET and no body", async () => {
  const out = collecting({ head: true });
  const size = 3 * 1024 * 1024;
  assert.equal(
    await writeResponse(
      new Response(fileStream(new Uint8Array(size)), {
        headers: { "content-length": String(size) },
      }),
      out.options,
    ),
    true,
  );
  assert.equal(out.sends.length, 0);
  assert.equal(out.writes.length, 1);
  const { head, body } = split(out.writes[0]!);
  assert.match(head, new RegExp(`\\r\\ncontent-length: ${size}\\r\\n`));
  assert.equal(body.length, 0);
});
