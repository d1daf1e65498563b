/**
 * Stopping the real program (`deno run <shipped permissions> main.ts`) with
 * SIGTERM while uploads run: they finish within `--shutdown_timeout`, or are
 * aborted with their spool files removed (a client still sending its body
 * when the signal comes is read to the end); and what a crash leaves behind is
 * cleaned up at the next start.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  buildPackage,
  packageFilename,
  type PackageSpec,
  writeLargePackage,
} from "./helpers/conda_package.ts";
import {
  serverArgs,
  type ServerProcess,
  startServerProcess,
  type TestTlsFiles,
  writeTestTls,
} from "./helpers/server_process.ts";
import { openRaw } from "./helpers/raw_http.ts";
import { uploadForm } from "./helpers/test_server.ts";
import { spoolEntries } from "./helpers/upload_clients.ts";

const TOKEN = "graceful-shutdown-token";

/** A channel, TLS files and a client trusting them, removed at the end of the scope. */
async function setUp(): Promise<
  { dir: string; channel: string; tls: TestTlsFiles; client: Deno.HttpClient } & AsyncDisposable
> {
  const dir = await Deno.makeTempDir({ prefix: "auh-shutdown-" });
  const channel = join(dir, "channel");
  await Deno.mkdir(channel);
  const tls = await writeTestTls(dir);
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(tls.caFile)] });
  return {
    dir,
    channel,
    tls,
    client,
    async [Symbol.asyncDispose]() {
      client.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function start(
  setup: { channel: string; tls: TestTlsFiles },
  extra: string[] = [],
): Promise<ServerProcess> {
  return await startServerProcess([
    ...await serverArgs(
      setup.channel,
      setup.tls,
      TOKEN,
    ),
    "--log_format",
    "json",
    ...extra,
  ]);
}

/** A slow upload under way. */
interface SlowUpload {
  /** Settles with the status, or with the error's message. */
  outcome: Promise<number | string>;
  /** Whether the client is still sending the body. */
  sending(): boolean;
  /** Whether {@linkcode SlowUpload.outcome} has settled. */
  settled(): boolean;
}

/** Starts a PUT of `bytes` sent in `chunks` pieces, one every `intervalMs` (the first at once). */
function slowPut(
  server: ServerProcess,
  client: Deno.HttpClient,
  bytes: Uint8Array,
  spec: PackageSpec,
  timing: { chunks: number; intervalMs: number },
): SlowUpload {
  const size = Math.ceil(bytes.length / timing.chunks);
  let at = 0;
  let done = false;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (at > 0) await new Promise((resolve) => setTimeout(resolve, timing.intervalMs));
      if (at >= bytes.length) {
        controller.close();
        return;
      }
      controller.enqueue(bytes.slice(at, at + size));
      at += size;
    },
  }, { highWaterMark: 0 });
  const outcome = fetch(new URL(`/linux-64/${packageFilename(spec)}`, server.url), {
    method: "PUT",
    headers: { authorization: `Bearer ${TOKEN}` },
    body,
    client,
  }).then(async (response) => {
    await response.body?.cancel();
    return response.status;
  }, (error: unknown) => error instanceof Error ? error.message : String(error))
    .finally(() => done = true);
  return { outcome, sending: () => at < bytes.length, settled: () => done };
}

/** Resolves once a TCP connection to `port` is refused; throws after 3 s. */
async function untilRefused(port: number): Promise<void> {
  for (let attempt = 0; attempt < 150; attempt++) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionRefused) return;
      throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`Cannot see port ${port} refuse connections within 3 s`);
}

/** Waits until the upload has its spool file, i.e. the server is receiving it. */
async function untilSpooling(channel: string): Promise<void> {
  for (let attempt = 0; attempt < 250; attempt++) {
    if ((await spoolEntries(channel)).length > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error("Cannot see the upload: no spool file appeared within 5 s");
}

function records(server: ServerProcess): Record<string, unknown>[] {
  return server.stderr.map((line) => JSON.parse(line) as Record<string, unknown>);
}

async function indexedFilenames(channel: string, subdir: string): Promise<string[]> {
  const repodata = JSON.parse(await Deno.readTextFile(join(channel, subdir, "repodata.json")));
  return Object.keys({ ...repodata.packages, ...repodata["packages.conda"] });
}

Deno.test("SIGTERM during an upload: new connections are refused, the upload finishes with 201 and is indexed, then the program exits 0", async () => {
  await using setup = await setUp();
  await using server = await start(setup);
  const spec: PackageSpec = { name: "finishes-during-shutdown", version: "1.0" };
  const bytes = await buildPackage(spec);
  // ~2 s of body
  const upload = slowPut(server, setup.client, bytes, spec, { chunks: 10, intervalMs: 200 });
  await untilSpooling(setup.channel);
  server.kill("SIGTERM");
  assert.ok(upload.sending(), "the upload was still sending at SIGTERM");
  await server.waitForLine(/shutting down/);
  await untilRefused(Number(new URL(server.url).port));
  assert.ok(!upload.settled(), "connections were refused while the upload still ran");
  // A 201 can only come from a program that waited for the upload; which of the answer and
  // the exit this process sees first is a race, so the order is read from the server's log.
  assert.equal(await upload.outcome, 201);
  const status = await server.status;
  assert.equal(status.code, 0, server.stderr.join("\n"));
  assert.deepEqual(await indexedFilenames(setup.channel, "linux-64"), [packageFilename(spec)]);
  assert.deepEqual(await spoolEntries(setup.channel), []);
  const logged = records(server);
  const messages = logged.map((record) => record.msg);
  assert.ok(messages.includes("published"));
  const answered = logged.findIndex((record) => record.msg === "request" && record.status === 201);
  assert.ok(answered >= 0 && answered < messages.indexOf("stopped"), "answered before stopping");
  assert.equal(messages.at(-1), "stopped");
  assert.ok(!messages.includes("shutdown deadline passed; aborting running uploads"));
});

Deno.test("--shutdown_timeout 1: an upload still running at the deadline is aborted with 503, its spool file removed, and the program exits 0", async () => {
  await using setup = await setUp();
  await using server = await start(setup, ["--shutdown_timeout", "1"]);
  const spec: PackageSpec = { name: "too-slow-for-shutdown", version: "1.0" };
  const bytes = await buildPackage(spec);
  // 5 s of body
  const upload = slowPut(server, setup.client, bytes, spec, { chunks: 25, intervalMs: 200 });
  await untilSpooling(setup.channel);
  const signalled = performance.now();
  server.kill("SIGTERM");
  const status = await server.status;
  const stoppedAfterMs = performance.now() - signalled;
  assert.equal(status.code, 0, server.stderr.join("\n"));
  assert.ok(
    stoppedAfterMs >= 900 && stoppedAfterMs < 4000,
    `stopped after ${Math.round(stoppedAfterMs)} ms`,
  );
  const outcome = await upload.outcome;
  assert.ok(outcome === 503 || typeof outcome === "string", `upload ended with ${outcome}`);
  assert.deepEqual(await spoolEntries(setup.channel), []);
  await assert.rejects(Deno.stat(join(setup.channel, "linux-64", packageFilename(spec))));
  const logged = records(server);
  assert.ok(
    logged.some((record) =>
      record.msg === "shutdown deadline passed; aborting running uploads" && record.uploads === 1
    ),
  );
  assert.ok(logged.some((record) => record.msg === "request" && record.status === 503));
  assert.equal(logged.at(-1)?.msg, "stopped");
});

Deno.test("spool files and temporary index files left by a killed server are removed and logged at the next start", async () => {
  await using setup = await setUp();
  const spec: PackageSpec = { name: "killed-mid-upload", version: "1.0" };
  {
    await using server = await start(setup);
    const bytes = await buildPackage(spec);
    const upload = slowPut(server, setup.client, bytes, spec, { chunks: 25, intervalMs: 200 });
    await untilSpooling(setup.channel);
    server.kill("SIGKILL");
    assert.notEqual((await server.status).code, 0);
    assert.equal(typeof await upload.outcome, "string", "the client saw the connection break");
  }
  const leftSpool = await spoolEntries(setup.channel);
  assert.equal(leftSpool.length, 1);
  // and what an interrupted index write and another crash leave
  await Deno.mkdir(join(setup.channel, "linux-64"), { recursive: true });
  const temporary = join(setup.channel, "linux-64", ".repodata.json.x.tmp");
  await Deno.writeTextFile(temporary, "{ half a repodata");
  await Deno.writeTextFile(join(setup.channel, ".upload-spool", "older.part"), "partial");
  {
    await using server = await start(setup);
    const logged = records(server);
    assert.ok(
      logged.some((record) =>
        record.level === "warn" &&
        record.msg === "removed leftover spool files of interrupted uploads" && record.count === 2
      ),
      server.stderr.join("\n"),
    );
    assert.ok(
      logged.some((record) =>
        record.level === "warn" && record.msg === "removed leftover temporary index files" &&
        record.count === 1
      ),
      server.stderr.join("\n"),
    );
    assert.deepEqual(await spoolEntries(setup.channel), []);
    await assert.rejects(Deno.stat(temporary), Deno.errors.NotFound);
    // and the channel takes the interrupted upload again
    const response = await fetch(new URL(`/linux-64/${packageFilename(spec)}`, server.url), {
      method: "PUT",
      headers: { authorization: `Bearer ${TOKEN}` },
      body: await buildPackage(spec) as Uint8Array<ArrayBuffer>,
      client: setup.client,
    });
    assert.equal(response.status, 201, await response.text());
  }
});

Deno.test("SIGTERM while a form upload over TLS is still sending its body: idle connections close at once, a new write request gets 503 with Retry-After and Connection: close, and the upload gets 201 and is indexed", async () => {
  await using setup = await setUp();
  await using server = await start(setup);
  const spec: PackageSpec = { name: "sent-through-the-drain", version: "1.0" };
  // ~400 KiB, as in the report of the cut-off uploads.
  const file = join(setup.dir, packageFilename(spec));
  await writeLargePackage(file, { ...spec, build: "0" }, 400 * 1024);
  const bytes = await Deno.readFile(file);
  const form = new Request("https://x/", {
    method: "POST",
    body: uploadForm(TOKEN, packageFilename(spec), bytes),
  });
  const body = await form.bytes();
  const open = () => openRaw(server.url, { caFile: setup.tls.caFile });

  using idle = await open();
  await idle.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.equal((await idle.readResponse()).status, 200);

  using upload = await open();
  await upload.send(
    `POST / HTTP/1.1\r\nHost: x\r\nContent-Type: ${
      form.headers.get("content-type")
    }\r\nContent-Length: ${body.length}\r\n\r\n`,
  );
  const firstPart = 64 * 1024;
  await upload.send(body.subarray(0, firstPart));

  using late = await open();
  await late.send(
    `PUT /linux-64/${packageFilename({ name: "late", version: "1.0" })} HTTP/1.1\r\n`,
  );
  await new Promise((resolve) => setTimeout(resolve, 200));

  server.kill("SIGTERM");
  await server.waitForLine(/shutting down/);
  const idleClosedMs = await idle.closedWithin(2_000);
  assert.ok(idleClosedMs !== null, "an idle keep-alive connection stayed open");

  await late.send(`Host: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 10\r\n\r\n`);
  const refused = await late.readResponse();
  assert.equal(refused.status, 503);
  assert.ok(refused.headers.has("retry-after"));
  assert.equal(refused.headers.get("connection"), "close");

  // The rest of the body, in pieces over about a second, after the signal.
  for (let offset = firstPart; offset < body.length; offset += 40 * 1024) {
    assert.ok(await upload.send(body.subarray(offset, offset + 40 * 1024)), "the upload was cut");
    await new Promise((resolve) => setTimeout(resolve, 80));
  }
  const response = await upload.readResponse();
  assert.equal(response.status, 201, new TextDecoder().decode(response.body));
  assert.equal(response.headers.get("connection"), "close");
  const status = await server.status;
  assert.equal(status.code, 0, server.stderr.join("\n"));
  assert.deepEqual(await indexedFilenames(setup.channel, "linux-64"), [packageFilename(spec)]);
  assert.deepEqual(await spoolEntries(setup.channel), []);
});

Deno.test("SIGTERM right after uploads: index.html and channeldata.json name every answered package before the program exits", async () => {
  await using setup = await setUp();
  await using server = await start(setup);
  const names: string[] = [];
  // Three back to back: the second and third come within the 250 ms in which
  // the auxiliary files are written at most once, so they are left behind.
  for (const name of ["first", "second", "third"]) {
    const spec: PackageSpec = { name: `aux-${name}`, version: "1.0" };
    const response = await fetch(new URL("/", server.url), {
      method: "POST",
      body: uploadForm(TOKEN, packageFilename(spec), await buildPackage(spec)),
      client: setup.client,
    });
    assert.equal(response.status, 201, await response.text());
    names.push(spec.name);
  }
  server.kill("SIGTERM");
  const status = await server.status;
  assert.equal(status.code, 0, server.stderr.join("\n"));
  const html = await Deno.readTextFile(join(setup.channel, "linux-64", "index.html"));
  const channeldata = JSON.parse(await Deno.readTextFile(join(setup.channel, "channeldata.json")));
  for (const name of names) {
    assert.ok(html.includes(`${name}-1.0-0.conda`), `${name} in index.html`);
    assert.ok(channeldata.packages[name], `${name} in channeldata.json`);
  }
  assert.doesNotMatch(server.stderr.join("\n"), /\bERROR\b|"level":"error"/);
});
