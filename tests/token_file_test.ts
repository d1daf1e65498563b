/**
 * The token hash file with named, scoped tokens: parsing and its errors
 * (line numbers, never a hash), identities from the verifier, the checks at
 * start, and the re-read on SIGHUP of the real program, where a broken file
 * keeps the tokens in force.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { parseTokenFile } from "../src/auth/token_file.ts";
import { hashToken } from "../src/auth/token_hash.ts";
import { TokenVerifier } from "../src/auth/token_verifier.ts";
import { ConfigError, resolveServerConfig } from "../src/config.ts";
import type { ServerFlags } from "../src/cli/command_line.ts";
import { writePackage } from "./helpers/conda_package.ts";
import {
  curlUpload,
  listenArgs,
  startServerProcess,
  writeTestTls,
} from "./helpers/server_process.ts";

const HASH_A = "a".repeat(64);
const HASH_B = "B".repeat(64);

Deno.test("parseTokenFile() reads bare hashes, names and scopes, comments and blank lines", () => {
  const entries = parseTokenFile([
    "# tokens of the build farm",
    HASH_A,
    "",
    `   ${HASH_B}   name=ci-mylib  channels=main,staging packages=mylib,MyLib-* can=upload # CI of mylib`,
    `${"c".repeat(64)} name=cleaner can=delete`,
  ].join("\n"));
  assert.equal(entries.length, 3);
  const [bare, scoped, cleaner] = entries;
  assert.equal(bare!.hash, HASH_A);
  assert.equal(bare!.name, undefined);
  assert.equal(bare!.scope.channels, undefined);
  assert.equal(bare!.scope.packages, undefined);
  assert.deepEqual([...bare!.scope.can], ["upload", "overwrite", "delete"]);
  assert.equal(scoped!.hash, HASH_B.toLowerCase());
  assert.equal(scoped!.name, "ci-mylib");
  assert.deepEqual(scoped!.scope.channels, ["main", "staging"]);
  assert.deepEqual(scoped!.scope.packages, ["mylib", "mylib-*"]);
  assert.deepEqual([...scoped!.scope.can], ["upload"]);
  assert.deepEqual([...cleaner!.scope.can], ["delete"]);
});

Deno.test("parseTokenFile() refuses malformed lines with their line number and never shows a hash", () => {
  const secretish = "s3cr3t-token-pasted-by-mistake";
  const cases: [string, string][] = [
    [
      "deadbeef",
      "line 1: the first field is not a token hash (64 hex digits; make one with 'hash-token')",
    ],
    [
      `# ok\n${HASH_A} ${secretish}`,
      "line 2: field 2 is not KEY=VALUE (keys: name, channels, packages, can)",
    ],
    [`${HASH_A} nmae=x`, "line 1: unknown field 'nmae' (keys: name, channels, packages, can)"],
    [`${HASH_A} name=a name=b`, "line 1: field name= is given twice"],
    [
      `${HASH_A} name=has/slash`,
      "line 1: name 'has/slash' is not a name (letters, digits, . _ -; at most 64)",
    ],
    [
      `${HASH_A} name=token:1234abcd`,
      "line 1: name 'token:1234abcd' is not a name (letters, digits, . _ -; at most 64)",
    ],
    [
      `${HASH_A} can=upload,publish`,
      "line 1: can: 'publish' is not an action (expected upload, overwrite, delete)",
    ],
    [
      `${HASH_A} can=overwrite`,
      "line 1: can: overwrite needs upload too (an overwrite is an upload)",
    ],
    [
      `${HASH_A} packages=`,
      "line 1: packages: a list of names may not be empty or hold an empty name",
    ],
    [
      `${HASH_A} packages=my%lib`,
      "line 1: packages: 'my%lib' is not a package name or glob (letters, digits, _.+- and * ?)",
    ],
    [`${HASH_A}\n\n${HASH_A.toUpperCase()} name=again`, "line 3: the same hash as line 1"],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseTokenFile(text), (error) => {
      assert.ok(error instanceof SyntaxError);
      assert.equal(error.message, message);
      assert.doesNotMatch(error.message, /[0-9a-f]{64}/i);
      assert.ok(!error.message.includes(secretish));
      return true;
    }, text);
  }
});

Deno.test("TokenVerifier.identify() names a token by its name= and carries its scope", async () => {
  const entries = parseTokenFile([
    `${await hashToken("admin-secret")} name=admin`,
    `${await hashToken("ci-secret")} name=ci-mylib packages=mylib can=upload`,
    await hashToken("old-secret"),
  ].join("\n"));
  const verifier = new TokenVerifier(entries);
  const admin = await verifier.identify("admin-secret");
  assert.equal(admin?.name, "admin");
  assert.equal(admin?.kind, "token");
  const ci = await verifier.identify("ci-secret");
  assert.equal(ci?.name, "ci-mylib");
  assert.deepEqual(ci?.scope.packages, ["mylib"]);
  const old = await verifier.identify("old-secret");
  const expectedName = "token:" +
    createHash("sha256").update(await hashToken("old-secret")).digest("hex").slice(0, 8);
  assert.equal(old?.name, expectedName, "a bare hash keeps its token:<8 hex> name");
  assert.equal(await verifier.identify("nope"), undefined);
});

Deno.test("TokenVerifier.replace() swaps every token at once", async () => {
  const verifier = new TokenVerifier([await hashToken("one")]);
  assert.ok(await verifier.identify("one"));
  verifier.replace(parseTokenFile(`${await hashToken("two")} name=two`));
  assert.equal(await verifier.identify("one"), undefined);
  assert.equal((await verifier.identify("two"))?.name, "two");
  assert.equal(verifier.size, 1);
});

function flags(dir: string, extra: Partial<ServerFlags>): ServerFlags {
  return {
    writeDir: join(dir, "main"),
    port: "0",
    tokenHashes: [],
    allowOverwrite: false,
    noServe: false,
    insecureNoTls: true,
    dev: false,
    ...extra,
  };
}

Deno.test("resolveServerConfig() reads the token file's scopes, refuses a malformed line and a scope naming a channel not served", async () => {
  const dir = await Deno.makeTempDir({ prefix: "auh-token-file-" });
  try {
    const file = join(dir, "tokens");
    await Deno.writeTextFile(file, `${HASH_A} name=ci channels=main,extra packages=mylib\n`);
    const config = await resolveServerConfig(
      flags(dir, { tokenHashFile: file, channels: [`extra=${join(dir, "extra")}`] }),
    );
    assert.equal(config.tokenHashFile, file);
    assert.equal(config.tokenFileEntries.length, 1);
    assert.equal(config.tokenFileEntries[0]!.name, "ci");
    assert.deepEqual(config.tokenHashes, []);

    await assert.rejects(resolveServerConfig(flags(dir, { tokenHashFile: file })), (error) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(
        error.message,
        `Cannot start: cannot read token hash file ${file}: token 'ci' names channel 'extra', which is not served here (main)`,
      );
      return true;
    });
    await Deno.writeTextFile(file, `# first\n${HASH_A}\n${HASH_B} can=everything\n`);
    await assert.rejects(resolveServerConfig(flags(dir, { tokenHashFile: file })), {
      name: "ConfigError",
      message:
        `Cannot start: cannot read token hash file ${file}: line 3: can: 'everything' is not an action (expected upload, overwrite, delete)`,
    });
    await assert.rejects(resolveServerConfig(flags(dir, { tokenHashFile: join(dir, "none") })), {
      message: `Cannot start: cannot read token hash file ${join(dir, "none")}: no such file`,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGHUP re-reads the token hash file: a rotated token takes over, and a broken file keeps the current tokens", async () => {
  const dir = await Deno.makeTempDir({ prefix: "auh-token-reload-" });
  try {
    const channel = join(dir, "channel");
    await Deno.mkdir(channel);
    const tls = await writeTestTls(dir);
    const file = join(dir, "token-hashes");
    await Deno.writeTextFile(file, `${await hashToken("old-token")} name=release-bot\n`);
    await using server = await startServerProcess([
      ...listenArgs(channel, tls),
      "--token_hash_file",
      file,
    ]);
    const upload = async (token: string, name: string) =>
      await curlUpload(server.url, {
        token,
        file: await writePackage(dir, { name, version: "1.0" }),
      }, { caFile: tls.caFile });

    const first = await upload("old-token", "first");
    assert.equal(first.status, 201, first.body);
    await server.waitForLine(/INFO published .*\bby=release-bot\b/);

    const newHash = await hashToken("new-token");
    await Deno.writeTextFile(file, `# rotated\n${newHash} name=release-bot-2\n`);
    server.kill("SIGHUP");
    await server.waitForLine(/INFO token hash file reloaded .*\btokens=1\b/);
    assert.equal((await upload("old-token", "second")).status, 401);
    const second = await upload("new-token", "second");
    assert.equal(second.status, 201, second.body);
    await server.waitForLine(/INFO published .*\bby=release-bot-2\b/);

    await Deno.writeTextFile(file, `${newHash} name=release-bot-2\n${"0".repeat(63)}\n`);
    server.kill("SIGHUP");
    const failure = await server.waitForLine(/ERROR token hash file reload failed/);
    assert.match(
      failure,
      /keeping the current tokens .*line 2: the first field is not a token hash/,
    );
    const third = await upload("new-token", "third");
    assert.equal(third.status, 201, third.body);

    const secrets = [
      "old-token",
      "new-token",
      await hashToken("old-token"),
      newHash,
      "0".repeat(63),
    ];
    for (const line of server.stderr) {
      for (const secret of secrets) assert.ok(!line.includes(secret), line);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
