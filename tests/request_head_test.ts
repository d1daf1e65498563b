/**
 * The request head parser and the connection caps, as pure functions: what
 * framing a head gets, and what it is refused with.
 */

import assert from "node:assert/strict";
import { ConnectionLimits, defaultMaxConnections } from "../src/http/connection_limits.ts";
import { parseRequestHead, RequestHeadError } from "../src/http/request_head.ts";

Deno.test("parseRequestHead() reads the method, target, fields, framing and keep-alive", () => {
  const head = parseRequestHead(
    "PUT /linux-64/a-1-0.conda HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nExpect: 100-continue\r\nX-Name:  spaced value \t",
  );
  assert.equal(head.method, "PUT");
  assert.equal(head.target, "/linux-64/a-1-0.conda");
  assert.deepEqual(head.framing, { kind: "length", length: 12 });
  assert.equal(head.expectsContinue, true);
  assert.equal(head.keepAlive, true);
  assert.deepEqual(head.fields.at(-1), ["x-name", "spaced value"]);
  assert.deepEqual(
    parseRequestHead("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked").framing,
    { kind: "chunked" },
  );
  assert.equal(parseRequestHead("GET / HTTP/1.1\r\nHost: x\r\nConnection: close").keepAlive, false);
  assert.equal(parseRequestHead("GET / HTTP/1.0").keepAlive, false);
  assert.equal(parseRequestHead("GET / HTTP/1.0\r\nConnection: keep-alive").keepAlive, true);
});

Deno.test("parseRequestHead() refuses every ambiguous or malformed head with its status", () => {
  const cases: [string, number][] = [
    ["POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked", 400],
    ["POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1", 400],
    ["POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10", 400],
    ["POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip", 501],
    ["POST / HTTP/1.0\r\nTransfer-Encoding: chunked", 400],
    ["GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b", 400],
    ["GET / HTTP/1.1\r\nHost: x\r\nX\t: a", 400],
    ["GET / HTTP/1.1\r\nHost: x\r\nX: a\x7fb", 400],
    ["GET / HTTP/1.1\nX: a", 400],
    ["GET  / HTTP/1.1", 400],
    ["GET foo HTTP/1.1", 400],
    ["GET / HTTP/2.0", 505],
    ["GET / HTTP/1.1\r\nHost: x\r\nExpect: something", 417],
    [`GET /${"a".repeat(9000)} HTTP/1.1`, 414],
    [`GET / HTTP/1.1${"\r\nX: 1".repeat(101)}`, 431],
    ["GET / HTTP/1.1", 400], // no Host
    ["get / HTTP/1.1\r\nHost: x", 405],
    ["head / HTTP/1.1\r\nHost: x", 405],
    ["TRACE / HTTP/1.1\r\nHost: x", 405],
    ["TRACK / HTTP/1.1\r\nHost: x", 405],
    ["CONNECT x:443 HTTP/1.1\r\nHost: x:443", 405],
  ];
  for (const [head, status] of cases) {
    assert.throws(
      () => parseRequestHead(head),
      (error: unknown) => error instanceof RequestHeadError && error.status === status,
      JSON.stringify(head.slice(0, 80)),
    );
  }
});

Deno.test("defaultMaxConnections() keeps a quarter (at least 64) of the free descriptors, within 8..2048", () => {
  assert.equal(defaultMaxConnections(90), 26);
  assert.equal(defaultMaxConnections(1000), 750);
  assert.equal(defaultMaxConnections(20), 8);
  assert.equal(defaultMaxConnections(100_000), 2048);
  assert.equal(defaultMaxConnections(undefined), 750);
});

Deno.test("ConnectionLimits admits within the total and per-address caps and releases once", () => {
  const limits = new ConnectionLimits({ maxConnections: 3, maxPerClient: 2 });
  const a1 = limits.admit("a");
  const a2 = limits.admit("a");
  assert.equal(limits.admit("a"), "client");
  const b1 = limits.admit("b");
  assert.equal(limits.admit("c"), "total");
  assert.equal(typeof a1, "function");
  if (typeof a1 === "function") {
    a1();
    a1();
  }
  assert.equal(limits.open, 2);
  assert.equal(typeof limits.admit("c"), "function");
  assert.equal(typeof a2, "function");
  assert.equal(typeof b1, "function");
});
