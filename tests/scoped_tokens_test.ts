/**
 * Named, scoped tokens at the front door: a token may publish only the
 * packages, to the channels, and do only the actions its line in the token
 * hash file allows; anything else is a 403 with the reason before any byte
 * is kept, in every protocol. Logs, the audit log and /metrics name the
 * token.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { hashToken } from "../src/auth/token_hash.ts";
import { buildPackage, packageFilename, type PackageSpec } from "./helpers/conda_package.ts";
import { startTestServer, type TestServer, uploadForm } from "./helpers/test_server.ts";
import { channelPackages, rattlerPrefixForm, spoolEntries } from "./helpers/upload_clients.ts";

const TOKENS = {
  ci: "ci-mylib-secret",
  releaser: "releaser-secret",
  cleaner: "cleaner-secret",
};

async function scopedServer(): Promise<TestServer & { staging: string; auditLog: string }> {
  const dir = await Deno.makeTempDir({ prefix: "auh-scoped-" });
  const file = join(dir, "token-hashes");
  const staging = join(dir, "staging");
  const auditLog = join(dir, "audit.jsonl");
  await Deno.mkdir(staging);
  await Deno.writeTextFile(
    file,
    [
      `${await hashToken(
        TOKENS.ci,
      )} name=ci-mylib channels=channel packages=mylib,mylib-* can=upload`,
      `${await hashToken(TOKENS.releaser)} name=releaser packages=mylib can=upload,overwrite`,
      `${await hashToken(TOKENS.cleaner)} name=cleaner channels=staging can=delete`,
    ].join("\n"),
  );
  const server = await startTestServer({
    flags: {
      tokenHashFile: file,
      channels: [`staging=${staging}`],
      allowOverwrite: true,
      auditLog,
    },
  });
  const stop = server[Symbol.asyncDispose].bind(server);
  return Object.assign(server, {
    staging,
    auditLog,
    async [Symbol.asyncDispose]() {
      await stop();
      await Deno.remove(dir, { recursive: true });
    },
  });
}

async function put(
  server: TestServer,
  path: string,
  token: string,
  spec: PackageSpec,
): Promise<{ status: number; body: string }> {
  const response = await server.fetch(path, {
    method: "PUT",
    headers: { authorization: `Bearer ${token}` },
    body: await buildPackage(spec) as Uint8Array<ArrayBuffer>,
  });
  return { status: response.status, body: (await response.text()).trim() };
}

Deno.test("a scoped token publishes its own packages and gets 403 with the reason, nothing kept, for another package, channel, overwrite or delete", async () => {
  await using server = await scopedServer();
  const mylib: PackageSpec = { name: "mylib-core", version: "1.0" };
  const other: PackageSpec = { name: "other", version: "1.0" };
  const ok = await put(server, `/linux-64/${packageFilename(mylib)}`, TOKENS.ci, mylib);
  assert.equal(ok.status, 201, ok.body);

  const refusals: [string, string, string | undefined, PackageSpec, string][] = [
    [
      "PUT",
      `/linux-64/${packageFilename(other)}`,
      undefined,
      other,
      "Cannot upload: token 'ci-mylib' may not publish package 'other'",
    ],
    [
      "PUT",
      `/staging/linux-64/${packageFilename(mylib)}`,
      undefined,
      mylib,
      "Cannot upload: token 'ci-mylib' may not publish to channel 'staging'",
    ],
    [
      "PUT",
      `/linux-64/${packageFilename(mylib)}?force=true`,
      undefined,
      mylib,
      "Cannot upload: token 'ci-mylib' may not overwrite packages (it can upload)",
    ],
    [
      "DELETE",
      `/linux-64/${packageFilename(mylib)}`,
      undefined,
      mylib,
      "Cannot delete: token 'ci-mylib' may not delete packages (it can upload)",
    ],
    [
      "POST",
      `/api/channels/channel/upload/${packageFilename(other)}`,
      "x-api-key",
      other,
      "Cannot upload: token 'ci-mylib' may not publish package 'other'",
    ],
  ];
  for (const [method, path, header, spec, message] of refusals) {
    const response = await server.fetch(path, {
      method,
      headers: { [header ?? "authorization"]: header ? TOKENS.ci : `Bearer ${TOKENS.ci}` },
      ...(method === "DELETE" ? {} : { body: await buildPackage(spec) as Uint8Array<ArrayBuffer> }),
    });
    assert.equal(response.status, 403, `${method} ${path}`);
    assert.equal((await response.text()).trim(), message, `${method} ${path}`);
  }

  // the prefix.dev protocol and the original form: refused at the file part's header
  const otherBytes = await buildPackage(other);
  const form = rattlerPrefixForm(packageFilename(other), otherBytes);
  const prefix = await server.fetch("/api/v1/upload/channel", {
    method: "POST",
    headers: { authorization: `Bearer ${TOKENS.ci}`, "content-type": form.contentType },
    body: form.body as Uint8Array<ArrayBuffer>,
  });
  assert.equal(prefix.status, 403);
  assert.equal(
    (await prefix.text()).trim(),
    "Cannot upload: token 'ci-mylib' may not publish package 'other'",
  );
  const original = await server.fetch("/", {
    method: "POST",
    body: uploadForm(TOKENS.ci, packageFilename(other), otherBytes),
  });
  assert.equal(original.status, 403);
  assert.equal(
    (await original.text()).trim(),
    "Cannot upload: token 'ci-mylib' may not publish package 'other'",
  );

  // without --trusted_publishers, the mint path answers 404 with the reason
  const mint = await server.fetch("/api/oidc/mint_token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: "a.b.c" }),
  });
  assert.equal(mint.status, 404);
  assert.equal(
    (await mint.text()).trim(),
    "Cannot mint token: this server has no trusted publishers (--trusted_publishers)",
  );

  assert.deepEqual(await channelPackages(server.channelRoot), [
    `linux-64/${packageFilename(mylib)}`,
  ]);
  assert.deepEqual(await spoolEntries(server.channelRoot), []);
  assert.deepEqual(await channelPackages(server.staging), []);
  assert.ok(
    server.logs.some((line) =>
      /WARN request refused status=403 .*may not publish package 'other'/.test(line)
    ),
  );
});

Deno.test("a token with can=overwrite replaces its package, one with can=delete deletes in its channel, and the admin token may still do everything", async () => {
  await using server = await scopedServer();
  const mylib: PackageSpec = { name: "mylib", version: "1.0" };
  const path = `/linux-64/${packageFilename(mylib)}`;
  assert.equal((await put(server, path, TOKENS.releaser, mylib)).status, 201);
  const replaced = await put(server, `${path}?force=true`, TOKENS.releaser, {
    ...mylib,
    files: { "share/mylib/v": "2" },
  });
  assert.equal(replaced.status, 201, replaced.body);
  assert.equal(JSON.parse(replaced.body).replaced, true);

  const staged = await put(server, `/staging${path}`, server.token, mylib);
  assert.equal(staged.status, 201, staged.body);
  const rootDelete = await server.fetch(path, {
    method: "DELETE",
    headers: { authorization: `Bearer ${TOKENS.cleaner}` },
  });
  assert.equal(rootDelete.status, 403);
  assert.equal(
    (await rootDelete.text()).trim(),
    "Cannot delete: token 'cleaner' may not delete in channel 'channel'",
  );
  const stagingDelete = await server.fetch(`/staging${path}`, {
    method: "DELETE",
    headers: { authorization: `Bearer ${TOKENS.cleaner}` },
  });
  assert.equal(stagingDelete.status, 200, await stagingDelete.text());
  assert.deepEqual(await channelPackages(server.staging), []);
  assert.deepEqual(await channelPackages(server.channelRoot), [
    `linux-64/${packageFilename(mylib)}`,
  ]);

  // logs, the audit log and /metrics name the token, never a secret
  assert.ok(server.logs.some((line) => /INFO replaced .*\bby=releaser\b/.test(line)));
  assert.ok(
    server.logs.some((line) => /INFO deleted .*\bchannel=staging\b.*\bby=cleaner\b/.test(line)),
  );
  const audit = (await Deno.readTextFile(server.auditLog)).trim().split("\n").map((line) =>
    JSON.parse(line)
  );
  assert.deepEqual(
    audit.map((event) => [event.action, event.channel, event.by]),
    [
      ["publish", "channel", "releaser"],
      ["replace", "channel", "releaser"],
      ["publish", "staging", audit[2].by],
      ["delete", "staging", "cleaner"],
    ],
  );
  assert.match(audit[2].by, /^token:[0-9a-f]{8}$/);
  const metrics = await (await server.fetch("/metrics")).text();
  assert.match(metrics, /^auh_published_total\{identity="releaser"\} 2$/m);
  for (const line of server.logs) {
    for (const secret of [...Object.values(TOKENS), server.token]) {
      assert.ok(!line.includes(secret), line);
    }
  }
});
