/**
 * End-to-end tests of `POST /`, the original tool's upload protocol, through
 * a real TLS server (startTestServer) with real clients: `fetch`, `curl` and
 * the original README's Python `requests` example.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { STATUS } from "../src/http/status.ts";
import { SPOOL_DIR_NAME } from "../src/storage/channel_storage.ts";
import { buildPackage, packageFilename, type PackageSpec } from "./helpers/conda_package.ts";
import {
  snapshotDirectory,
  startTestServer,
  type TestServer,
  uploadForm,
} from "./helpers/test_server.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A built package and what the server should report about it. */
interface Artifact {
  filename: string;
  bytes: Uint8Array<ArrayBuffer>;
  name: string;
  version: string;
  build: string;
  subdir: string;
  sha256: string;
  md5: string;
}

function hex(algorithm: "sha256" | "md5", bytes: Uint8Array): string {
  return createHash(algorithm).update(bytes).digest("hex");
}

async function makeArtifact(spec: PackageSpec): Promise<Artifact> {
  const bytes = new Uint8Array(await buildPackage(spec));
  return {
    filename: packageFilename(spec),
    bytes,
    name: spec.name,
    version: spec.version,
    build: spec.build ?? "0",
    subdir: spec.subdir ?? "linux-64",
    sha256: hex("sha256", bytes),
    md5: hex("md5", bytes),
  };
}

/** The four combinations of format and subdir every client path is tried with. */
function fourArtifacts(prefix: string): Promise<Artifact[]> {
  return Promise.all([
    makeArtifact({ name: `${prefix}-a`, version: "1.0", format: ".conda" }),
    makeArtifact({ name: `${prefix}-b`, version: "2.1.3", build: "py_1", format: ".tar.bz2" }),
    makeArtifact({ name: `${prefix}-c`, version: "0.1", subdir: "noarch", format: ".conda" }),
    makeArtifact({ name: `${prefix}-d`, version: "3", subdir: "noarch", format: ".tar.bz2" }),
  ]);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function concat(chunks: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(chunks.reduce((total, chunk) => total + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

function randomBytes(length: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(length);
  for (let offset = 0; offset < length; offset += 65536) {
    crypto.getRandomValues(bytes.subarray(offset, Math.min(length, offset + 65536)));
  }
  return bytes;
}

/** The 201 body the server must send for `artifact`. */
function expectedBody(artifact: Artifact): Record<string, unknown> {
  return {
    name: artifact.name,
    version: artifact.version,
    build: artifact.build,
    subdir: artifact.subdir,
    filename: artifact.filename,
    size: artifact.bytes.length,
    sha256: artifact.sha256,
    md5: artifact.md5,
    replaced: false,
  };
}

function repodataKey(filename: string): "packages" | "packages.conda" {
  return filename.endsWith(".conda") ? "packages.conda" : "packages";
}

type Repodata = Record<string, Record<string, Record<string, unknown>> | undefined>;

async function readRepodata(server: TestServer, subdir: string): Promise<Repodata> {
  return JSON.parse(await Deno.readTextFile(join(server.channelRoot, subdir, "repodata.json")));
}

async function spoolFiles(server: TestServer): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(join(server.channelRoot, SPOOL_DIR_NAME))) {
    names.push(entry.name);
  }
  return names;
}

/**
 * Asserts a 201 for `artifact` and everything it promises: the body, the
 * byte-identical file, the record in repodata.json (already in place when
 * the answer came) and the same bytes served back by GET.
 */
async function assertPublished(
  server: TestServer,
  artifact: Artifact,
  status: number,
  text: string,
): Promise<void> {
  assert.equal(status, STATUS.Created, text);
  assert.deepEqual(JSON.parse(text), expectedBody(artifact));
  const stored = await Deno.readFile(join(server.channelRoot, artifact.subdir, artifact.filename));
  assert.ok(equalBytes(stored, artifact.bytes), `stored ${artifact.filename} differs`);
  const repodata = await readRepodata(server, artifact.subdir);
  const record = repodata[repodataKey(artifact.filename)]?.[artifact.filename];
  assert.ok(record, `${artifact.subdir}/repodata.json lacks ${artifact.filename}`);
  assert.equal(record.sha256, artifact.sha256);
  assert.equal(record.md5, artifact.md5);
  assert.equal(record.size, artifact.bytes.length);
  assert.equal(record.name, artifact.name);
  assert.equal(record.version, artifact.version);
  assert.equal(record.build, artifact.build);
  assert.equal(record.subdir, artifact.subdir);
  const response = await server.fetch(`/${artifact.subdir}/${artifact.filename}`);
  assert.equal(response.status, STATUS.OK);
  assert.ok(equalBytes(await response.bytes(), artifact.bytes), "served bytes differ");
}

/**
 * Sends a request that must be refused with `status` and a body matching
 * `reason`, and asserts that the channel (files and index) is unchanged and
 * no spool file is left. Returns the response (body consumed) for header checks.
 */
async function expectRefusal(
  server: TestServer,
  status: number,
  reason: RegExp,
  send: () => Promise<Response>,
): Promise<Response> {
  const before = await snapshotDirectory(server.channelRoot);
  const response = await send();
  const text = await response.text();
  assert.equal(response.status, status, text);
  assert.match(text, reason);
  assert.deepEqual(await snapshotDirectory(server.channelRoot), before, "the channel changed");
  assert.deepEqual(await spoolFiles(server), [], "a spool file was left behind");
  return response;
}

function assertUnauthorized(response: Response): void {
  assert.match(response.headers.get("www-authenticate") ?? "", /^Bearer realm="/);
}

/** Starts a server whose channel already holds one published package, so "unchanged" means something. */
async function startSeededServer(
  flags: Parameters<typeof startTestServer>[0] = {},
): Promise<TestServer> {
  const server = await startTestServer(flags);
  try {
    const seed = await makeArtifact({ name: "seed", version: "1.0" });
    const response = await postForm(server, uploadForm(server.token, seed.filename, seed.bytes));
    await assertPublished(server, seed, response.status, await response.text());
  } catch (error) {
    await server[Symbol.asyncDispose]();
    throw error;
  }
  return server;
}

function postForm(server: TestServer, form: FormData, headers?: HeadersInit): Promise<Response> {
  return server.fetch("/", { method: "POST", body: form, ...(headers ? { headers } : {}) });
}

/** One part of a hand-built multipart body. */
interface FormPart {
  name: string;
  filename?: string;
  data: string | Uint8Array;
}

/** A multipart/form-data body built byte by byte, in the given order. */
function multipart(
  parts: FormPart[],
  options: { close?: boolean } = {},
): { body: Uint8Array<ArrayBuffer>; contentType: string } {
  const boundary = `----test-boundary-${crypto.randomUUID()}`;
  const chunks: Uint8Array[] = [];
  for (const part of parts) {
    const filename = part.filename === undefined ? "" : `; filename="${part.filename}"`;
    const type = part.filename === undefined ? "" : "Content-Type: application/octet-stream\r\n";
    chunks.push(
      encoder.encode(
        `--${boundary}\r\nContent-Disposition: form-data; name="${part.name}"${filename}\r\n${type}\r\n`,
      ),
    );
    chunks.push(typeof part.data === "string" ? encoder.encode(part.data) : part.data);
    chunks.push(encoder.encode("\r\n"));
  }
  if (options.close ?? true) chunks.push(encoder.encode(`--${boundary}--\r\n`));
  return { body: concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}

function postMultipart(
  server: TestServer,
  parts: FormPart[],
  options: { close?: boolean; headers?: Record<string, string> } = {},
): Promise<Response> {
  const { body, contentType } = multipart(parts, options);
  return server.fetch("/", {
    method: "POST",
    body,
    headers: { "content-type": contentType, ...options.headers },
  });
}

/** Runs real curl against the server; returns the status and body. */
async function curl(server: TestServer, args: string[]): Promise<{ status: number; text: string }> {
  const output = await new Deno.Command("curl", {
    args: [
      "--silent",
      "--show-error",
      "--max-time",
      "20",
      "--cacert",
      server.caFile,
      "--write-out",
      "\n%{http_code}",
      ...args,
      `${server.url}/`,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(output.success, `curl failed: ${decoder.decode(output.stderr)}`);
  const stdout = decoder.decode(output.stdout);
  const cut = stdout.lastIndexOf("\n");
  return { status: Number(stdout.slice(cut + 1)), text: stdout.slice(0, cut) };
}

async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "form_upload_test_" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Polls `condition` every 10 ms for up to 5 s. */
async function waitFor(condition: () => Promise<boolean>): Promise<boolean> {
  for (let i = 0; i < 500; i++) {
    if (await condition()) return true;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return false;
}

// ---------------------------------------------------------------- success

Deno.test("POST / publishes .conda and .tar.bz2, linux-64 and noarch, sent by curl -F as in the README", async () => {
  await using server = await startTestServer();
  const artifacts = await fourArtifacts("curl");
  await withTempDir(async (dir) => {
    for (const artifact of artifacts) {
      const path = join(dir, artifact.filename);
      await Deno.writeFile(path, artifact.bytes);
      const { status, text } = await curl(server, [
        "-F",
        `token=${server.token}`,
        "-F",
        `artifact=@${path}`,
      ]);
      await assertPublished(server, artifact, status, text);
    }
  });
  assert.deepEqual(await spoolFiles(server), []);
});

Deno.test("POST / publishes .conda and .tar.bz2, linux-64 and noarch, sent as fetch FormData", async () => {
  await using server = await startTestServer();
  for (const artifact of await fourArtifacts("form")) {
    const response = await postForm(
      server,
      uploadForm(server.token, artifact.filename, artifact.bytes),
    );
    await assertPublished(server, artifact, response.status, await response.text());
  }
  assert.deepEqual(await spoolFiles(server), []);
});

Deno.test("POST / accepts Authorization: Bearer (fetch, curl) or Basic (curl -u) instead of the token field", async () => {
  await using server = await startTestServer();
  for (const artifact of await fourArtifacts("bearer")) {
    const response = await postForm(
      server,
      uploadForm(undefined, artifact.filename, artifact.bytes),
      { authorization: `Bearer ${server.token}` },
    );
    await assertPublished(server, artifact, response.status, await response.text());
  }
  await withTempDir(async (dir) => {
    const viaBearer = await makeArtifact({ name: "curl-bearer", version: "1.0" });
    const viaBasic = await makeArtifact({ name: "curl-basic", version: "1.0", format: ".tar.bz2" });
    for (const artifact of [viaBearer, viaBasic]) {
      await Deno.writeFile(join(dir, artifact.filename), artifact.bytes);
    }
    let result = await curl(server, [
      "-H",
      `Authorization: Bearer ${server.token}`,
      "-F",
      `artifact=@${join(dir, viaBearer.filename)}`,
    ]);
    await assertPublished(server, viaBearer, result.status, result.text);
    result = await curl(server, [
      "-u",
      `ci:${server.token}`,
      "-F",
      `artifact=@${join(dir, viaBasic.filename)}`,
    ]);
    await assertPublished(server, viaBasic, result.status, result.text);
  });
});

// ---------------------------------------------------------- Python requests

/** The test snippet of the original README, verbatim. */
const README_EXAMPLE = `import requests

artifacts = [open('my-artifact1-1.0.0-2.tar.bz2', 'rb'),
             open('my-artifact2-3.4.2-0.tar.bz2', 'rb'),
             open('my-artifact3-0.9.1-0.tar.bz2', 'rb'),
            ]
url = 'https://localhost:9999/'
token = 'mysecuretoken'

for artifact in artifacts:
    requests.post(url, data={'token': token}, files={'artifact': artifact},
                  verify=False)
`;

const README_ARTIFACTS: PackageSpec[] = [
  { name: "my-artifact1", version: "1.0.0", build: "2", format: ".tar.bz2" },
  { name: "my-artifact2", version: "3.4.2", build: "0", format: ".tar.bz2" },
  { name: "my-artifact3", version: "0.9.1", build: "0", format: ".tar.bz2" },
];

const HAVE_REQUESTS = await new Deno.Command("python3", {
  args: ["-c", "import requests"],
  stdin: "null",
  stdout: "null",
  stderr: "null",
}).output().then((output) => output.success, () => false);
if (!HAVE_REQUESTS) {
  console.log("Skipping the Python requests tests: `python3 -c 'import requests'` fails");
}

/** Runs `script` with python3 in a directory holding the README's three artifacts. */
async function runReadmeScript(
  script: string,
): Promise<{ artifacts: Artifact[]; stdout: string }> {
  const artifacts = await Promise.all(README_ARTIFACTS.map(makeArtifact));
  return await withTempDir(async (dir) => {
    for (const artifact of artifacts) {
      await Deno.writeFile(join(dir, artifact.filename), artifact.bytes);
    }
    await Deno.writeTextFile(join(dir, "upload.py"), script);
    const output = await new Deno.Command("python3", {
      args: ["upload.py"],
      cwd: dir,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(output.success, `python3 failed: ${decoder.decode(output.stderr)}`);
    return { artifacts, stdout: decoder.decode(output.stdout) };
  });
}

function readmeScript(server: TestServer): string {
  const script = README_EXAMPLE.replace("https://localhost:9999/", `${server.url}/`)
    .replace("'mysecuretoken'", `'${server.token}'`);
  assert.notEqual(script, README_EXAMPLE);
  return script;
}

Deno.test({
  name: "POST / publishes what the README's Python requests example sends (verify=CA file)",
  ignore: !HAVE_REQUESTS,
  fn: async () => {
    await using server = await startTestServer();
    // The README's loop with verify=<CA file>, printing each answer's status and body.
    const printing = readmeScript(server)
      .replace("verify=False", `verify='${server.caFile}'`)
      .replace("    requests.post(url,", "    response = requests.post(url,") +
      "    print(response.status_code, response.text.strip())\n";
    const { artifacts, stdout } = await runReadmeScript(printing);
    const lines = stdout.trim().split("\n");
    assert.equal(lines.length, artifacts.length, stdout);
    for (const [index, artifact] of artifacts.entries()) {
      const line = lines[index]!;
      const space = line.indexOf(" ");
      await assertPublished(server, artifact, Number(line.slice(0, space)), line.slice(space + 1));
    }
  },
});

Deno.test({
  name: "POST / publishes what the README's Python requests example sends, verify=False as written",
  ignore: !HAVE_REQUESTS,
  fn: async () => {
    await using server = await startTestServer();
    const { artifacts } = await runReadmeScript(readmeScript(server));
    for (const artifact of artifacts) {
      // The snippet ignores the answers: check what the server stored and logged.
      const published = server.logs.filter((line) =>
        line.includes(" published ") && line.includes(`package=${artifact.filename}`)
      );
      assert.equal(published.length, 1, server.logs.join("\n"));
      const stored = await Deno.readFile(join(server.channelRoot, "linux-64", artifact.filename));
      assert.ok(equalBytes(stored, artifact.bytes));
      const record = (await readRepodata(server, "linux-64")).packages?.[artifact.filename];
      assert.equal(record?.sha256, artifact.sha256);
    }
  },
});

// ------------------------------------------------------------- 401 and 400 auth

Deno.test("POST / refuses a wrong token with 401 and WWW-Authenticate", async () => {
  await using server = await startSeededServer();
  const artifact = await makeArtifact({ name: "wrong", version: "1.0" });
  const response = await expectRefusal(
    server,
    STATUS.Unauthorized,
    /token is not valid/,
    () => postForm(server, uploadForm(`${server.token}x`, artifact.filename, artifact.bytes)),
  );
  assertUnauthorized(response);
});

Deno.test("POST / refuses a form without a token with 401 and WWW-Authenticate", async () => {
  await using server = await startSeededServer();
  const artifact = await makeArtifact({ name: "missing", version: "1.0" });
  assertUnauthorized(
    await expectRefusal(
      server,
      STATUS.Unauthorized,
      /token/,
      () => postForm(server, uploadForm(undefined, artifact.filename, artifact.bytes)),
    ),
  );
  // A form with a token but no artifact still needs a valid token first.
  assertUnauthorized(
    await expectRefusal(
      server,
      STATUS.Unauthorized,
      /token/,
      () => postMultipart(server, [{ name: "sha256", data: artifact.sha256 }]),
    ),
  );
});

Deno.test("POST / refuses an empty or blank token with 401 and WWW-Authenticate", async () => {
  await using server = await startSeededServer();
  const artifact = await makeArtifact({ name: "empty", version: "1.0" });
  for (const token of ["", "   "]) {
    assertUnauthorized(
      await expectRefusal(
        server,
        STATUS.Unauthorized,
        /no token was sent/,
        () => postForm(server, uploadForm(token, artifact.filename, artifact.bytes)),
      ),
    );
  }
});

Deno.test("POST / refuses a valid token sent after the artifact with 401", async () => {
  await using server = await startSeededServer();
  const artifact = await makeArtifact({ name: "late", version: "1.0" });
  assertUnauthorized(
    await expectRefusal(
      server,
      STATUS.Unauthorized,
      /token field must come before the artifact/,
      () =>
        postMultipart(server, [
          { name: "artifact", filename: artifact.filename, data: artifact.bytes },
          { name: "token", data: server.token },
        ]),
    ),
  );
});

Deno.test("POST / refuses a wrong Bearer token with 401, even beside a valid token field", async () => {
  await using server = await startSeededServer();
  const artifact = await makeArtifact({ name: "bearer", version: "1.0" });
  for (const token of [undefined, server.token]) {
    assertUnauthorized(
      await expectRefusal(
        server,
        STATUS.Unauthorized,
        /token is not valid/,
        () =>
          postForm(server, uploadForm(token, artifact.filename, artifact.bytes), {
            authorization: "Bearer not-the-token",
          }),
      ),
    );
  }
});

Deno.test("POST / refuses a malformed Authorization header with 400", async () => {
  await using server = await startSeededServer();
  const artifact = await makeArtifact({ name: "malformed", version: "1.0" });
  for (
    const authorization of [
      "Bearer",
      `Bearer ${server.token} extra`,
      `Token ${server.token}`,
      "Basic %%%not-base64%%%",
    ]
  ) {
    await expectRefusal(
      server,
      STATUS.BadRequest,
      /Cannot read Authorization header/,
      () =>
        postForm(server, uploadForm(server.token, artifact.filename, artifact.bytes), {
          authorization,
        }),
    );
  }
});

// ------------------------------------------------------------ 409 and fields

Deno.test("POST / answers 409 for an existing filename and leaves the original untouched", async () => {
  await using server = await startTestServer();
  const original = await makeArtifact({ name: "dup", version: "1.0", format: ".tar.bz2" });
  const first = await postForm(server, uploadForm(server.token, original.filename, original.bytes));
  await assertPublished(server, original, first.status, await first.text());
  const other = await makeArtifact({
    name: "dup",
    version: "1.0",
    format: ".tar.bz2",
    files: { "share/dup/other.txt": "different content" },
  });
  assert.equal(other.filename, original.filename);
  assert.notEqual(other.sha256, original.sha256);
  for (const bytes of [original.bytes, other.bytes]) {
    await expectRefusal(
      server,
      STATUS.Conflict,
      /already exists/,
      () => postForm(server, uploadForm(server.token, original.filename, bytes)),
    );
  }
  const stored = await Deno.readFile(join(server.channelRoot, "linux-64", original.filename));
  assert.equal(hex("sha256", stored), original.sha256);
  const record = (await readRepodata(server, "linux-64")).packages?.[original.filename];
  assert.equal(record?.sha256, original.sha256);
});

Deno.test("POST / publishes when the sha256 field matches, before or after the artifact", async () => {
  await using server = await startTestServer();
  const before = await makeArtifact({ name: "sum-before", version: "1.0" });
  let response = await postForm(
    server,
    uploadForm(server.token, before.filename, before.bytes, { sha256: before.sha256 }),
  );
  await assertPublished(server, before, response.status, await response.text());
  const after = await makeArtifact({ name: "sum-after", version: "1.0", format: ".tar.bz2" });
  response = await postMultipart(server, [
    { name: "token", data: server.token },
    { name: "artifact", filename: after.filename, data: after.bytes },
    { name: "sha256", data: after.sha256.toUpperCase() },
  ]);
  await assertPublished(server, after, response.status, await response.text());
});

Deno.test("POST / refuses a mismatching sha256 field with 400 and publishes nothing", async () => {
  await using server = await startSeededServer();
  const artifact = await makeArtifact({ name: "sum", version: "1.0" });
  const wrong = hex("sha256", encoder.encode("something else"));
  for (const sha256 of [wrong, "not-a-sha256"]) {
    await expectRefusal(
      server,
      STATUS.BadRequest,
      /sha256 mismatch/,
      () =>
        postForm(server, uploadForm(server.token, artifact.filename, artifact.bytes, { sha256 })),
    );
  }
});

Deno.test("POST / publishes when the arch field names the package's subdir", async () => {
  await using server = await startTestServer();
  const linux = await makeArtifact({ name: "arch-linux", version: "1.0" });
  const noarch = await makeArtifact({
    name: "arch-noarch",
    version: "1.0",
    subdir: "noarch",
    format: ".tar.bz2",
  });
  for (const artifact of [linux, noarch]) {
    const response = await postForm(
      server,
      uploadForm(server.token, artifact.filename, artifact.bytes, { arch: artifact.subdir }),
    );
    await assertPublished(server, artifact, response.status, await response.text());
  }
});

Deno.test("POST / refuses an arch field that differs from the package's subdir with 422", async () => {
  await using server = await startSeededServer();
  const artifact = await makeArtifact({ name: "arch", version: "1.0" });
  for (const arch of ["osx-64", "noarch", "linux-64x"]) {
    await expectRefusal(
      server,
      STATUS.UnprocessableContent,
      /it is for subdir linux-64/,
      () => postForm(server, uploadForm(server.token, artifact.filename, artifact.bytes, { arch })),
    );
  }
});

// ------------------------------------------------------- refused artifacts

Deno.test("POST / refuses a path-like filename with 400", async () => {
  await using server = await startSeededServer();
  const artifact = await makeArtifact({ name: "x", version: "1", build: "0" });
  for (
    const filename of ["../x-1-0.conda", "a/b-1-0.conda", "..\\x-1-0.conda", ".x-1-0.conda"]
  ) {
    await expectRefusal(
      server,
      STATUS.BadRequest,
      /Cannot accept filename/,
      () =>
        postMultipart(server, [
          { name: "token", data: server.token },
          { name: "artifact", filename, data: artifact.bytes },
        ]),
    );
  }
  assert.equal(await Deno.stat(join(server.channelRoot, "..", "x-1-0.conda")).catch(() => 0), 0);
});

Deno.test("POST / refuses a filename without a package extension with 415", async () => {
  await using server = await startSeededServer();
  const artifact = await makeArtifact({ name: "x", version: "1", build: "0" });
  for (const filename of ["x-1-0.zip", "x-1-0.tar.gz", "x-1-0.conda.txt"]) {
    await expectRefusal(
      server,
      STATUS.UnsupportedMediaType,
      /extension is not \.tar\.bz2 or \.conda/,
      () => postForm(server, uploadForm(server.token, filename, artifact.bytes)),
    );
  }
});

Deno.test("POST / refuses corrupt packages with 422", async () => {
  await using server = await startSeededServer();
  const conda = await makeArtifact({ name: "bad", version: "1.0", format: ".conda" });
  const bz2 = await makeArtifact({ name: "bad", version: "1.0", format: ".tar.bz2" });
  const garbage = randomBytes(5000);
  const cases: [string, Uint8Array][] = [
    [conda.filename, garbage],
    [bz2.filename, garbage],
    [conda.filename, concat([encoder.encode("PK\x03\x04"), garbage])],
    [bz2.filename, concat([encoder.encode("BZh9"), garbage])],
    [conda.filename, conda.bytes.subarray(0, Math.floor(conda.bytes.length / 2))],
    [bz2.filename, bz2.bytes.subarray(0, Math.floor(bz2.bytes.length / 2))],
    [conda.filename, new Uint8Array()],
  ];
  for (const [filename, bytes] of cases) {
    await expectRefusal(
      server,
      STATUS.UnprocessableContent,
      /^Cannot /,
      () => postForm(server, uploadForm(server.token, filename, bytes)),
    );
  }
});

Deno.test("POST / refuses a package whose index.json name differs from its filename with 422", async () => {
  await using server = await startSeededServer();
  for (const format of [".conda", ".tar.bz2"] as const) {
    const liar = await makeArtifact({
      name: "honest",
      version: "1.0",
      format,
      extraIndex: { name: "liar" },
    });
    await expectRefusal(
      server,
      STATUS.UnprocessableContent,
      /name "liar" does not match filename/,
      () => postForm(server, uploadForm(server.token, liar.filename, liar.bytes)),
    );
  }
});

Deno.test("POST / refuses a package whose subdir is not a well-formed subdir name with 422", async () => {
  await using server = await startSeededServer();
  const artifact = await makeArtifact({
    name: "alien",
    version: "1.0",
    extraIndex: { subdir: "Plan9_64" },
  });
  await expectRefusal(
    server,
    STATUS.UnprocessableContent,
    /"Plan9_64" is not a subdir name/,
    () => postForm(server, uploadForm(server.token, artifact.filename, artifact.bytes)),
  );
  assert.equal(await Deno.stat(join(server.channelRoot, "Plan9_64")).catch(() => 0), 0);
});

Deno.test("POST / takes a package for a new subdir name, and one whose index.json has no subdir", async () => {
  await using server = await startSeededServer();
  const alien = await makeArtifact({ name: "alien", version: "1.0", subdir: "plan9-64" });
  const response = await postForm(server, uploadForm(server.token, alien.filename, alien.bytes));
  assert.equal(response.status, 201, await response.text());
  const repodata = JSON.parse(
    await Deno.readTextFile(join(server.channelRoot, "plan9-64/repodata.json")),
  );
  assert.deepEqual(Object.keys(repodata["packages.conda"]), [alien.filename]);
  // nano-2.4.1 style: platform and arch, no subdir
  const old = await makeArtifact({
    name: "oldie",
    version: "1.0",
    subdir: "osx-64",
    extraIndex: { subdir: undefined },
  });
  const second = await postForm(server, uploadForm(server.token, old.filename, old.bytes));
  assert.equal(second.status, 201, await second.text());
  assert.ok(await Deno.stat(join(server.channelRoot, "osx-64", old.filename)));
});

// ------------------------------------------------------- malformed requests

// application/octet-stream (or X-File-Name) on POST / is the legacy raw upload, not refused here.
Deno.test("POST / refuses a body that is not multipart/form-data with 415", async () => {
  await using server = await startSeededServer();
  const artifact = await makeArtifact({ name: "raw", version: "1.0" });
  const bodies: [string | undefined, Uint8Array<ArrayBuffer>][] = [
    ["application/x-www-form-urlencoded", encoder.encode(`token=${server.token}`)],
    ["text/plain", encoder.encode("hello")],
    [undefined, artifact.bytes],
  ];
  for (const [contentType, body] of bodies) {
    await expectRefusal(
      server,
      STATUS.UnsupportedMediaType,
      /expected multipart\/form-data/,
      () =>
        server.fetch("/", {
          method: "POST",
          body,
          headers: {
            authorization: `Bearer ${server.token}`,
            ...(contentType ? { "content-type": contentType } : {}),
          },
        }),
    );
  }
});

Deno.test("POST / refuses a form without a single proper artifact field with 400", async () => {
  await using server = await startSeededServer();
  const artifact = await makeArtifact({ name: "fields", version: "1.0" });
  const token = { name: "token", data: server.token };
  const cases: [RegExp, FormPart[]][] = [
    [/no artifact field/, [token]],
    [/no artifact field/, [token, { name: "file", filename: artifact.filename, data: "x" }]],
    [/it has no filename/, [token, { name: "artifact", data: artifact.bytes }]],
    [/more than one artifact/, [
      token,
      { name: "artifact", filename: artifact.filename, data: artifact.bytes },
      { name: "artifact", filename: artifact.filename, data: artifact.bytes },
    ]],
  ];
  for (const [reason, parts] of cases) {
    await expectRefusal(server, STATUS.BadRequest, reason, () => postMultipart(server, parts));
  }
});

Deno.test("POST / refuses a multipart body without its closing boundary with 400", async () => {
  await using server = await startSeededServer();
  const artifact = await makeArtifact({ name: "cut", version: "1.0" });
  const { body, contentType } = multipart([
    { name: "token", data: server.token },
    { name: "artifact", filename: artifact.filename, data: artifact.bytes },
  ], { close: false });
  await expectRefusal(
    server,
    STATUS.BadRequest,
    /ended before the closing boundary/,
    () =>
      server.fetch("/", {
        method: "POST",
        body,
        headers: { "content-type": contentType, "content-length": String(body.length) },
      }),
  );
});

Deno.test("PUT and PATCH on / answer 405 with an Allow header", async () => {
  await using server = await startSeededServer();
  const artifact = await makeArtifact({ name: "put", version: "1.0" });
  for (const method of ["PUT", "PATCH"]) {
    const response = await expectRefusal(
      server,
      STATUS.MethodNotAllowed,
      new RegExp(`Cannot ${method} /`),
      () =>
        server.fetch("/", {
          method,
          body: uploadForm(server.token, artifact.filename, artifact.bytes),
        }),
    );
    const allow = (response.headers.get("allow") ?? "").split(",").map((item) => item.trim());
    for (const allowed of ["GET", "HEAD", "POST"]) assert.ok(allow.includes(allowed), allow.join());
    assert.ok(!allow.includes(method), allow.join());
  }
});

// --------------------------------------------------------------------- 413

/** A package well over 64 KiB (incompressible payload). */
function bigArtifact(): Promise<Artifact> {
  return makeArtifact({
    name: "big",
    version: "1.0",
    files: { "share/big/blob.bin": randomBytes(200 * 1024) },
  });
}

Deno.test("POST / answers 413 from Content-Length before reading a body over --max_upload_size", async () => {
  await using server = await startSeededServer({ flags: { maxUploadSize: "64K" } });
  const artifact = await bigArtifact();
  assert.ok(artifact.bytes.length > 200 * 1024);
  await expectRefusal(
    server,
    STATUS.ContentTooLarge,
    /^Cannot accept artifact: \d+ bytes is larger than the limit of 65536 bytes/,
    () =>
      postMultipart(server, [
        { name: "token", data: server.token },
        { name: "artifact", filename: artifact.filename, data: artifact.bytes },
      ]),
  );
  // A package under the limit is still accepted.
  const small = await makeArtifact({ name: "small", version: "1.0" });
  const response = await postForm(server, uploadForm(server.token, small.filename, small.bytes));
  await assertPublished(server, small, response.status, await response.text());
});

/** A multipart body streamed in 16 KiB chunks, with no Content-Length. */
function streamedUpload(token: string, artifact: Artifact): {
  body: ReadableStream<Uint8Array>;
  contentType: string;
} {
  const { body, contentType } = multipart([
    { name: "token", data: token },
    { name: "artifact", filename: artifact.filename, data: artifact.bytes },
  ]);
  let offset = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= body.length) {
        controller.close();
        return;
      }
      controller.enqueue(body.slice(offset, offset + 16384));
      offset += 16384;
    },
  });
  return { body: stream, contentType };
}

Deno.test("POST / answers 413 from the streamed byte count for a chunked body over --max_upload_size", async () => {
  await using server = await startSeededServer({ flags: { maxUploadSize: "64K" } });
  const artifact = await bigArtifact();
  const ca = await Deno.readTextFile(server.caFile);
  // HTTP/1.1 sends the stream with Transfer-Encoding: chunked (the server speaks HTTP/1.1
  // only: ALPN offers http/1.1, so a client that would use HTTP/2 falls back to it).
  for (const http2 of [false, true]) {
    using client = Deno.createHttpClient({ caCerts: [ca], http1: true, http2 });
    await expectRefusal(
      server,
      STATUS.ContentTooLarge,
      /^Cannot accept artifact: it is larger than the limit of 65536 bytes/,
      () => {
        const { body, contentType } = streamedUpload(server.token, artifact);
        return fetch(`${server.url}/`, {
          method: "POST",
          body,
          headers: { "content-type": contentType },
          client,
        });
      },
    );
  }
  // The same way, a package under the limit is accepted.
  const small = await makeArtifact({ name: "small-streamed", version: "1.0" });
  const { body, contentType } = streamedUpload(server.token, small);
  const response = await server.fetch("/", {
    method: "POST",
    body,
    headers: { "content-type": contentType },
  });
  await assertPublished(server, small, response.status, await response.text());
});

Deno.test("POST / removes the spool file of a client that disconnects mid-upload", async () => {
  await using server = await startSeededServer();
  const artifact = await makeArtifact({ name: "gone", version: "1.0" });
  for (const protocol of ["--http1.1", "--http2"]) {
    const before = await snapshotDirectory(server.channelRoot);
    const { body, contentType } = multipart([
      { name: "token", data: server.token },
      { name: "artifact", filename: artifact.filename, data: artifact.bytes },
    ]);
    // curl -T - streams stdin as it comes; it is killed before the body is complete.
    const child = new Deno.Command("curl", {
      args: [
        "--silent",
        protocol,
        "--cacert",
        server.caFile,
        "-X",
        "POST",
        "-T",
        "-",
        "-H",
        `Content-Type: ${contentType}`,
        `${server.url}/`,
      ],
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const writer = child.stdin.getWriter();
    try {
      await writer.write(body.subarray(0, body.length - 64));
      const spooling = await waitFor(async () => (await spoolFiles(server)).length === 1);
      assert.ok(spooling, "the upload never reached its spool file");
    } finally {
      child.kill("SIGKILL");
      await child.status;
      await writer.close().catch(() => {});
    }
    assert.ok(await waitFor(async () => (await spoolFiles(server)).length === 0), protocol);
    assert.deepEqual(await snapshotDirectory(server.channelRoot), before, protocol);
  }
});

// ----------------------------------------------------------------- parallel

Deno.test("POST / publishes 16 distinct packages uploaded at once, each indexed exactly once", async () => {
  await using server = await startTestServer();
  const subdirs = ["linux-64", "noarch", "osx-arm64", "win-64"];
  const artifacts = await Promise.all(
    Array.from({ length: 16 }, (_, i) =>
      makeArtifact({
        name: `parallel${i}`,
        version: `1.${i}`,
        subdir: subdirs[i % 4]!,
        format: Math.floor(i / 4) % 2 === 0 ? ".conda" : ".tar.bz2",
      })),
  );
  const answers = await Promise.all(artifacts.map(async (artifact) => {
    const response = await postForm(
      server,
      uploadForm(server.token, artifact.filename, artifact.bytes),
    );
    return { status: response.status, text: await response.text() };
  }));
  for (const [index, artifact] of artifacts.entries()) {
    await assertPublished(server, artifact, answers[index]!.status, answers[index]!.text);
  }
  for (const subdir of subdirs) {
    const raw = await Deno.readTextFile(join(server.channelRoot, subdir, "repodata.json"));
    const repodata = JSON.parse(raw) as Repodata;
    const expected = artifacts.filter((artifact) => artifact.subdir === subdir);
    const listed = [
      ...Object.keys(repodata.packages ?? {}),
      ...Object.keys(repodata["packages.conda"] ?? {}),
    ].sort();
    assert.deepEqual(listed, expected.map((artifact) => artifact.filename).sort());
    for (const artifact of expected) {
      assert.equal(raw.split(`${JSON.stringify(artifact.filename)}:`).length - 1, 1);
      assert.equal(
        repodata[repodataKey(artifact.filename)]?.[artifact.filename]?.sha256,
        artifact.sha256,
      );
    }
  }
  assert.deepEqual(await spoolFiles(server), []);
});

Deno.test("POST / publishes exactly one of 8 concurrent uploads of the same filename, the rest 409", async () => {
  await using server = await startTestServer();
  const contenders = await Promise.all(
    Array.from({ length: 8 }, (_, i) =>
      makeArtifact({
        name: "race",
        version: "1.0",
        files: { "share/race/contender.txt": `contender ${i}\n` },
      })),
  );
  assert.equal(new Set(contenders.map((artifact) => artifact.sha256)).size, 8);
  const answers = await Promise.all(contenders.map(async (artifact) => {
    const response = await postForm(
      server,
      uploadForm(server.token, artifact.filename, artifact.bytes),
    );
    return { status: response.status, text: await response.text() };
  }));
  const statuses = answers.map((answer) => answer.status);
  assert.equal(statuses.filter((status) => status === STATUS.Created).length, 1, String(statuses));
  assert.equal(statuses.filter((status) => status === STATUS.Conflict).length, 7, String(statuses));
  const winner = statuses.indexOf(STATUS.Created);
  await assertPublished(
    server,
    contenders[winner]!,
    answers[winner]!.status,
    answers[winner]!.text,
  );
  assert.deepEqual(await spoolFiles(server), []);
  assert.deepEqual(
    (await snapshotDirectory(server.channelRoot)).filter((line) => line.includes("race-")),
    [`linux-64/race-1.0-0.conda ${contenders[winner]!.sha256}`],
  );
});

// --------------------------------------------------------------------- logs

Deno.test("POST / logs one line per request and per upload, and never the token", async () => {
  await using server = await startTestServer();
  const first = await makeArtifact({ name: "log-form", version: "1.0" });
  const second = await makeArtifact({ name: "log-bearer", version: "1.0", format: ".tar.bz2" });
  const wrongToken = `wrong-${crypto.randomUUID()}`;
  const logStart = server.logs.length;
  const statuses: number[] = [];
  for (
    const send of [
      () => postForm(server, uploadForm(server.token, first.filename, first.bytes)),
      () =>
        postForm(server, uploadForm(undefined, second.filename, second.bytes), {
          authorization: `Bearer ${server.token}`,
        }),
      () => postForm(server, uploadForm(wrongToken, first.filename, first.bytes)),
      () => server.fetch("/linux-64/repodata.json"),
    ]
  ) {
    const response = await send();
    const text = await response.text();
    assert.ok(!text.includes(server.token) && !text.includes(wrongToken), text);
    statuses.push(response.status);
  }
  assert.deepEqual(statuses, [STATUS.Created, STATUS.Created, STATUS.Unauthorized, STATUS.OK]);
  const lines = server.logs.slice(logStart);
  const requests = lines.filter((line) => / INFO request method=/.test(line));
  assert.equal(requests.length, 4, lines.join("\n"));
  for (const [index, status] of statuses.entries()) {
    assert.match(requests[index]!, new RegExp(` status=${status} `));
  }
  const published = lines.filter((line) => / INFO published /.test(line));
  assert.equal(published.length, 2, lines.join("\n"));
  const principals = published.map((line) => /\bby=(token:[0-9a-f]{8})(?: |$)/.exec(line)?.[1]);
  assert.match(published[0]!, new RegExp(`\\bpackage=${first.filename} `));
  assert.match(published[1]!, new RegExp(`\\bpackage=${second.filename} `));
  assert.ok(principals[0], published[0]);
  assert.equal(principals[1], principals[0], "the same token is the same principal");
  for (const line of server.logs) {
    assert.ok(!line.includes(server.token), `the token is in a log line: ${line}`);
    assert.ok(!line.includes(wrongToken), `a wrong token is in a log line: ${line}`);
  }
});
