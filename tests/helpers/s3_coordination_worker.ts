/**
 * A separate process that uses the coordination primitives on the test
 * engine, so the tests can race several processes and kill one with
 * SIGKILL. Run with the test engine's variables in the environment:
 *
 *   append PREFIX WRITER COUNT          append COUNT events {writer, i}; print "seq N" after
 *                                       each (acknowledged), then "done"
 *   hold-lease PREFIX NAME TTL_MS       take the lease, print "held GEN", renew every TTL/4
 *   increment PREFIX NAME KEY TIMES     TIMES x (take lease, read KEY, write KEY+1, release)
 *
 * @module
 */

import { ObjectEventLog } from "../../src/storage/object_event_log.ts";
import { ObjectLease } from "../../src/storage/object_lease.ts";
import { openTestStore } from "./s3_test_store.ts";

const [mode, prefix = "", ...rest] = Deno.args;
const store = await openTestStore(prefix);

if (mode === "append") {
  const [writer = "", count = "0"] = rest;
  const log = new ObjectEventLog<{ writer: string; i: number }, unknown>(store, "log");
  for (let i = 0; i < Number(count); i++) {
    console.log(`seq ${(await log.append({ writer, i })).seq}`);
  }
  console.log("done");
} else if (mode === "hold-lease") {
  const [name = "", ttl = "2000"] = rest;
  const lease = new ObjectLease(store, name, { ttlMs: Number(ttl), owner: `pid ${Deno.pid}` });
  const held = await lease.acquire({ waitMs: 60_000, pollMs: 50 });
  console.log(`held ${held.generation}`);
  while (true) {
    await new Promise((resolve) => setTimeout(resolve, Number(ttl) / 4));
    await held.renew();
    console.log(`renewed ${held.generation}`);
  }
} else if (mode === "increment") {
  const [name = "", key = "", times = "0"] = rest;
  const lease = new ObjectLease(store, name, { ttlMs: 10_000, owner: `pid ${Deno.pid}` });
  for (let i = 0; i < Number(times); i++) {
    const held = await lease.acquire({ waitMs: 120_000, pollMs: 20 });
    const got = await store.getBytes(key);
    const value = got === undefined ? 0 : Number(new TextDecoder().decode(got.bytes));
    if (!held.isValid()) throw new Error("Cannot increment: the lease ran out");
    await store.put(key, new TextEncoder().encode(String(value + 1)));
    await held.release();
  }
  console.log("done");
} else {
  console.error(`Cannot run: unknown mode ${mode}`);
  Deno.exit(2);
}
