import assert from "node:assert/strict";
import { join } from "node:path";
import { AwsClient } from "aws4fetch";
import { ObjectExistsError, ObjectStoreError } from "../../src/storage/object_store.ts";
import { S3ObjectStore, type S3ObjectStoreOptions } from "../../src/storage/s3_object_store.ts";
import { type Fault, startFaultProxy } from "../helpers/fault_proxy.ts";
import { newTestStore, noS3Engine, s3TestSettings, TEST_BUCKET } from "../helpers/s3_test_store.ts";

const text = (value: string) => new TextEncoder().encode(value);

/** The engine directly, and a store on the same prefix through a fault proxy. */
async function storesWithFaults(
  name: string,
  decide: (method: string, target: string) => Fault,
  options: S3ObjectStoreOptions = {},
) {
  const direct = await newTestStore(name);
  const proxy = startFaultProxy(s3TestSettings?.endpoint ?? "", decide);
  const httpClient = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  const faulty = new S3ObjectStore(
    { ...s3TestSettings!, endpoint: proxy.endpoint },
    direct.location,
    { backoffMs: 5, httpClient, ...options },
  );
  return {
    direct,
    faulty,
    proxy,
    async [Symbol.asyncDispose]() {
      await proxy[Symbol.asyncDispose]();
      httpClient.close();
    },
  };
}

/** Answers the n-th request that `matches` with `faults[n]`, later ones pass. */
function sequence(matches: (method: string, target: string) => boolean, faults: Fault[]) {
  let count = 0;
  return (method: string, target: string): Fault =>
    matches(method, target) ? faults[count++] ?? "pass" : "pass";
}

Deno.test({
  name: "S3ObjectStore retries a 503 and a dropped connection, then the put lands once",
  ignore: noS3Engine,
  async fn() {
    await using stores = await storesWithFaults(
      "faults-retry",
      sequence((method) => method === "PUT", ["503", "drop"]),
    );
    await stores.faulty.put("k", text("value"));
    assert.deepEqual(stores.proxy.seen.map((request) => request.fault), ["503", "drop", "pass"]);
    assert.equal(new TextDecoder().decode((await stores.direct.getBytes("k"))?.bytes), "value");
  },
});

Deno.test({
  name: "S3ObjectStore gives up after its attempts with the store's status and code",
  ignore: noS3Engine,
  async fn() {
    await using stores = await storesWithFaults("faults-give-up", () => "503", { attempts: 3 });
    await assert.rejects(stores.faulty.put("k", text("value")), (error: Error) => {
      assert(error instanceof ObjectStoreError);
      assert.equal(error.status, 503);
      assert.equal(error.code, "SlowDown");
      assert.match(error.message, /^Cannot PUT k: 503 SlowDown$/);
      return true;
    });
    assert.equal(stores.proxy.seen.length, 3);
    assert.equal(await stores.direct.head("k"), undefined);
  },
});

Deno.test({
  name: "S3ObjectStore create-only put whose answer was lost counts its own object, not another's",
  ignore: noS3Engine,
  async fn() {
    await using stores = await storesWithFaults(
      "faults-lost-answer",
      sequence((method) => method === "PUT", ["lose-response", "pass", "lose-response", "pass"]),
    );
    // The first attempt created the object; the retry's 412 is our own object.
    await stores.faulty.put("mine", text("mine"), { createOnly: true });
    assert.equal(new TextDecoder().decode((await stores.direct.getBytes("mine"))?.bytes), "mine");

    // Someone else's object: the lost first answer was a 412, the retry's too.
    await stores.direct.put("theirs", text("theirs"));
    await assert.rejects(
      stores.faulty.put("theirs", text("other bytes"), { createOnly: true }),
      ObjectExistsError,
    );
    assert.deepEqual(stores.proxy.seen.filter((r) => r.method === "PUT").map((r) => r.fault), [
      "lose-response",
      "pass",
      "lose-response",
      "pass",
    ]);
    assert.equal(
      new TextDecoder().decode((await stores.direct.getBytes("theirs"))?.bytes),
      "theirs",
    );
  },
});

Deno.test({
  name:
    "S3ObjectStore putFile resends the file after a 503 and counts its own object after a lost answer",
  ignore: noS3Engine,
  async fn() {
    await using stores = await storesWithFaults(
      "faults-file",
      sequence((method) => method === "PUT", ["503", "pass", "lose-response", "pass"]),
    );
    const dir = await Deno.makeTempDir();
    try {
      const path = join(dir, "pkg.bin");
      const bytes = new Uint8Array(3 * 1024 ** 2).map((_, i) => i % 251);
      await Deno.writeFile(path, bytes);
      await stores.faulty.putFile(path, "a.bin", { createOnly: true });
      await stores.faulty.putFile(path, "b.bin", { createOnly: true });
      for (const key of ["a.bin", "b.bin"]) {
        assert.deepEqual((await stores.direct.getBytes(key))?.bytes, bytes);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "S3ObjectStore aborts a multipart upload whose part keeps failing, leaving no object",
  ignore: noS3Engine,
  async fn() {
    await using stores = await storesWithFaults(
      "faults-multipart",
      (method, target) => method === "PUT" && target.includes("partNumber=2") ? "503" : "pass",
      { attempts: 2 },
    );
    const dir = await Deno.makeTempDir();
    try {
      const path = join(dir, "big.bin");
      await Deno.writeFile(path, new Uint8Array(11 * 1024 ** 2).fill(7));
      await assert.rejects(
        stores.faulty.putFile(path, "big.bin", {
          multipartThreshold: 5 * 1024 ** 2,
          partSize: 5 * 1024 ** 2,
          concurrency: 1,
        }),
        (error: Error) => error instanceof ObjectStoreError && error.status === 503,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    const abort = stores.proxy.seen.find((r) =>
      r.method === "DELETE" && r.target.includes("uploadId=")
    );
    assert(abort, "no AbortMultipartUpload was sent");
    assert.equal(await stores.direct.head("big.bin"), undefined);
    // The engine has no unfinished upload left under the prefix.
    const signer = new AwsClient({ ...s3TestSettings!, service: "s3", retries: 0 });
    const prefix = encodeURIComponent(`${stores.direct.location.prefix}/`);
    const response = await signer.fetch(
      `${s3TestSettings!.endpoint}/${TEST_BUCKET}?uploads&prefix=${prefix}`,
    );
    const listing = await response.text();
    assert.equal(response.status, 200);
    assert.doesNotMatch(listing, /<Upload>/);
  },
});

Deno.test({
  name: "S3ObjectStore times out a store that never answers, but not a slow response body",
  ignore: noS3Engine,
  async fn() {
    await using stores = await storesWithFaults(
      "faults-timeout",
      (method) => method === "HEAD" ? "hang" : method === "GET" ? "slow-body" : "pass",
      { attempts: 2, requestTimeoutMs: 300 },
    );
    await assert.rejects(stores.faulty.head("k"), (error: Error) => {
      assert(error instanceof ObjectStoreError);
      assert.equal(error.status, 0);
      assert.match(error.message, /^Cannot HEAD k: .*no answer in time/);
      return true;
    });
    assert.equal(stores.proxy.seen.filter((r) => r.method === "HEAD").length, 2);

    const bytes = new Uint8Array(4 * 1024 ** 2).map((_, i) => i % 253);
    await stores.direct.put("k", bytes);
    const got = await stores.faulty.getBytes("k"); // body held back 1 s > 300 ms
    assert.deepEqual(got?.bytes, bytes);
  },
});
