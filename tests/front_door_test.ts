/**
 * The front door as an attacker (and an unlucky CI job) meets it, against the
 * real program in a subprocess under the shipped flags: clients that dribble
 * a form preamble without a token never hold an upload slot, and end under
 * the pre-token budget as failed attempts; 30 parallel wrong tokens get only
 * the burst of 401s while the right token still gets through; a delete racing
 * an upload of the same file never leaves index and files disagreeing; path
 * tokens in every form authenticate and never reach the log; a forced
 * replacement never disappears from `repodata.json` for a polling reader.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { STATUS } from "../src/http/status.ts";
import type { BuiltinIndex } from "../src/index/builtin_index.ts";
import { PreAuthPool } from "../src/upload/pre_auth_pool.ts";
import { checkChannelInvariants } from "./helpers/channel_invariants.ts";
import { buildPackage, packageFilename, type PackageSpec } from "./helpers/conda_package.ts";
import {
  serverArgs,
  type ServerProcess,
  startServerProcess,
  writeTestTls,
} from "./helpers/server_process.ts";
import { openRaw, type RawConnection } from "./helpers/raw_http.ts";
import { startTestServer } from "./helpers/test_server.ts";

const encoder = new TextEncoder();

/** A server subprocess with a fresh channel, its token and a client trusting it. */
interface Program extends AsyncDisposable {
  url: string;
  token: string;
  channel: string;
  caCert: string;
  /** The CA file for raw TLS connections; undefined on plain HTTP. */
  caFile: string | undefined;
  process: ServerProcess;
  /** fetch of `url + path` (a string join, so `//t/...` stays as written). */
  fetch(path: string, init?: RequestInit): Promise<Response>;
  /** The value of one Prometheus series. */
  metric(series: string): Promise<number | undefined>;
}

async function startProgram(
  flags: string[] = [],
  options: { plain?: boolean } = {},
): Promise<Program> {
  const dir = await Deno.makeTempDir({ prefix: "auh-front-door-" });
  const channel = join(dir, "channel");
  await Deno.mkdir(channel);
  const token = `front-${crypto.randomUUID()}`;
  const tls = await writeTestTls(dir);
  const args = await serverArgs(channel, tls, token);
  const process = await startServerProcess([
    ...(options.plain
      ? [
        ...args.filter((arg, i) =>
          !["-c", "-k"].includes(arg) && !["-c", "-k"].includes(args[i - 1]!)
        ),
        "--insecure_no_tls",
      ]
      : args),
    ...flags,
  ]);
  const caCert = await Deno.readTextFile(tls.caFile);
  const client = Deno.createHttpClient({ caCerts: [caCert], http2: false });
  const fetchPath = (path: string, init?: RequestInit) =>
    fetch(process.url + path, { ...init, client });
  return {
    url: process.url,
    token,
    channel,
    caCert,
    caFile: options.plain ? undefined : tls.caFile,
    process,
    fetch: fetchPath,
    async metric(series) {
      const text = await (await fetchPath("/metrics")).text();
      const line = text.split("\n").find((line) => line.startsWith(series + " "));
      return line === undefined ? undefined : Number(line.slice(series.length + 1));
    },
    async [Symbol.asyncDispose]() {
      client.close();
      await process[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

async function expectStatus(response: Response, status: number): Promise<string> {
  const body = await response.text();
  assert.equal(response.status, status, body);
  return body;
}

function put(program: Program, path: string, bytes: Uint8Array, token = program.token) {
  return program.fetch(path, {
    method: "PUT",
    headers: { authorization: `Bearer ${token}` },
    body: bytes as Uint8Array<ArrayBuffer>,
  });
}

function formPost(program: Program, filename: string, bytes: Uint8Array): Promise<Response> {
  const form = new FormData();
  form.append("token", program.token);
  form.append("artifact", new Blob([bytes as Uint8Array<ArrayBuffer>]), filename);
  return program.fetch("/", { method: "POST", body: form });
}

/** Runs `task` and returns its result with the time it took, in ms. */
async function timed<T>(task: () => Promise<T>): Promise<[T, number]> {
  const started = performance.now();
  const result = await task();
  return [result, performance.now() - started];
}

/** A dribbling client's outcome. */
interface Dribbled {
  /** The answer's status; undefined when the connection closed without one. */
  status: number | undefined;
  /** When the answer came, in ms after the request started. */
  ms: number;
}

/**
 * Opens its own TLS connection, sends `POST /` with a multipart head and the
 * start of a `note` field, then one more byte every `everyMs`, never a
 * token; resolves when the server answers or closes.
 */
async function dribble(program: Program, everyMs: number): Promise<Dribbled> {
  const url = new URL(program.url);
  const conn = await Deno.connectTls({
    hostname: url.hostname,
    port: Number(url.port),
    caCerts: [program.caCert],
    alpnProtocols: ["http/1.1"],
  });
  const started = performance.now();
  const boundary = "dribble-boundary";
  const head = [
    "POST / HTTP/1.1",
    `host: ${url.host}`,
    `content-type: multipart/form-data; boundary=${boundary}`,
    "content-length: 1000000",
  ].join("\r\n") + "\r\n\r\n";
  let answered = false;
  const write = async (text: string) => {
    const bytes = encoder.encode(text);
    let written = 0;
    while (written < bytes.length) written += await conn.write(bytes.subarray(written));
  };
  const sending = (async () => {
    try {
      await write(head + `--${boundary}\r\ncontent-disposition: form-data; name="note"\r\n\r\n`);
      while (!answered) {
        await new Promise((resolve) => setTimeout(resolve, everyMs));
        if (!answered) await write("x");
      }
    } catch {
      // the server closed the connection
    }
  })();
  try {
    const buffer = new Uint8Array(1024);
    const n = await conn.read(buffer).catch(() => null);
    answered = true;
    const text = new TextDecoder().decode(buffer.subarray(0, n ?? 0));
    const match = /^HTTP\/1\.1 (\d{3})/.exec(text);
    return { status: match ? Number(match[1]) : undefined, ms: performance.now() - started };
  } finally {
    answered = true;
    await sending;
    conn.close();
  }
}

Deno.test("form preambles dribbled without a token never hold an upload slot: with --max_concurrent_uploads 2 a Bearer PUT and a form POST succeed at once, and the dribblers end with 408 at --token_timeout as failed attempts", async () => {
  await using program = await startProgram([
    "--max_concurrent_uploads",
    "2",
    "--token_timeout",
    "4",
  ]);
  const dribblers = Array.from({ length: 6 }, () => dribble(program, 300));
  await new Promise((resolve) => setTimeout(resolve, 800));
  assert.equal(await program.metric("auh_awaiting_token"), 6);
  assert.equal(await program.metric("auh_uploads_in_flight"), 0);

  const putSpec: PackageSpec = { name: "past-dribblers", version: "1.0" };
  const [putResponse, putMs] = await timed(async () =>
    await put(program, `/linux-64/${packageFilename(putSpec)}`, await buildPackage(putSpec))
  );
  await expectStatus(putResponse, STATUS.Created);
  const formSpec: PackageSpec = { name: "past-dribblers-form", version: "1.0" };
  const [formResponse, formMs] = await timed(async () =>
    await formPost(program, packageFilename(formSpec), await buildPackage(formSpec))
  );
  await expectStatus(formResponse, STATUS.Created);
  // Both ran while all six dribblers were still in the pre-token pool.
  assert.ok(putMs < 3000 && formMs < 3000, `PUT ${Math.round(putMs)} ms, form ${formMs} ms`);

  const ended = await Promise.all(dribblers);
  for (const { status, ms } of ended) {
    assert.equal(status, STATUS.RequestTimeout);
    assert.ok(ms >= 3500 && ms < 20_000, `a dribbler ended after ${Math.round(ms)} ms`);
  }
  assert.equal(await program.metric("auh_auth_failures_total"), 6);
  assert.ok(
    program.process.stderr.some((line) => line.includes("no token field within 4 s")),
    "the refusal is logged with its reason",
  );
  assert.deepEqual(await checkChannelInvariants(program.channel), []);
});

Deno.test("a form whose first 64 KiB carry no token field is refused with 400 and counted as a failed attempt", async () => {
  await using program = await startProgram();
  const form = new FormData();
  // 320 kB before the token: far past the budget plus any one chunk of the transport, in
  // few enough fields (10 of 32 kB) that the parser's 16-part limit cannot answer first
  // when the transport joins many of them into one chunk.
  for (let i = 0; i < 10; i++) form.append(`note-${i}`, "x".repeat(32000));
  form.append("token", program.token);
  const response = await program.fetch("/", { method: "POST", body: form });
  const body = await expectStatus(response, STATUS.BadRequest);
  assert.match(body, /Cannot upload: no token field within the first 65536 bytes of the form/);
  assert.equal(await program.metric("auh_auth_failures_total"), 1);
});

Deno.test("PreAuthPool: the budget counts bytes read without the token; a chunk that carries the token past the budget is not refused", async () => {
  const chunks = () => {
    const parts = [new Uint8Array(16), new Uint8Array(16)];
    return new ReadableStream<Uint8Array>({
      pull: (controller) => {
        const next = parts.shift();
        if (next) controller.enqueue(next);
        else controller.close();
      },
    });
  };
  const pool = new PreAuthPool({ budgetBytes: 8 });
  // the token was in the first chunk: the entry leaves the pool before reading on
  const withToken = pool.enter(chunks());
  const reader = withToken.body.getReader();
  assert.equal((await reader.read()).value?.length, 16);
  withToken.leave();
  assert.equal((await reader.read()).value?.length, 16);
  assert.equal((await reader.read()).done, true);
  // no token in the first chunk: the next read is refused
  const without = pool.enter(chunks());
  await assert.rejects(new Response(without.body).arrayBuffer(), (error: unknown) => {
    assert.equal((error as { status?: number }).status, STATUS.BadRequest);
    return true;
  });
  assert.equal(without.ended?.status, STATUS.BadRequest);
  assert.equal(pool.waiting, 0);
});

Deno.test("PreAuthPool: a full pool ends the request that has waited longest (503), and the token ends the budget", async () => {
  const pool = new PreAuthPool({ size: 2, budgetMs: 60_000, budgetBytes: 8 });
  const never = () => new ReadableStream<Uint8Array>({ pull: () => new Promise(() => {}) });
  const first = pool.enter(never());
  const second = pool.enter(new Blob(["0123456789abcdef"]).stream());
  // the token arrived for the second one: its bytes are no longer budgeted
  second.leave();
  assert.equal(second.authenticated, true);
  assert.equal(await new Response(second.body).text(), "0123456789abcdef");
  const third = pool.enter(never());
  const fourth = pool.enter(never());
  await assert.rejects(new Response(first.body).text(), (error: unknown) => {
    assert.equal((error as { status?: number }).status, STATUS.ServiceUnavailable);
    return true;
  });
  assert.equal(first.authenticated, false);
  assert.equal(first.ended?.status, STATUS.ServiceUnavailable);
  assert.equal(pool.waiting, 2);
  pool.close();
  assert.equal(third.ended?.status, STATUS.ServiceUnavailable);
  assert.equal(fourth.ended?.status, STATUS.ServiceUnavailable);
  assert.equal(pool.waiting, 0);
});

Deno.test("30 parallel wrong tokens from one address get only the burst of 10 answers of 401, the rest are held back, and the right token from the same address succeeds at once during and after", async () => {
  await using program = await startProgram();
  const spec: PackageSpec = { name: "guessed", version: "1.0" };
  const bytes = await buildPackage(spec);
  const path = `/linux-64/${packageFilename(spec)}`;
  const abort = new AbortController();
  const answered: number[] = [];
  const guesses = Array.from({ length: 30 }, (_, i) =>
    program.fetch(path, {
      method: "PUT",
      headers: { authorization: `Bearer wrong-guess-${i}` },
      body: bytes as Uint8Array<ArrayBuffer>,
      signal: abort.signal,
    }).then(async (response) => {
      await response.body?.cancel();
      answered.push(response.status);
    }, () => {}));
  try {
    // Long enough for every guess to arrive and be verified, even on a loaded machine,
    // and shorter than one refill (6 s).
    await new Promise((resolve) => setTimeout(resolve, 3000));
    assert.deepEqual(answered, Array(10).fill(STATUS.Unauthorized));

    // during: the right token from the same address
    const [during, duringMs] = await timed(() => put(program, path, bytes));
    await expectStatus(during, STATUS.Created);
    assert.ok(duringMs < 3000, `the right token took ${Math.round(duringMs)} ms`);
    assert.ok(answered.length <= 11, `${answered.length} answers`);

    // after: the bucket is empty, failures still held, the right token still passes
    const [after, afterMs] = await timed(() =>
      program.fetch(path, {
        method: "DELETE",
        headers: { authorization: `Bearer ${program.token}` },
      })
    );
    await expectStatus(after, STATUS.OK);
    assert.ok(afterMs < 3000, `the right token took ${Math.round(afterMs)} ms`);
    assert.equal(await program.metric("auh_auth_failures_total"), 30);
    const held = await program.metric("auh_auth_held");
    assert.ok(held !== undefined && held >= 18 && held <= 20, `${held} held`);
  } finally {
    abort.abort();
    await Promise.all(guesses);
  }
});

Deno.test("a DELETE racing an upload of the same file never leaves the index and the files disagreeing (40 rounds)", async () => {
  await using program = await startProgram();
  const spec: PackageSpec = { name: "raced", version: "1.0" };
  const bytes = await buildPackage(spec);
  const path = `/linux-64/${packageFilename(spec)}`;
  const outcomes = new Map<string, number>();
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  for (let round = 0; round < 40; round++) {
    // The delete starts from a little before to a little after the upload, so that
    // over the rounds it meets the upload's every step.
    const offset = (round % 10) - 2;
    const upload = sleep(Math.max(0, -offset)).then(() => put(program, path, bytes));
    const remove = sleep(Math.max(0, offset)).then(() =>
      program.fetch(path, {
        method: "DELETE",
        headers: { authorization: `Bearer ${program.token}` },
      })
    );
    const [uploaded, deleted] = await Promise.all([upload, remove]);
    await uploaded.body?.cancel();
    await deleted.body?.cancel();
    const key = `${uploaded.status}/${deleted.status}`;
    outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
    assert.ok(
      ["201/200", "201/404"].includes(key),
      `round ${round}: upload ${uploaded.status}, delete ${deleted.status}`,
    );
    assert.deepEqual(await checkChannelInvariants(program.channel), [], `round ${round}`);
    // what the answers say is what the channel holds
    const present = await Deno.stat(join(program.channel, "linux-64", packageFilename(spec)))
      .then(() => true, () => false);
    assert.equal(present, key === "201/404", `round ${round}: ${key}`);
    if (present) {
      await (await program.fetch(path, {
        method: "DELETE",
        headers: { authorization: `Bearer ${program.token}` },
      })).body?.cancel();
    }
  }
  console.log(`upload/delete outcomes: ${JSON.stringify(Object.fromEntries(outcomes))}`);
});

Deno.test("path tokens in every form (//t/, /t/<token> alone, %2Ft%2F, doubled slashes) authenticate and never reach the log", async () => {
  await using program = await startProgram(["--allow_overwrite"]);
  const { token } = program;
  const wrong = "WRONG-SECRET-0123456789";
  const spec: PackageSpec = { name: "pathtoken", version: "1.0" };
  const bytes = await buildPackage(spec);
  const file = packageFilename(spec);

  await expectStatus(
    await program.fetch(`//t/${token}/linux-64/${file}`, {
      method: "PUT",
      body: bytes as Uint8Array<ArrayBuffer>,
    }),
    STATUS.Created,
  );
  await expectStatus(
    await program.fetch(`/%2Ft%2F${token}%2Flinux-64%2F${file}?force=true`, {
      method: "PUT",
      body: bytes as Uint8Array<ArrayBuffer>,
    }),
    STATUS.Created,
  );
  await expectStatus(
    await program.fetch(`/t/${token}//linux-64//${file}?force=true`, {
      method: "PUT",
      body: bytes as Uint8Array<ArrayBuffer>,
    }),
    STATUS.Created,
  );
  await expectStatus(
    await program.fetch(`/t/${token}`, {
      method: "POST",
      headers: { "x-file-name": file, "content-type": "application/octet-stream" },
      body: bytes as Uint8Array<ArrayBuffer>,
    }),
    STATUS.Conflict,
  );
  await expectStatus(await program.fetch(`//t/${token}/linux-64/repodata.json`), STATUS.OK);
  for (const path of [`//t/${wrong}/linux-64/${file}`, `/%2Ft%2F${wrong}%2Flinux-64%2F${file}`]) {
    await expectStatus(await program.fetch(path, { method: "DELETE" }), STATUS.Unauthorized);
  }
  await expectStatus(
    await program.fetch(`//t/${token}/linux-64/${file}`, { method: "DELETE" }),
    STATUS.OK,
  );

  const log = program.process.stderr.join("\n");
  assert.ok(!log.includes(token), "the token reached the log");
  assert.ok(!log.includes(wrong), "the wrong token reached the log");
  const requestLines = program.process.stderr.filter((line) => /\bmethod=|"method"/.test(line));
  assert.ok(
    requestLines.filter((line) => line.includes("/t/<redacted>")).length >= 8,
    requestLines.join("\n"),
  );
});

Deno.test("a forced replacement never disappears from repodata.json for a reader polling hard (20 replacements)", async () => {
  await using program = await startProgram(["--allow_overwrite"]);
  const spec = (round: number): PackageSpec => ({
    name: "replaced",
    version: "1.0",
    files: { "share/replaced/round.txt": `round ${round}` },
  });
  const file = packageFilename(spec(0));
  await expectStatus(await put(program, `/linux-64/${file}`, await buildPackage(spec(0))), 201);
  let polling = true;
  let reads = 0;
  const misses: number[] = [];
  const poller = async () => {
    while (polling) {
      const response = await program.fetch("/linux-64/repodata.json", {
        headers: { "cache-control": "no-cache" },
      });
      const repodata = await response.json() as { "packages.conda"?: Record<string, unknown> };
      reads++;
      if (repodata["packages.conda"]?.[file] === undefined) misses.push(reads);
    }
  };
  const pollers = [poller(), poller()];
  try {
    for (let round = 1; round <= 20; round++) {
      const bytes = await buildPackage(spec(round));
      const readsBefore = reads;
      const response = await put(program, `/linux-64/${file}?force=true`, bytes);
      const stored = JSON.parse(await expectStatus(response, 201)) as { replaced: boolean };
      assert.equal(stored.replaced, true);
      // let the readers poll between replacements too
      while (reads < readsBefore + 4) await new Promise((resolve) => setTimeout(resolve, 1));
    }
  } finally {
    polling = false;
    await Promise.all(pollers);
  }
  console.log(`${reads} polling reads during 20 replacements, ${misses.length} missed the package`);
  assert.deepEqual(misses, []);
  assert.ok(reads >= 40, `only ${reads} reads`);
  assert.deepEqual(await checkChannelInvariants(program.channel), []);
});

Deno.test("a forced replacement is one index write", async () => {
  await using server = await startTestServer({ flags: { allowOverwrite: true } });
  const index = server.server.indexer as BuiltinIndex;
  const first: PackageSpec = { name: "one-write", version: "1.0" };
  const second: PackageSpec = { ...first, files: { "share/one-write/b.txt": "b" } };
  const path = `/linux-64/${packageFilename(first)}`;
  const upload = async (spec: PackageSpec, query: string) =>
    await server.fetch(path + query, {
      method: "PUT",
      headers: { authorization: `Bearer ${server.token}` },
      body: await buildPackage(spec) as Uint8Array<ArrayBuffer>,
    });
  await expectStatus(await upload(first, ""), STATUS.Created);
  const before = index.writeCount;
  await expectStatus(await upload(second, "?force=true"), STATUS.Created);
  assert.equal(index.writeCount - before, 1);
});

/** Polls `check` every 100 ms until it holds or `timeoutMs` passed; resolves whether it held. */
async function eventually(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (performance.now() > end) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function openFileCount(pid: number): Promise<number> {
  let count = 0;
  for await (const _ of Deno.readDir(`/proc/${pid}/fd`)) count++;
  return count;
}

function openConnection(program: Program): Promise<RawConnection> {
  return openRaw(program.url, program.caFile === undefined ? {} : { caFile: program.caFile });
}

for (const plain of [false, true]) {
  Deno.test(
    `held wrong tokens whose clients leave are let go at once over ${
      plain ? "plain HTTP" : "TLS"
    }: auh_auth_held returns to 0 and their sockets are closed`,
    async () => {
      await using program = await startProgram([], { plain });
      await program.metric("auh_auth_held"); // the metrics connection is open from here on
      const baseline = await openFileCount(program.process.pid);
      const connections: RawConnection[] = [];
      try {
        for (let i = 0; i < 15; i++) {
          const connection = await openConnection(program);
          connections.push(connection);
          await connection.send(
            `PUT /linux-64/held-1.0-0.conda HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer wrong-${i}\r\nContent-Length: 4\r\n\r\nbody`,
          );
        }
        assert.ok(
          await eventually(async () => await program.metric("auh_auth_held") === 5, 10_000),
          "5 failures held after the burst of 10",
        );
      } finally {
        for (const connection of connections) connection[Symbol.dispose]();
      }
      assert.ok(
        await eventually(async () => await program.metric("auh_auth_held") === 0, 3_000),
        `still held: ${await program.metric("auh_auth_held")}`,
      );
      assert.ok(
        await eventually(async () => await openFileCount(program.process.pid) <= baseline, 3_000),
        `${await openFileCount(program.process.pid)} descriptors open, ${baseline} before`,
      );
    },
  );
}

Deno.test("a mint request whose body stalls is answered 408 at --body_timeout, and 33 of them do not lock the address out: the right token still uploads", async () => {
  const dir = await Deno.makeTempDir({ prefix: "auh-mint-stall-" });
  const publishers = join(dir, "publishers.json");
  await Deno.writeTextFile(
    publishers,
    JSON.stringify([{
      name: "stalled",
      issuer: "https://issuer.invalid",
      claims: { repository: "acme/mylib" },
      packages: ["mylib"],
      can: ["upload"],
    }]),
  );
  try {
    await using program = await startProgram([
      "--trusted_publishers",
      publishers,
      "--body_timeout",
      "1",
      "--server_name",
      "localhost",
    ]);
    const stalled: RawConnection[] = [];
    try {
      for (let i = 0; i < 33; i++) {
        const connection = await openConnection(program);
        stalled.push(connection);
        await connection.send(
          'POST /api/oidc/mint_token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"tok',
        );
      }
      const spec: PackageSpec = { name: "after-stall", version: "1.0" };
      const response = await put(
        program,
        `/linux-64/${packageFilename(spec)}`,
        await buildPackage(spec),
      );
      await expectStatus(response, STATUS.Created);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const answers = await Promise.race([
        Promise.all(stalled.map((connection) => connection.readResponse())),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error("stalled mints unanswered after 15 s")),
            15_000,
          );
        }),
      ]).finally(() => clearTimeout(timer));
      assert.deepEqual(
        answers.map((answer) => answer.status),
        Array(33).fill(STATUS.RequestTimeout),
      );
      assert.match(
        new TextDecoder().decode(answers[0]!.body),
        /^Cannot read request body: nothing arrived for 1 s/,
      );
    } finally {
      for (const connection of stalled) connection[Symbol.dispose]();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (const plain of [false, true]) {
  Deno.test(
    `a held wrong token whose client half-closes over ${
      plain ? "plain HTTP" : "TLS"
    } gets no early answer: the connection is closed without one`,
    async () => {
      await using program = await startProgram([], { plain });
      const send = async (i: number) => {
        const connection = await openConnection(program);
        await connection.send(
          `PUT /linux-64/held-1.0-0.conda HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer wrong-${i}\r\nContent-Length: 4\r\n\r\nbody`,
        );
        return connection;
      };
      for (let i = 0; i < 10; i++) {
        using connection = await send(i);
        assert.equal((await connection.readResponse()).status, STATUS.Unauthorized);
      }
      using held = await send(10);
      assert.ok(
        await eventually(async () => await program.metric("auh_auth_held") === 1, 10_000),
        "the 11th failure is held",
      );
      await held.conn.closeWrite();
      await assert.rejects(held.readResponse(), /the connection ended/);
      assert.equal(await program.metric("auh_auth_held"), 0);
    },
  );
}
