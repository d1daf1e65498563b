import assert from "node:assert/strict";
import { join } from "node:path";
import type { ServerFlags } from "../src/cli/command_line.ts";
import { parseTrustedPublishers } from "../src/auth/trusted_publishers.ts";
import { resolveServerConfig } from "../src/config.ts";
import { startTestServer } from "./helpers/test_server.ts";

const GITHUB = "https://token.actions.githubusercontent.com";

Deno.test("parseTrustedPublishers() reads issuer, claims, audience and scope", () => {
  const [github, gitlab] = parseTrustedPublishers(JSON.stringify([
    {
      name: "mylib-release",
      issuer: GITHUB,
      claims: { repository: "acme/mylib", environment: "release", ref: "refs/tags/v*" },
      packages: ["mylib", "mylib-*"],
      can: ["upload"],
    },
    {
      name: "gitlab-nightly",
      issuer: "https://gitlab.com",
      audience: "conda.example.com",
      claims: { project_path: "acme/mylib", ref_protected: "true" },
      channels: ["nightly"],
    },
  ]));
  assert.equal(github!.name, "mylib-release");
  assert.equal(github!.audiences, undefined);
  assert.deepEqual(github!.claims, {
    repository: "acme/mylib",
    environment: "release",
    ref: "refs/tags/v*",
  });
  assert.deepEqual(github!.scope.packages, ["mylib", "mylib-*"]);
  assert.deepEqual([...github!.scope.can], ["upload"]);
  assert.deepEqual(gitlab!.audiences, ["conda.example.com"]);
  assert.deepEqual(gitlab!.scope.channels, ["nightly"]);
  assert.deepEqual([...gitlab!.scope.can], ["upload", "overwrite", "delete"]);
});

Deno.test("parseTrustedPublishers() refuses a publisher that any repository could match, and malformed entries, naming the publisher and field", () => {
  const entry = { name: "p", issuer: GITHUB, claims: { repository: "acme/mylib" } };
  const cases: [unknown, string][] = [
    [{}, "expected a JSON list of publishers"],
    [
      [{ ...entry, claims: { environment: "release" } }],
      "publisher 1 ('p'): claims must pin one of repository, repository_id, repository_owner, repository_owner_id, project_path, project_id, namespace_path, namespace_id, sub to a value (else any repository on the issuer could publish)",
    ],
    [
      [{ ...entry, claims: { repository: "*" } }],
      "publisher 1 ('p'): claims must pin one of repository, repository_id, repository_owner, repository_owner_id, project_path, project_id, namespace_path, namespace_id, sub to a value (else any repository on the issuer could publish)",
    ],
    [
      [{ ...entry, claims: undefined }],
      'publisher 1 (\'p\'): claims must be an object such as {"repository": "owner/name"} (one of repository, repository_id, repository_owner, repository_owner_id, project_path, project_id, namespace_path, namespace_id, sub at least)',
    ],
    [
      [{ ...entry, claims: { repository: "acme/mylib", aud: "x" } }],
      "publisher 1 ('p'): claims: 'aud' is checked by the server itself (use \"issuer\" and \"audience\")",
    ],
    [
      [{ ...entry, claims: { repository: 5 } }],
      "publisher 1 ('p'): claims: repository must be a non-empty string (exact value or glob)",
    ],
    [
      [entry, { ...entry, issuer: "http://token.actions.githubusercontent.com" }],
      "publisher 2 ('p'): issuer must be an https URL, e.g. https://token.actions.githubusercontent.com",
    ],
    [[entry, entry], "publisher 2 ('p'): its name is used twice"],
    [
      [{ ...entry, name: "a b" }],
      "publisher 1 ('a b'): name must be a name (letters, digits, . _ -; at most 64)",
    ],
    [
      [{ ...entry, repositry: "acme/x" }],
      "publisher 1 ('p'): unknown field 'repositry' (fields: name, issuer, audience, claims, channels, packages, can)",
    ],
    [
      [{ ...entry, can: ["publish"] }],
      "publisher 1 ('p'): can: 'publish' is not an action (expected upload, overwrite, delete)",
    ],
    [[{ ...entry, packages: "mylib" }], "publisher 1 ('p'): packages must be a list of strings"],
    [
      [{ ...entry, audience: [] }],
      "publisher 1 ('p'): audience must be a non-empty string or list of strings",
    ],
  ];
  for (const [json, message] of cases) {
    assert.throws(() => parseTrustedPublishers(JSON.stringify(json)), {
      name: "SyntaxError",
      message,
    });
  }
  assert.throws(() => parseTrustedPublishers("[{"), {
    name: "SyntaxError",
    message: /^not JSON: /,
  });
});

Deno.test("resolveServerConfig() reads --trusted_publishers, needs --server_name for a publisher without audience, and checks channels", async () => {
  const dir = await Deno.makeTempDir({ prefix: "auh-publishers-" });
  try {
    const file = join(dir, "publishers.json");
    const flags: ServerFlags = {
      writeDir: join(dir, "main"),
      tokenHashes: [],
      allowOverwrite: false,
      noServe: false,
      insecureNoTls: true,
      dev: false,
      trustedPublishers: file,
    };
    const publisher = { name: "rel", issuer: GITHUB, claims: { repository: "acme/mylib" } };
    await Deno.writeTextFile(file, JSON.stringify([publisher]));
    await assert.rejects(resolveServerConfig(flags), {
      name: "ConfigError",
      message:
        "Cannot start: trusted publisher 'rel' names no audience; give --server_name (the host name clients upload to, which newer rattler-build and pixi ask their CI token for) or an \"audience\"",
    });
    const config = await resolveServerConfig({ ...flags, serverName: "Conda.Example.com" });
    assert.equal(config.serverName, "conda.example.com");
    assert.equal(config.trustedPublishers.length, 1, "publishers alone are enough to start");
    assert.equal(config.trustedPublishersFile, file);
    await assert.rejects(resolveServerConfig({ ...flags, serverName: "bad host/" }), {
      message: 'Cannot start: --server_name "bad host/" is not a host name',
    });

    await Deno.writeTextFile(
      file,
      JSON.stringify([{ ...publisher, audience: "prefix.dev", channels: ["nope"] }]),
    );
    await assert.rejects(resolveServerConfig(flags), {
      message:
        `Cannot start: cannot read trusted publishers file ${file}: publisher 'rel' names channel 'nope', which is not served here (main)`,
    });
    await assert.rejects(resolveServerConfig({ ...flags, trustedPublishers: undefined! }), {
      message: /^Cannot start: no token hash given .* and no --trusted_publishers/,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reloadCredentials() re-reads the trusted publishers file, and a broken one keeps the publishers in force", async () => {
  const dir = await Deno.makeTempDir({ prefix: "auh-publishers-reload-" });
  try {
    const file = join(dir, "publishers.json");
    const publisher = { name: "rel", issuer: GITHUB, claims: { repository: "acme/mylib" } };
    await Deno.writeTextFile(file, JSON.stringify([publisher]));
    await using server = await startTestServer({
      flags: { trustedPublishers: file, serverName: "localhost" },
    });
    assert.equal(server.server.minter.size, 1);
    await Deno.writeTextFile(file, JSON.stringify([publisher, { ...publisher, name: "rel-2" }]));
    await server.server.reloadCredentials();
    assert.equal(server.server.minter.size, 2);
    assert.ok(
      server.logs.some((line) => /INFO trusted publishers reloaded .*publishers=2/.test(line)),
    );
    await Deno.writeTextFile(file, JSON.stringify([{ ...publisher, claims: {} }]));
    await server.server.reloadCredentials();
    assert.equal(server.server.minter.size, 2, "the publishers in force stay");
    assert.ok(
      server.logs.some((line) =>
        /ERROR trusted publishers reload failed; keeping the current ones .*publisher 1 \('rel'\): claims must pin/
          .test(line)
      ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
