/**
 * The real program as users run it: `deno run <shipped permissions> main.ts`
 * in a subprocess, checked by its stdout, stderr, exit code and by uploads
 * with real curl.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { SERVER_FLAGS } from "../src/cli/command_line.ts";
import { mapLimited } from "../src/map_limited.ts";
import { writePackage } from "./helpers/conda_package.ts";
import {
  curlUpload,
  DENO_JSON,
  freePort,
  type ProgramResult,
  runProgram,
  startServerProcess,
  writeTestTls,
} from "./helpers/server_process.ts";
import { tempDir } from "./helpers/temp_dir.ts";

const ORIGINAL_SALT = "42679ad04d44c96ed27470c02bfb28c3";
const PROGRAM = "artifact-upload-handler";

/** The original tool's algorithm, by Python itself: sha256(salt + token), hex. */
async function pythonHash(token: string, salt = ORIGINAL_SALT): Promise<string> {
  const output = await new Deno.Command("python3", {
    args: [
      "-c",
      "import hashlib, sys; print(hashlib.sha256((sys.argv[1] + sys.argv[2]).encode()).hexdigest())",
      salt,
      token,
    ],
  }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  return new TextDecoder().decode(output.stdout).trim();
}

/** Asserts a start-up failure: `code`, nothing on stdout, one `program: ...` line on stderr. */
function assertOneLineFailure(result: ProgramResult, code: number, pattern: RegExp): void {
  const detail = `stdout:\n${result.stdout}\nstderr:\n${result.stderr}`;
  assert.equal(result.code, code, detail);
  assert.equal(result.stdout, "", detail);
  const lines = result.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `expected one line on stderr:\n${result.stderr}`);
  assert.match(lines[0]!, new RegExp(`^${PROGRAM}: `), detail);
  assert.match(lines[0]!, pattern, detail);
  assert.doesNotMatch(result.stderr, /Uncaught|\n\s+at /, detail);
}

const TOKEN = "mysecuretoken";
const TOKEN_HASH = await pythonHash(TOKEN);

Deno.test("--help lists every flag, short and long names, and the AUH_ variables", async () => {
  const [result, short] = await Promise.all([runProgram(["--help"]), runProgram(["-h"])]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stderr, "");
  const help = result.stdout;
  // the original tool's flags are a contract
  for (
    const [short, long, value] of [
      ["d", "write_dir", "WRITE_DIR"],
      ["p", "port", "PORT"],
      ["e", "conda_exe", "CONDA_EXE"],
      ["c", "certfile", "CERTFILE"],
      ["k", "keyfile", "KEYFILE"],
      ["t", "token_hash", "TOKEN_HASH"],
      ["h", "help", ""],
    ]
  ) {
    assert.match(help, new RegExp(`^  -${short}, --${long}\\b${value ? ` ${value}` : ""}`, "m"));
  }
  for (const [name, flag] of Object.entries(SERVER_FLAGS)) {
    const short = flag.short ? `-${flag.short}, ` : "    ";
    assert.ok(help.includes(`  ${short}--${name}`), `--${name} is not in --help`);
    if (name !== "help" && name !== "version") {
      assert.ok(help.includes(`[AUH_${name.toUpperCase()}]`), `AUH_${name.toUpperCase()} missing`);
    }
  }
  for (const subcommand of ["hash-token", "generate-token", "index CHANNEL_ROOT", "--dev"]) {
    assert.ok(help.includes(subcommand), `${subcommand} is not in --help`);
  }
  assert.match(help, /--write-dir/);
  // -h is the same
  assert.equal(short.stdout, help);
});

Deno.test("--version prints the version of deno.json", async () => {
  const { version } = JSON.parse(await Deno.readTextFile(DENO_JSON)) as { version: string };
  const result = await runProgram(["--version"]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, `${PROGRAM} ${version}\n`);
  assert.equal(result.stderr, "");
});

Deno.test("hash-token TOKEN equals the original tool's salted sha256", async () => {
  const tokens = [TOKEN, "tök€n with spaces"];
  const results = await mapLimited(tokens, 2, (token) => runProgram(["hash-token", token]));
  for (const [index, result] of results.entries()) {
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, `${await pythonHash(tokens[index]!)}\n`);
  }
  // the README's example token
  assert.equal(TOKEN_HASH, "f4e7b109e7aaef9a56f019d83fba027513ee8f63faf73fbb3c993071089eeb81");
});

Deno.test("hash-token reads the token from stdin, and --salt / AUH_SALT change the salt", async () => {
  const [fromStdin, salted, fromEnv, empty] = await Promise.all([
    runProgram(["hash-token"], { stdin: `${TOKEN}\n` }),
    runProgram(["hash-token", "--salt", "pepper", TOKEN]),
    runProgram(["hash-token", TOKEN], { env: { AUH_SALT: "pepper" } }),
    runProgram(["hash-token"], { stdin: "" }),
  ]);
  assert.equal(fromStdin.code, 0, fromStdin.stderr);
  assert.equal(fromStdin.stdout, `${TOKEN_HASH}\n`);

  assert.equal(salted.code, 0, salted.stderr);
  assert.equal(salted.stdout, `${await pythonHash(TOKEN, "pepper")}\n`);
  assert.notEqual(salted.stdout, `${TOKEN_HASH}\n`);

  assert.equal(fromEnv.stdout, salted.stdout);

  assert.equal(empty.code, 2);
  assert.match(empty.stderr, /^artifact-upload-handler: hash-token needs a TOKEN/);
});

Deno.test("generate-token prints a fresh token and its hash", async () => {
  const parse = (result: ProgramResult) => {
    assert.equal(result.code, 0, result.stderr);
    const match = /^token:\s+(\S+)\ntoken hash:\s+([0-9a-f]{64})\n$/.exec(result.stdout);
    assert.ok(match, result.stdout);
    return { token: match[1]!, hash: match[2]! };
  };
  const [firstRun, secondRun] = await Promise.all([
    runProgram(["generate-token"]),
    runProgram(["generate-token", "--salt", "pepper"]),
  ]);
  const first = parse(firstRun);
  assert.match(first.token, /^[A-Za-z0-9_-]{43}$/);
  assert.equal(first.hash, await pythonHash(first.token));
  const second = parse(secondRun);
  assert.notEqual(second.token, first.token);
  assert.equal(second.hash, await pythonHash(second.token, "pepper"));
});

Deno.test("start-up problems are one clear line on stderr and a non-zero exit", async (t) => {
  await using dir = await tempDir("auh-cli-");
  const channel = join(dir.path, "channel");
  await Deno.mkdir(channel);
  const tls = await writeTestTls(dir.path);
  const notPem = join(dir.path, "not-pem.crt");
  await Deno.writeTextFile(notPem, "this is not a certificate\n");
  const aFile = join(dir.path, "a-file");
  await Deno.writeTextFile(aFile, "");
  const good = ["-p", "0", "-c", tls.certFile, "-k", tls.keyFile];

  const cases: [string, string[], number, RegExp][] = [
    ["no token hash", ["-d", channel, ...good], 1, /no token hash given/],
    ["malformed token hash", ["-d", channel, ...good, "-t", "eccd989b"], 1, /not 64 hex digits/],
    ["no WRITE_DIR", [...good, "-t", TOKEN_HASH], 1, /no channel directory given/],
    [
      "WRITE_DIR that does not exist",
      ["-d", join(dir.path, "missing"), ...good, "-t", TOKEN_HASH],
      1,
      /missing does not exist/,
    ],
    [
      "WRITE_DIR that is a file",
      ["-d", aFile, ...good, "-t", TOKEN_HASH],
      1,
      /a-file is not a directory/,
    ],
    [
      "missing certificate file",
      [
        "-d",
        channel,
        "-p",
        "0",
        "-c",
        join(dir.path, "none.crt"),
        "-k",
        tls.keyFile,
        "-t",
        TOKEN_HASH,
      ],
      1,
      /cannot read certificate .*none\.crt/,
    ],
    [
      "certificate that is not PEM",
      ["-d", channel, "-p", "0", "-c", notPem, "-k", tls.keyFile, "-t", TOKEN_HASH],
      1,
      /not-pem\.crt is not a PEM certificate/,
    ],
    [
      "certificate without key",
      ["-d", channel, "-p", "0", "-c", tls.certFile, "-t", TOKEN_HASH],
      1,
      /-c CERTFILE and -k KEYFILE must be given together/,
    ],
    [
      "no certificate and no --insecure_no_tls",
      ["-d", channel, "-p", "0", "-t", TOKEN_HASH],
      1,
      /no TLS certificate given.*--insecure_no_tls/,
    ],
    ["bad port", ["-d", channel, ...good, "-t", TOKEN_HASH, "-p", "99999"], 1, /port "99999"/],
    ["unknown flag", ["-d", channel, "--no-such-flag", "-t", TOKEN_HASH], 2, /--no-such-flag/],
  ];
  // the runs are independent: run them side by side, then check each
  const results = await mapLimited(cases, 3, ([, args]) => runProgram(args));
  for (const [index, [name, , code, pattern]] of cases.entries()) {
    await t.step(name, () => assertOneLineFailure(results[index]!, code, pattern));
  }

  const readOnly = join(dir.path, "read-only");
  await Deno.mkdir(readOnly, { mode: 0o555 });
  await Deno.chmod(readOnly, 0o555);
  let bypassesModes = false;
  try {
    await Deno.writeTextFile(join(readOnly, "probe"), "");
    bypassesModes = true;
  } catch {
    // as it should be
  }
  if (bypassesModes) {
    console.log("skipping the unwritable WRITE_DIR case: this user writes through mode 555");
  }
  await t.step({
    name: "WRITE_DIR that is not writable",
    ignore: bypassesModes,
    fn: async () => {
      assertOneLineFailure(
        await runProgram(["-d", readOnly, ...good, "-t", TOKEN_HASH]),
        1,
        /read-only is not writable/,
      );
    },
  });

  await t.step("port already taken", async () => {
    using listener = Deno.listen({ hostname: "0.0.0.0", port: 0 });
    const port = String(listener.addr.port);
    const result = await runProgram(["-d", channel, ...good, "-t", TOKEN_HASH, "-p", port]);
    assert.equal(result.code, 1, result.stderr);
    assert.equal(result.stdout, "");
    // progress lines of the start-up may come first; the problem is one line, the last
    const problems = result.stderr.trimEnd().split("\n").filter((line) => !/^\S+ INFO /.test(line));
    assert.deepEqual(problems, [`${PROGRAM}: Cannot start: port ${port} is already in use`]);
    assert.match(result.stderr.trimEnd().split("\n").at(-1)!, /already in use/);
  });
});

Deno.test("long names work with dashes and underscores", async () => {
  await using dir = await tempDir("auh-cli-");
  const channel = join(dir.path, "channel");
  await Deno.mkdir(channel);
  const file = await writePackage(dir.path, { name: "spelled", version: "1.0" });
  for (
    const args of [
      ["--write-dir", channel, "--token-hash", TOKEN_HASH, "--insecure-no-tls", "--port", "0"],
      [`--write_dir=${channel}`, `--token_hash=${TOKEN_HASH}`, "--insecure_no_tls", "--port=0"],
    ]
  ) {
    await using server = await startServerProcess(args);
    assert.match(server.url, /^http:\/\/localhost:\d+$/);
    const wrong = await curlUpload(server.url, { token: "wrong", file });
    assert.equal(wrong.status, 401, wrong.body);
    const right = await curlUpload(server.url, { token: TOKEN, file });
    assert.ok(right.status === 201 || right.status === 409, right.body);
  }
  assert.ok((await Deno.stat(join(channel, "linux-64", "spelled-1.0-0.conda"))).isFile);
});

Deno.test("the token hash comes from --token_hash_file and from AUH_TOKEN_HASH", async () => {
  await using dir = await tempDir("auh-cli-");
  const channel = join(dir.path, "channel");
  await Deno.mkdir(channel);
  const tls = await writeTestTls(dir.path);
  const fileToken = "token-from-file";
  const hashFile = join(dir.path, "token_hashes");
  await Deno.writeTextFile(
    hashFile,
    `# CI token, rotated 2024\n${
      (await pythonHash(fileToken)).toUpperCase()
    }  # uppercase is fine\n\n`,
  );
  const tlsArgs = ["-c", tls.certFile, "-k", tls.keyFile];
  {
    await using server = await startServerProcess([
      "-d",
      channel,
      "-p",
      "0",
      ...tlsArgs,
      "--token_hash_file",
      hashFile,
    ]);
    assert.match(server.url, /^https:\/\/localhost:\d+$/);
    const file = await writePackage(dir.path, { name: "from-file", version: "1.0" });
    const wrong = await curlUpload(server.url, { token: TOKEN, file }, { caFile: tls.caFile });
    assert.equal(wrong.status, 401, wrong.body);
    const result = await curlUpload(server.url, { token: fileToken, file }, {
      caFile: tls.caFile,
    });
    assert.equal(result.status, 201, result.body);
    assert.ok(server.stderr.some((line) => /INFO listening .*tokens=1\b/.test(line)));
  }
  {
    const envToken = "token-from-env";
    await using server = await startServerProcess(["-p", "0", ...tlsArgs], {
      env: { AUH_TOKEN_HASH: await pythonHash(envToken), AUH_WRITE_DIR: channel },
    });
    const file = await writePackage(dir.path, { name: "from-env", version: "1.0" });
    const wrong = await curlUpload(server.url, { token: fileToken, file }, { caFile: tls.caFile });
    assert.equal(wrong.status, 401, wrong.body);
    const result = await curlUpload(server.url, { token: envToken, file }, { caFile: tls.caFile });
    assert.equal(result.status, 201, result.body);
  }
});

Deno.test("two token hashes are active at once: both tokens can upload", async () => {
  await using dir = await tempDir("auh-cli-");
  const channel = join(dir.path, "channel");
  await Deno.mkdir(channel);
  const [oldToken, newToken] = ["old-ci-token", "new-ci-token"];
  await using server = await startServerProcess([
    "-d",
    channel,
    "-p",
    "0",
    "--insecure_no_tls",
    "-t",
    await pythonHash(oldToken),
    "-t",
    await pythonHash(newToken),
  ]);
  const first = await writePackage(dir.path, { name: "first", version: "1.0" });
  const second = await writePackage(dir.path, { name: "second", version: "1.0" });
  const third = await writePackage(dir.path, { name: "third", version: "1.0" });
  assert.equal((await curlUpload(server.url, { token: oldToken, file: first })).status, 201);
  assert.equal((await curlUpload(server.url, { token: newToken, file: second })).status, 201);
  assert.equal((await curlUpload(server.url, { token: "other", file: third })).status, 401);
  const repodata = JSON.parse(
    await Deno.readTextFile(join(channel, "linux-64", "repodata.json")),
  ) as { "packages.conda": Record<string, unknown> };
  assert.deepEqual(Object.keys(repodata["packages.conda"]).sort(), [
    "first-1.0-0.conda",
    "second-1.0-0.conda",
  ]);
});

Deno.test("WRITE_DIR ending in linux-64 means its parent is the channel root", async () => {
  await using dir = await tempDir("auh-cli-");
  const channel = join(dir.path, "channel");
  await Deno.mkdir(join(channel, "linux-64"), { recursive: true });
  await using server = await startServerProcess([
    "-d",
    join(channel, "linux-64"),
    "-p",
    "0",
    "--insecure_no_tls",
    "-t",
    TOKEN_HASH,
  ]);
  const said = await server.waitForLine(/WRITE_DIR names a subdir/);
  assert.ok(said.includes(`channel=${channel}`), said);
  const file = await writePackage(dir.path, { name: "sub", version: "1.0", format: ".tar.bz2" });
  const result = await curlUpload(server.url, { token: TOKEN, file });
  assert.equal(result.status, 201, result.body);
  assert.ok((await Deno.stat(join(channel, "linux-64", "sub-1.0-0.tar.bz2"))).isFile);
  await assert.rejects(Deno.stat(join(channel, "linux-64", "linux-64")), Deno.errors.NotFound);
  const repodata = JSON.parse(
    await Deno.readTextFile(join(channel, "linux-64", "repodata.json")),
  ) as { packages: Record<string, unknown> };
  assert.deepEqual(Object.keys(repodata.packages), ["sub-1.0-0.tar.bz2"]);
});

Deno.test("the seed README's command line works and curl can upload", async () => {
  await using dir = await tempDir("auh-cli-");
  const channel = join(dir.path, "channel");
  await Deno.mkdir(join(channel, "linux-64"), { recursive: true });
  const tls = await writeTestTls(dir.path);
  const calls = join(dir.path, "conda-calls.txt");
  const conda = join(dir.path, "conda");
  // a stand-in for `conda`: records its arguments, indexes nothing, succeeds
  await Deno.writeTextFile(conda, `#!/bin/sh\nprintf '%s\\n' "$@" >> '${calls}'\nexit 0\n`, {
    mode: 0o755,
  });
  const port = freePort();
  await using server = await startServerProcess([
    "-d",
    join(channel, "linux-64"),
    "-p",
    String(port),
    "-e",
    conda,
    "-c",
    tls.certFile,
    "-k",
    tls.keyFile,
    "-t",
    TOKEN_HASH,
  ]);
  assert.equal(server.url, `https://localhost:${port}`);
  assert.ok(server.stderr.some((line) => /WRITE_DIR names a subdir/.test(line)));
  const file = await writePackage(dir.path, {
    name: "my-artifact1",
    version: "1.0.0",
    build: "2",
    format: ".tar.bz2",
  });
  const result = await curlUpload(server.url, { token: TOKEN, file }, { caFile: tls.caFile });
  assert.equal(result.status, 201, result.body);
  const stored = JSON.parse(result.body) as { filename: string; subdir: string };
  assert.equal(stored.filename, "my-artifact1-1.0.0-2.tar.bz2");
  assert.equal(stored.subdir, "linux-64");
  assert.ok((await Deno.stat(join(channel, "linux-64", "my-artifact1-1.0.0-2.tar.bz2"))).isFile);
  assert.equal(await Deno.readTextFile(calls), `index\n${channel}\n`);
  await server.waitForLine(/INFO conda index done/);
});

Deno.test("index CHANNEL_ROOT indexes packages copied in by hand and reports a corrupt one", async () => {
  await using dir = await tempDir("auh-cli-");
  const root = join(dir.path, "channel");
  await Deno.mkdir(join(root, "linux-64"), { recursive: true });
  await Deno.mkdir(join(root, "noarch"), { recursive: true });
  await writePackage(join(root, "linux-64"), { name: "alpha", version: "1.0", format: ".tar.bz2" });
  await writePackage(join(root, "linux-64"), { name: "beta", version: "2.0" });
  await writePackage(join(root, "noarch"), { name: "gamma", version: "3.0", subdir: "noarch" });
  const corrupt = join(root, "linux-64", "corrupt-1.0-0.conda");
  await Deno.writeFile(corrupt, crypto.getRandomValues(new Uint8Array(4096)));

  const result = await runProgram(["index", root]);
  assert.equal(result.code, 3, result.stderr);
  assert.equal(result.stdout, "");
  assert.match(result.stderr, /WARN package left out of the index .*corrupt-1\.0-0\.conda/);
  assert.match(result.stderr, /INFO index done .*failed=1/);
  const read = async (subdir: string) =>
    JSON.parse(await Deno.readTextFile(join(root, subdir, "repodata.json"))) as {
      packages: Record<string, { name: string }>;
      "packages.conda": Record<string, { name: string }>;
    };
  const linux = await read("linux-64");
  assert.deepEqual(Object.keys(linux.packages), ["alpha-1.0-0.tar.bz2"]);
  assert.deepEqual(Object.keys(linux["packages.conda"]), ["beta-2.0-0.conda"]);
  assert.equal(linux["packages.conda"]["beta-2.0-0.conda"]?.name, "beta");
  assert.deepEqual(Object.keys((await read("noarch"))["packages.conda"]), ["gamma-3.0-0.conda"]);

  await Deno.remove(corrupt);
  const again = await runProgram(["index", root]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /INFO index done .*failed=0/);
  // Everything written before the exit: no write after the storage closed.
  for (const run of [result, again]) assert.doesNotMatch(run.stderr, /\bERROR\b/);
  const html = await Deno.readTextFile(join(root, "linux-64", "index.html"));
  assert.match(html, /beta-2\.0-0\.conda/);
  const channeldata = JSON.parse(await Deno.readTextFile(join(root, "channeldata.json")));
  assert.deepEqual(Object.keys(channeldata.packages).sort(), ["alpha", "beta", "gamma"]);
});
