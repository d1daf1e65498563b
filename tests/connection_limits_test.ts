/**
 * The connection layer as an attacker without a token meets it, against the
 * real program (`deno run <shipped permissions> main.ts`) over TLS: floods
 * under a low open-file limit, heads that never finish or trickle in,
 * idle keep-alive connections, one client taking many connections, and the
 * latency of small responses on a kept-alive connection.
 */

import assert from "node:assert/strict";
import { connect } from "node:net";
import { join } from "node:path";
import { writePackage } from "./helpers/conda_package.ts";
import { openRaw, type RawConnection } from "./helpers/raw_http.ts";
import {
  curlUpload,
  serverArgs,
  type ServerProcess,
  type ServerProcessOptions,
  startServerProcess,
  type TestTlsFiles,
  writeTestTls,
} from "./helpers/server_process.ts";

const TOKEN = "connection-limits-token";

interface Setup extends AsyncDisposable {
  dir: string;
  channel: string;
  tls: TestTlsFiles;
}

async function setUp(): Promise<Setup> {
  const dir = await Deno.makeTempDir({ prefix: "auh-connections-" });
  const channel = join(dir, "channel");
  await Deno.mkdir(join(channel, "noarch"), { recursive: true });
  const tls = await writeTestTls(dir);
  return {
    dir,
    channel,
    tls,
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function start(
  setup: Setup,
  extra: string[],
  options: ServerProcessOptions = {},
): Promise<ServerProcess> {
  return await startServerProcess([
    ...await serverArgs(setup.channel, setup.tls, TOKEN),
    ...extra,
  ], options);
}

function open(server: ServerProcess, setup: Setup): Promise<RawConnection> {
  return openRaw(server.url, { caFile: setup.tls.caFile });
}

/** Uploads a fresh package with curl -F and returns the status. */
async function validUpload(server: ServerProcess, setup: Setup, name: string): Promise<number> {
  const file = await writePackage(setup.dir, { name, version: "1.0" });
  const result = await curlUpload(server.url, { token: TOKEN, file }, {
    caFile: setup.tls.caFile,
  });
  return result.status;
}

async function indexedFilenames(channel: string, subdir: string): Promise<string[]> {
  const repodata = JSON.parse(await Deno.readTextFile(join(channel, subdir, "repodata.json")));
  return Object.keys({ ...repodata.packages, ...repodata["packages.conda"] });
}

async function openFileCount(pid: number): Promise<number> {
  let count = 0;
  for await (const _ of Deno.readDir(`/proc/${pid}/fd`)) count++;
  return count;
}

/** Opens `count` TLS connections at once that each send half a request head and stop. */
async function halfHeads(
  server: ServerProcess,
  setup: Setup,
  count: number,
): Promise<RawConnection[]> {
  const opened = await Promise.all(Array.from({ length: count }, async () => {
    try {
      const connection = await open(server, setup);
      // A shed connection fails in the handshake; one waiting in the kernel's backlog
      // (no descriptor to accept it) does not answer: move on after a moment.
      await Promise.race([
        connection.send("GET / HTTP/1.1\r\nHost: x\r\n"),
        new Promise((resolve) => setTimeout(resolve, 1_000)),
      ]);
      return connection;
    } catch {
      return undefined; // refused or reset: the server shed it
    }
  }));
  return opened.filter((connection) => connection !== undefined);
}

const ULIMIT_120 = ["prlimit", "--nofile=120:120", "--"];

Deno.test("a flood of 110 half-sent heads under ulimit -n 120 is shed: the process survives, and once they are closed at the header deadline a valid upload succeeds", async () => {
  await using setup = await setUp();
  // The default --max_connections follows the open-file limit: 120 * 0.75 - 64 = 26.
  await using server = await start(setup, [
    "--header_timeout",
    "2",
    "--max_connections_per_client",
    "1000",
  ], { launcher: ULIMIT_120 });
  const flood = await halfHeads(server, setup, 110);
  try {
    await server.waitForLine(/connection refused: too many open connections/);
    assert.ok(await openFileCount(server.pid) <= 120);
    // The header deadline closes the held connections; the server goes on serving.
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    assert.equal(await validUpload(server, setup, "after-flood"), 201);
    assert.deepEqual(await indexedFilenames(setup.channel, "linux-64"), [
      "after-flood-1.0-0.conda",
    ]);
  } finally {
    for (const connection of flood) connection[Symbol.dispose]();
  }
  assert.ok(
    !server.stderr.some((line) => /Uncaught|panicked/.test(line)),
    server.stderr.join("\n"),
  );
});

Deno.test("out of file descriptors (--max_connections above ulimit -n 120): accept errors are logged and survived, and a valid upload succeeds afterwards", async () => {
  await using setup = await setUp();
  await using server = await start(setup, [
    "--header_timeout",
    "2",
    "--max_connections",
    "1000",
    "--max_connections_per_client",
    "1000",
  ], { launcher: ULIMIT_120 });
  const flood = await halfHeads(server, setup, 130);
  try {
    // The process ran out of descriptors (the rest of the flood waits in the backlog).
    await server.waitForLine(/cannot accept connections; pausing.*os error 24/);
    await new Promise((resolve) => setTimeout(resolve, 2_500));
  } finally {
    for (const connection of flood) connection[Symbol.dispose]();
  }
  assert.equal(await validUpload(server, setup, "after-emfile"), 201);
  const exited = await Promise.race([server.status.then(() => true), Promise.resolve(false)]);
  assert.equal(exited, false, "the server exited");
});

/** Connects and resets (RST) connections for `ms`, two at a time; resolves how many. */
async function resetFlood(port: number, ms: number): Promise<number> {
  let count = 0;
  const end = performance.now() + ms;
  const worker = async () => {
    while (performance.now() < end) {
      await new Promise<void>((resolve) => {
        const socket = connect({ port, host: "127.0.0.1" }, () => {
          count++;
          socket.resetAndDestroy();
          resolve();
        });
        socket.on("error", () => resolve());
      });
    }
  };
  await Promise.all([worker(), worker()]);
  return count;
}

Deno.test("a 2 s flood of connections reset before accept() does not pause the accept loop: /health answers within 3 s after it", async () => {
  await using setup = await setUp();
  await using server = await start(setup, ["--max_connections_per_client", "100000"]);
  const flooded = await resetFlood(Number(new URL(server.url).port), 2_000);
  assert.ok(flooded > 100, `only ${flooded} connections in the flood`);
  const started = performance.now();
  let connection: RawConnection | undefined;
  const health = async () => {
    connection = await open(server, setup);
    await connection.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
    return await connection.readResponse();
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const response = await Promise.race([
      health(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("/health did not answer within 3 s")), 3_000);
      }),
    ]);
    assert.equal(response.status, 200);
  } finally {
    clearTimeout(timer);
    connection?.[Symbol.dispose]();
  }
  assert.ok(performance.now() - started < 3_000);
  await server.waitForLine(/connection ended before it was accepted/);
  assert.ok(!server.stderr.some((line) => /cannot accept connections; pausing/.test(line)));
});

Deno.test("--header_timeout 1: a half-sent head, a head trickling one byte every 250 ms and a TLS handshake never begun are each closed at the deadline", async () => {
  await using setup = await setUp();
  await using server = await start(setup, ["--header_timeout", "1"]);

  using half = await open(server, setup);
  await half.send("GET /health HTTP/1.1\r\nHost: x\r\n");
  const halfClosedMs = await half.closedWithin(6_000);
  assert.ok(halfClosedMs !== null, "a half-sent head was left open");

  // 40 bytes at 4 a second would take 10 s: the deadline is not reset by each byte.
  using trickle = await open(server, setup);
  const head = "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";
  const started = performance.now();
  let sent = 0;
  for (; sent < head.length; sent++) {
    if (!await trickle.send(head[sent]!)) break;
    if (await trickle.closedWithin(250) !== null) break;
  }
  const trickleMs = performance.now() - started;
  assert.ok(sent < head.length, "the whole trickled head was accepted");
  assert.ok(trickleMs >= 800 && trickleMs < 6_000, `closed after ${Math.round(trickleMs)} ms`);

  const { hostname, port } = new URL(server.url);
  const silent = await Deno.connect({ hostname, port: Number(port) });
  try {
    const before = performance.now();
    const read = await silent.read(new Uint8Array(16)).catch(() => null);
    assert.equal(read, null);
    assert.ok(performance.now() - before < 6_000);
  } finally {
    silent.close();
  }
});

Deno.test("--idle_timeout 1: a kept-alive connection is closed after a second without a request, not before", async () => {
  await using setup = await setUp();
  await using server = await start(setup, ["--idle_timeout", "1"]);
  using connection = await open(server, setup);
  await connection.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
  assert.equal((await connection.readResponse()).status, 200);
  assert.equal(await connection.closedWithin(700), null, "closed before the idle timeout");
  // Still usable within the timeout, and the timer starts again after this answer.
  await connection.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
  assert.equal((await connection.readResponse()).status, 200);
  const closedMs = await connection.closedWithin(6_000);
  assert.ok(closedMs !== null, "an idle connection was left open");
});

Deno.test("--max_connections_per_client 3: the 4th connection from one address is closed at once, and served again once one closes", async () => {
  await using setup = await setUp();
  await using server = await start(setup, ["--max_connections_per_client", "3"]);
  const held: RawConnection[] = [];
  try {
    for (let index = 0; index < 3; index++) {
      const connection = await open(server, setup);
      await connection.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
      assert.equal((await connection.readResponse()).status, 200);
      held.push(connection);
    }
    using fourth = await open(server, setup);
    await fourth.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert.ok(await fourth.closedWithin(3_000) !== null, "the 4th connection was served");
    await server.waitForLine(
      /connection refused: too many open connections.*max_connections_per_client/,
    );
    held.pop()![Symbol.dispose]();
    await new Promise((resolve) => setTimeout(resolve, 200));
    using fifth = await open(server, setup);
    await fifth.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert.equal((await fifth.readResponse()).status, 200);
  } finally {
    for (const connection of held) connection[Symbol.dispose]();
  }
});

Deno.test("50 sequential GETs of a 12 KB file on one kept-alive TLS connection take well under the 40 ms delayed-ACK stall at the median", async () => {
  await using setup = await setUp();
  const bytes = new Uint8Array(12 * 1024).map((_, index) => (index * 7919) % 251);
  await Deno.writeFile(join(setup.channel, "noarch", "twelve-kb.bin"), bytes);
  await using server = await start(setup, []);
  using connection = await open(server, setup);
  const times: number[] = [];
  for (let index = 0; index < 50; index++) {
    const started = performance.now();
    await connection.send("GET /noarch/twelve-kb.bin HTTP/1.1\r\nHost: localhost\r\n\r\n");
    const response = await connection.readResponse();
    times.push(performance.now() - started);
    assert.equal(response.status, 200);
    assert.deepEqual(response.body, bytes);
  }
  times.sort((a, b) => a - b);
  const median = times[25]!;
  assert.ok(median < 20, `median ${median.toFixed(1)} ms`);
});
