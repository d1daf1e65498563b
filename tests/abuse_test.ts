/**
 * Clients that misbehave: a body that stalls (`--body_timeout`), more uploads
 * at once than `--max_concurrent_uploads`, and token guessing (10 failures a
 * minute per address, then 429).
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

Deno.test("11 wrong tokens from one address: the 11th gets 429 with Retry-After, the metrics count the failures, and even the right token gets 429 until the minute has passed", async () => {
  await using server = await startTestServer();
  const spec: PackageSpec = { name: "guarded", version: "1.0" };
  const bytes = await buildPackage(spec) as Uint8Array<ArrayBuffer>;
  for (let attempt = 1; attempt <= 10; attempt++) {
    await expectStatus(await put(server, spec, bytes, `guess-${attempt}`), 401);
  }
  const eleventh = await put(server, spec, bytes, "guess-11");
  const body = await expectStatus(eleventh, 429);
  assert.match(body, /Cannot authenticate: too many failed token attempts/);
  const retryAfter = Number(eleventh.headers.get("retry-after"));
  assert.ok(retryAfter >= 55 && retryAfter <= 60, `Retry-After: ${retryAfter}`);

  // the right token is refused as well: it is not even checked
  const right = await put(server, spec, bytes);
  await expectStatus(right, 429);
  assert.ok(Number(right.headers.get("retry-after")) >= 1);
  // on every write route, DELETE included
  await expectStatus(
    await server.fetch(`/linux-64/${packageFilename(spec)}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${server.token}` },
    }),
    429,
  );
  assert.deepEqual(await channelPackages(server.channelRoot), []);

  assert.equal(await metric(server, "auh_auth_failures_total"), 10);
  assert.equal(await metric(server, 'auh_uploads_total{outcome="401"}'), 10);
  assert.equal(await metric(server, 'auh_uploads_total{outcome="429"}'), 2);
  // reads are not throttled
  await expectStatus(await server.fetch("/health"), 200);
  await expectStatus(await server.fetch("/linux-64/repodata.json"), 404);
});

Deno.test("behind a local reverse proxy the throttle counts X-Forwarded-For addresses, not the proxy's", async () => {
  await using server = await startTestServer();
  const attempt = (forwardedFor: string, token: string) =>
    server.fetch("/", {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "x-forwarded-for": forwardedFor },
      body: new FormData(),
    });
  for (let failure = 1; failure <= 10; failure++) {
    await expectStatus(await attempt("10.9.8.7, 203.0.113.7", `guess-${failure}`), 401);
  }
  await expectStatus(await attempt("203.0.113.7", "guess-11"), 429);
  // another client behind the same proxy is not locked out
  await expectStatus(await attempt("203.0.113.8", "guess-1"), 401);
  assert.ok(server.logs.some((line) => line.includes("client=203.0.113.8")));
});

Deno.test("AuthThrottle lets an address in again once its failures are older than the window, and other addresses are not affected", () => {
  const throttle = new AuthThrottle();
  const start = 1_700_000_000_000;
  for (let i = 0; i < 10; i++) throttle.fail("192.0.2.1", start + i * 1000);
  throttle.check("192.0.2.2", start + 10_000);
  assert.throws(() => throttle.check("192.0.2.1", start + 10_000), (error: unknown) => {
    assert.ok(error instanceof HttpError);
    assert.equal(error.status, 429);
    assert.equal(error.headers["retry-after"], "50");
    return true;
  });
  // the oldest failure leaves the window after 60 s: one more attempt is allowed
  assert.throws(() => throttle.check("192.0.2.1", start + 59_999), HttpError);
  throttle.check("192.0.2.1", start + 60_000);
  throttle.fail("192.0.2.1", start + 60_000);
  assert.throws(() => throttle.check("192.0.2.1", start + 60_001), HttpError);
  // once every failure is older than the window the address is free again
  throttle.check("192.0.2.1", start + 120_000);
});
