/**
 * Clients that misbehave: a body that stalls (`--body_timeout`), more uploads
 * at once than `--max_concurrent_uploads`, and token guessing (10 failures
 * answered at once per address, then held back and answered 10 a minute,
 * while the right token still gets through).
 */

import assert from "node:assert/strict";
import { AuthThrottle } from "../src/auth/auth_throttle.ts";
import { HttpError } from "../src/http/http_error.ts";
import { buildPackage, packageFilename, type PackageSpec } from "./helpers/conda_package.ts";
import { startTestServer, type TestServer } from "./helpers/test_server.ts";
import {
  channelPackages,
  rattlerPrefixForm,
  spoolEntries,
  statusBeforeBody,
} from "./helpers/upload_clients.ts";

/** The value of one Prometheus series, or undefined when absent. */
async function metric(server: TestServer, series: string): Promise<number | undefined> {
  const text = await (await server.fetch("/metrics")).text();
  const line = text.split("\n").find((line) => line.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function put(
  server: TestServer,
  spec: PackageSpec,
  body: BodyInit,
  token = server.token,
): Promise<Response> {
  return await server.fetch(`/${spec.subdir ?? "linux-64"}/${packageFilename(spec)}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${token}` },
    body,
  });
}

async function expectStatus(response: Response, status: number): Promise<string> {
  const body = await response.text();
  assert.equal(response.status, status, body);
  return body;
}

/** A body that sends `bytes` in two halves, the second only once `release` settles. */
function heldBody(bytes: Uint8Array, release: Promise<void>): ReadableStream<Uint8Array> {
  const half = Math.floor(bytes.length / 2);
  let step = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (step++ === 0) return controller.enqueue(bytes.slice(0, half));
      await release;
      controller.enqueue(bytes.slice(half));
      controller.close();
    },
  }, { highWaterMark: 0 });
}

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  for (let attempt = 0; attempt < 250; attempt++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`Cannot see ${what} within 5 s`);
}

Deno.test("a body that stalls for --body_timeout is cut off with 408, its spool file removed and its upload slot freed", async () => {
  await using server = await startTestServer({
    flags: { bodyTimeout: "1", maxConcurrentUploads: "1" },
  });
  const spec: PackageSpec = { name: "stalled", version: "1.0" };
  const bytes = await buildPackage(spec);

  // Artifactory PUT: headers and part of the body, then nothing
  let started = performance.now();
  const putStatus = await statusBeforeBody(server, `/linux-64/${packageFilename(spec)}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${server.token}` },
    first: bytes.slice(0, 1000),
    declaredLength: bytes.length,
  });
  let waitedMs = performance.now() - started;
  assert.equal(putStatus, 408);
  assert.ok(waitedMs >= 900 && waitedMs < 3000, `cut off after ${Math.round(waitedMs)} ms`);

  // prefix.dev multipart: stalls inside the file part
  const form = rattlerPrefixForm(packageFilename(spec), bytes);
  started = performance.now();
  const formStatus = await statusBeforeBody(server, "/api/v1/upload/channel", {
    method: "POST",
    headers: { authorization: `Bearer ${server.token}`, "content-type": form.contentType },
    first: form.body.slice(0, 1000),
    declaredLength: form.body.length,
  });
  waitedMs = performance.now() - started;
  assert.equal(formStatus, 408, server.logs.join("\n"));
  assert.ok(waitedMs >= 900 && waitedMs < 3000, `cut off after ${Math.round(waitedMs)} ms`);

  assert.deepEqual(await spoolEntries(server.channelRoot), []);
  assert.equal(await metric(server, "auh_uploads_in_flight"), 0);
  assert.equal(await metric(server, 'auh_uploads_total{outcome="408"}'), 2);
  assert.ok(
    server.logs.some((line) =>
      /WARN request refused status=408 .*nothing arrived for 1 s/.test(line)
    ),
    server.logs.join("\n"),
  );
  // the only slot is free again
  await expectStatus(await put(server, spec, bytes as Uint8Array<ArrayBuffer>), 201);
  assert.deepEqual(await channelPackages(server.channelRoot), [
    `linux-64/${packageFilename(spec)}`,
  ]);
});

Deno.test("--max_concurrent_uploads 2: a third upload at once gets 503 with Retry-After without being read, and is taken once a slot is free", async () => {
  await using server = await startTestServer({ flags: { maxConcurrentUploads: "2" } });
  const specs: PackageSpec[] = [1, 2, 3].map((n) => ({ name: `concurrent-${n}`, version: "1.0" }));
  const [one, two, three] = await Promise.all(specs.map(buildPackage));
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  const running = [
    put(server, specs[0]!, heldBody(one!, released)),
    put(server, specs[1]!, heldBody(two!, released)),
  ];
  try {
    const halves = Math.floor(one!.length / 2) + Math.floor(two!.length / 2);
    await until(
      "two uploads in flight, each with its first half received",
      async () =>
        await metric(server, "auh_uploads_in_flight") === 2 &&
        await metric(server, "auh_received_bytes_total") === halves &&
        (await spoolEntries(server.channelRoot)).length === 2,
    );
    const third = await put(server, specs[2]!, three! as Uint8Array<ArrayBuffer>);
    const body = await expectStatus(third, 503);
    assert.match(body, /Cannot upload: 2 uploads are already in progress/);
    const retryAfter = Number(third.headers.get("retry-after"));
    assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After: ${retryAfter}`);
    assert.equal(await metric(server, "auh_received_bytes_total"), halves);
    assert.equal((await spoolEntries(server.channelRoot)).length, 2);
  } finally {
    release();
  }
  for (const response of await Promise.all(running)) await expectStatus(response, 201);
  assert.equal(await metric(server, "auh_uploads_in_flight"), 0);
  await expectStatus(await put(server, specs[2]!, three! as Uint8Array<ArrayBuffer>), 201);
  assert.equal(await metric(server, 'auh_uploads_total{outcome="503"}'), 1);
  assert.equal(await metric(server, 'auh_uploads_total{outcome="stored"}'), 3);
  assert.deepEqual(
    await channelPackages(server.channelRoot),
    specs.map((spec) => `linux-64/${packageFilename(spec)}`),
  );
});

/** Whether `promise` settles within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([promise.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("11 wrong tokens from one address: 10 are answered 401 at once, the 11th is held back until the bucket refills, and the right token gets through meanwhile", async () => {
  await using server = await startTestServer();
  const spec: PackageSpec = { name: "guarded", version: "1.0" };
  const bytes = await buildPackage(spec) as Uint8Array<ArrayBuffer>;
  for (let attempt = 1; attempt <= 10; attempt++) {
    await expectStatus(await put(server, spec, bytes, `guess-${attempt}`), 401);
  }
  const heldStarted = performance.now();
  const eleventh = put(server, spec, bytes, "guess-11");
  assert.equal(await settlesWithin(eleventh, 1500), false, "the 11th failure was answered at once");

  // the right token is verified at once and does not wait behind the held failure
  const started = performance.now();
  await expectStatus(await put(server, spec, bytes), 201);
  await expectStatus(
    await server.fetch(`/linux-64/${packageFilename(spec)}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${server.token}` },
    }),
    200,
  );
  assert.ok(performance.now() - started < 5000, "the right token waited");

  // the held failure is answered once the bucket has refilled by one (6 s at 10 a minute)
  await expectStatus(await eleventh, 401);
  const heldMs = performance.now() - heldStarted;
  assert.ok(heldMs >= 4000 && heldMs < 30_000, `held ${Math.round(heldMs)} ms`);
  assert.deepEqual(await channelPackages(server.channelRoot), []);
  assert.equal(await metric(server, "auh_auth_failures_total"), 11);
  assert.equal(await metric(server, 'auh_uploads_total{outcome="401"}'), 11);
  // reads are not throttled
  await expectStatus(await server.fetch("/health"), 200);
});

Deno.test("behind a local reverse proxy the throttle counts X-Forwarded-For addresses, not the proxy's", async () => {
  await using server = await startTestServer();
  const attempt = (forwardedFor: string, token: string, signal?: AbortSignal) =>
    server.fetch("/", {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "x-forwarded-for": forwardedFor },
      body: new FormData(),
      ...(signal ? { signal } : {}),
    });
  for (let failure = 1; failure <= 10; failure++) {
    await expectStatus(await attempt("10.9.8.7, 203.0.113.7", `guess-${failure}`), 401);
  }
  const abort = new AbortController();
  const held = attempt("203.0.113.7", "guess-11", abort.signal);
  assert.equal(await settlesWithin(held, 1000), false, "203.0.113.7 was not held back");
  // another client behind the same proxy is not held back
  await expectStatus(await attempt("203.0.113.8", "guess-1"), 401);
  assert.ok(server.logs.some((line) => line.includes("client=203.0.113.8")));
  abort.abort();
  await held.catch(() => {});
});

Deno.test("AuthThrottle answers a burst of failures at once, then holds the rest and answers them one at a time, lets successes pass, and refuses beyond maxHeld with 429", async () => {
  const throttle = new AuthThrottle({ burst: 2, perMinute: 600, maxHeld: 4 });
  try {
    const address = "192.0.2.1";
    const order: number[] = [];
    const failures = [0, 1, 2, 3].map((i) => {
      const attempt = throttle.admit(address);
      return attempt.failed().then(() => order.push(i));
    });
    await Promise.resolve();
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.deepEqual(order, [0, 1], "the burst is answered at once, the rest held");
    assert.equal(throttle.held, 2);
    // two held and two being verified make four unanswered: a fifth is refused before verification
    const verifying = [throttle.admit(address), throttle.admit(address)];
    assert.throws(() => throttle.admit(address), (error: unknown) => {
      assert.ok(error instanceof HttpError);
      assert.equal(error.status, 429);
      assert.ok(Number(error.headers["retry-after"]) >= 1);
      return true;
    });
    for (const attempt of verifying) attempt.succeeded();
    throttle.admit(address).succeeded();
    // another address is not affected
    const other = throttle.admit("192.0.2.2");
    other.succeeded();
    const started = performance.now();
    await Promise.all(failures);
    assert.deepEqual(order, [0, 1, 2, 3], "held failures are answered in order");
    // 100 ms per refill: the second held one comes about 200 ms after the burst
    assert.ok(performance.now() - started >= 150, `${performance.now() - started} ms`);
    // a success charges nothing and frees its place at once
    const right = throttle.admit(address);
    right.succeeded();
    assert.equal(throttle.held, 0);
  } finally {
    throttle.close();
  }
});

Deno.test("AuthThrottle.close() answers every held failure at once (shutdown)", async () => {
  const throttle = new AuthThrottle({ burst: 1, perMinute: 1 });
  await throttle.admit("192.0.2.9").failed();
  const held = throttle.admit("192.0.2.9").failed();
  assert.equal(await settlesWithin(held, 100), false);
  throttle.close();
  assert.equal(await settlesWithin(held, 100), true);
});
