import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  ObjectExistsError,
  ObjectNotFoundError,
  PreconditionFailedError,
  RangeNotSatisfiableError,
} from "../../src/storage/object_store.ts";
import { probeStoreCapabilities } from "../../src/storage/store_capabilities.ts";
import { newTestStore, noS3Engine } from "../helpers/s3_test_store.ts";

const text = (value: string) => new TextEncoder().encode(value);
const read = async (body: ReadableStream<Uint8Array>) => await new Response(body).text();

Deno.test({
  name: "S3ObjectStore put, get, head, Range and conditional get against the real engine",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("basic");
    const etag = await store.put("linux-64/a.txt", text("hello world"), {
      contentType: "text/plain",
      metadata: { sha256: "abc" },
    });
    assert.equal(etag, `"${createHash("md5").update("hello world").digest("hex")}"`);

    const head = await store.head("linux-64/a.txt");
    assert.equal(head?.size, 11);
    assert.equal(head?.etag, etag);
    assert.equal(head?.metadata?.sha256, "abc");
    assert.equal(await store.head("linux-64/missing.txt"), undefined);

    const whole = await store.get("linux-64/a.txt");
    assert(whole.kind === "body");
    assert.equal(await read(whole.body), "hello world");
    assert.equal(whole.info.etag, etag);

    const part = await store.get("linux-64/a.txt", { range: { start: 6, end: 9 } });
    assert(part.kind === "body");
    assert.equal(await read(part.body), "worl");
    assert.deepEqual(part.range, { start: 6, end: 9 });
    assert.equal(part.info.size, 11);

    const tail = await store.get("linux-64/a.txt", { range: { start: 6 } });
    assert(tail.kind === "body");
    assert.equal(await read(tail.body), "world");

    assert.deepEqual(await store.get("linux-64/a.txt", { ifNoneMatch: etag }), {
      kind: "not-modified",
      etag,
    });
    await assert.rejects(
      store.get("linux-64/a.txt", { ifMatch: '"0123"' }),
      PreconditionFailedError,
    );
    await assert.rejects(
      store.get("linux-64/a.txt", { range: { start: 100 } }),
      RangeNotSatisfiableError,
    );
    await assert.rejects(store.get("linux-64/missing.txt"), ObjectNotFoundError);
    assert.equal(await store.getBytes("linux-64/missing.txt"), undefined);
  },
});

Deno.test({
  name: "S3ObjectStore put createOnly refuses an existing key and overwrite replaces it",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("create-only");
    await store.put("k", text("first"), { createOnly: true });
    await assert.rejects(store.put("k", text("second"), { createOnly: true }), ObjectExistsError);
    assert.equal(new TextDecoder().decode((await store.getBytes("k"))?.bytes), "first");
    await store.put("k", text("third"));
    assert.equal(new TextDecoder().decode((await store.getBytes("k"))?.bytes), "third");
  },
});

Deno.test({
  name: "S3ObjectStore put createOnly: of 10 concurrent writers exactly one wins",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("race");
    for (let round = 0; round < 3; round++) {
      const key = `race-${round}`;
      const results = await Promise.allSettled(
        Array.from(
          { length: 10 },
          (_, i) => store.put(key, text(`writer ${i}`), { createOnly: true }),
        ),
      );
      const winners = results.flatMap((result, i) => result.status === "fulfilled" ? [i] : []);
      assert.equal(winners.length, 1, `round ${round}: winners ${winners}`);
      for (const result of results) {
        if (result.status === "rejected") assert(result.reason instanceof ObjectExistsError);
      }
      const stored = new TextDecoder().decode((await store.getBytes(key))?.bytes);
      assert.equal(stored, `writer ${winners[0]}`);
    }
  },
});

Deno.test({
  name: "S3ObjectStore list pages through a prefix in key order, from startAfter",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("list");
    const keys = Array.from({ length: 25 }, (_, i) => `events/${String(i).padStart(4, "0")}`);
    await Promise.all(keys.map((key) => store.put(key, text(key))));
    await store.put("other/x", text("x"));
    const listed = [];
    for await (const info of store.list("events/", { pageSize: 7 })) listed.push(info);
    assert.deepEqual(listed.map((info) => info.key), keys);
    assert.equal(listed[0]?.size, 11);
    assert.match(listed[0]?.etag ?? "", /^"[0-9a-f]{32}"$/);
    const after = [];
    for await (const info of store.list("events/", { startAfter: "events/0019", pageSize: 2 })) {
      after.push(info.key);
    }
    assert.deepEqual(after, keys.slice(20));
  },
});

Deno.test({
  name: "S3ObjectStore delete removes an object and a missing one is not an error",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("delete");
    await store.put("a", text("a"));
    await store.delete("a");
    assert.equal(await store.head("a"), undefined);
    await store.delete("a");
    // A deleted key can be created again, create-only.
    await store.put("a", text("again"), { createOnly: true });
  },
});

Deno.test({
  name:
    "S3ObjectStore putFile streams a file as one create-only PUT, or multipart above the threshold",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("put-file");
    const dir = await Deno.makeTempDir();
    try {
      const path = join(dir, "big.bin");
      const size = 12 * 1024 ** 2 + 12345;
      const bytes = new Uint8Array(size);
      for (let i = 0; i < size; i += 65536) {
        crypto.getRandomValues(bytes.subarray(i, Math.min(size, i + 65536)));
      }
      await Deno.writeFile(path, bytes);
      const digest = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");

      // One streamed PUT: create-only holds, the ETag is the file's MD5.
      const whole = await store.putFile(path, "whole.bin", { createOnly: true });
      assert.equal(whole, `"${createHash("md5").update(bytes).digest("hex")}"`);
      await assert.rejects(
        store.putFile(path, "whole.bin", { createOnly: true }),
        ObjectExistsError,
      );
      assert.equal(
        digest((await store.getBytes("whole.bin"))?.bytes ?? new Uint8Array()),
        digest(bytes),
      );

      // Multipart: 5 MiB parts, two at a time.
      const etag = await store.putFile(path, "parts.bin", {
        multipartThreshold: 5 * 1024 ** 2,
        partSize: 5 * 1024 ** 2,
        concurrency: 2,
        metadata: { sha256: "x" },
      });
      assert.match(etag, /^"[0-9a-f]{32}-3"$/);
      const got = await store.getBytes("parts.bin");
      assert.equal(got?.info.size, size);
      assert.equal(got?.info.metadata?.sha256, "x");
      assert.equal(digest(got?.bytes ?? new Uint8Array()), digest(bytes));

      // An empty file is an empty object.
      await Deno.writeFile(join(dir, "empty.bin"), new Uint8Array());
      await store.putFile(join(dir, "empty.bin"), "empty.bin", { createOnly: true });
      assert.equal((await store.head("empty.bin"))?.size, 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "probeStoreCapabilities() finds create-only but no quoted If-Match on Ceph RGW 16.2",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("capabilities");
    assert.deepEqual(await probeStoreCapabilities(store, ".probe"), {
      createOnly: true,
      ifMatch: false,
    });
    // The scratch object is gone.
    for await (const info of store.list(".probe/")) assert.fail(`left behind: ${info.key}`);
    // Quoted If-Match is refused even with the current ETag; a wrong one too.
    const etag = await store.put("k", text("v"));
    await assert.rejects(store.put("k", text("w"), { ifMatch: etag }), PreconditionFailedError);
    await assert.rejects(store.put("k", text("w"), { ifMatch: '"0"' }), PreconditionFailedError);
  },
});

Deno.test({
  name:
    "S3ObjectStore keys with +, !, ~, spaces, = and non-ASCII round-trip through put, get, list",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("odd-keys");
    const keys = [
      "linux-64/torch-2.1.0+cu118-py311_0.conda",
      "noarch/a!b~c=d e-1.0-0.tar.bz2",
      "noarch/ünïcödé-1.0-0.conda",
    ];
    for (const key of keys) await store.put(key, text(key), { createOnly: true });
    for (const key of keys) {
      assert.equal(new TextDecoder().decode((await store.getBytes(key))?.bytes), key);
      assert.equal((await store.head(key))?.size, new TextEncoder().encode(key).byteLength);
    }
    const listed = [];
    for await (const info of store.list("")) listed.push(info.key);
    assert.deepEqual(listed, [...keys].sort());
  },
});
