import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { LeaseBusyError, LeaseLostError, ObjectLease } from "../../src/storage/object_lease.ts";
import { ObjectExistsError } from "../../src/storage/object_store.ts";
import { newTestStore, noS3Engine } from "../helpers/s3_test_store.ts";

const WORKER = fileURLToPath(new URL("../helpers/s3_coordination_worker.ts", import.meta.url));

Deno.test({
  name: "ObjectLease: of 8 concurrent contenders exactly one holds the lease",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("lease-race");
    const results = await Promise.allSettled(
      Array.from(
        { length: 8 },
        (_, i) => new ObjectLease(store, "lock", { owner: `c${i}`, ttlMs: 30_000 }).acquire(),
      ),
    );
    const held = results.filter((result) => result.status === "fulfilled");
    assert.equal(held.length, 1);
    for (const result of results) {
      if (result.status === "rejected") assert(result.reason instanceof LeaseBusyError);
    }
  },
});

Deno.test({
  name: "ObjectLease: release hands over, and a holder whose lease was taken over cannot renew",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("lease-handover");
    const first = await new ObjectLease(store, "lock", { owner: "a", ttlMs: 30_000 }).acquire();
    assert(first.isValid());
    await first.renew();
    await assert.rejects(new ObjectLease(store, "lock", { owner: "b" }).acquire(), LeaseBusyError);
    await first.release();
    assert.equal(first.isValid(), false);
    const second = await new ObjectLease(store, "lock", { owner: "b", ttlMs: 300 }).acquire();
    assert.equal(second.generation, first.generation + 1);

    // b stops renewing; c takes over after b's ttl; b's renewal then fails.
    const third = await new ObjectLease(store, "lock", { owner: "c" }).acquire({
      waitMs: 30_000,
      pollMs: 50,
    });
    assert.equal(second.isValid(), false);
    await assert.rejects(second.renew(), LeaseLostError);
    assert.equal(third.generation, second.generation + 1);
    // Generations: a, a renewed, a released, b, c.
    assert.equal(await new ObjectLease(store, "lock").prune(2), 3);
    await third.renew(); // pruning kept what the holder needs
  },
});

Deno.test({
  name: "ObjectLease: a kill -9'd holder's lease is taken over after it expires, not before",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("lease-kill");
    const ttlMs = 1500;
    const holder = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        WORKER,
        "hold-lease",
        store.location.prefix,
        "lock",
        String(ttlMs),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const lines = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let seen = "";
    while (!/renewed \d+\n/.test(seen)) {
      const { value, done } = await lines.read();
      assert(!done, `holder ended early: ${seen}`);
      seen += value;
    }
    // While the holder lives and renews, nobody else gets the lease.
    await assert.rejects(
      new ObjectLease(store, "lock").acquire({ waitMs: ttlMs * 2, pollMs: 50 }),
      LeaseBusyError,
    );
    holder.kill("SIGKILL");
    const killedAt = performance.now();
    await holder.status;
    await lines.cancel();
    const taken = await new ObjectLease(store, "lock", { owner: "successor" }).acquire({
      waitMs: 60_000,
      pollMs: 50,
    });
    const waited = performance.now() - killedAt;
    // The holder renewed every ttl/4: its last generation was at most ttl/4
    // old at the kill, so a successor must wait at least 3/4 of the ttl.
    assert(waited >= ttlMs * 0.75 - 50, `taken over after ${waited} ms`);
    assert(taken.isValid());
  },
});

Deno.test({
  name: "ObjectLease: 3 processes incrementing one counter under the lease lose no increment",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("lease-counter");
    const outputs = await Promise.all([1, 2, 3].map(() =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-all",
          WORKER,
          "increment",
          store.location.prefix,
          "lock",
          "counter",
          "8",
        ],
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(120_000),
      }).output()
    ));
    for (const output of outputs) {
      assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    }
    const counter = await store.getBytes("counter");
    assert.equal(new TextDecoder().decode(counter?.bytes), "24");
  },
});

Deno.test({
  name: "ObjectLease keepRenewed() holds the lease past its ttl and aborts when it is taken over",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("lease-keep");
    const ttlMs = 1500;
    const held = await new ObjectLease(store, "lock", { owner: "a", ttlMs }).acquire();
    const signal = held.keepRenewed();
    await new Promise((resolve) => setTimeout(resolve, ttlMs * 3));
    assert.equal(signal.aborted, false);
    assert(held.isValid());
    assert(held.generation >= 3, `only ${held.generation - 1} renewals in 3 ttl`);
    await assert.rejects(new ObjectLease(store, "lock", { ttlMs }).acquire(), LeaseBusyError);

    // Someone creates the next generation (as after a partition): the renewal fails.
    // (A renewal may take the number first: then try the one after it.)
    for (let taken = false; !taken;) {
      const next = String(held.generation + 1).padStart(12, "0");
      taken = await store.put(`lock/${next}`, new TextEncoder().encode("{}"), { createOnly: true })
        .then(() => true, (error) => {
          if (error instanceof ObjectExistsError) return false;
          throw error;
        });
    }
    const reason = await new Promise((resolve) =>
      signal.addEventListener("abort", () => resolve(signal.reason), { once: true })
    );
    assert(reason instanceof LeaseLostError);
    await held.release(); // stops the timers; the generation is taken, nothing written
  },
});
