/**
 * Trusted publishing through the real program (its shipped permissions,
 * `--trusted_publishers`, `--server_name`, the issuer's CA in `DENO_CERT`):
 * the exact sequence rattler-build and pixi run in GitHub Actions mints an
 * upload token at `POST /api/oidc/mint_token` and publishes with it on the
 * prefix route; the token is bound to the publisher's scope; logs, the audit
 * log and /metrics name the publisher and the CI run, never a secret.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { buildPackage, packageFilename, type PackageSpec } from "./helpers/conda_package.ts";
import { startOidcIssuer } from "./helpers/oidc_issuer.ts";
import { listenArgs, startServerProcess, writeTestTls } from "./helpers/server_process.ts";
import { actionsIdToken, postMintToken } from "./helpers/trusted_publishing_client.ts";
import { channelPackages, rattlerPrefixForm, spoolEntries } from "./helpers/upload_clients.ts";

Deno.test("rattler's trusted publishing against the program: Actions ID token, mint, upload with the minted token; scope, refusals, logs and audit", async () => {
  await using issuer = await startOidcIssuer();
  const dir = await Deno.makeTempDir({ prefix: "auh-tp-server-" });
  try {
    const channel = join(dir, "main");
    await Deno.mkdir(channel);
    const tls = await writeTestTls(dir);
    const publishers = join(dir, "publishers.json");
    const auditLog = join(dir, "audit.jsonl");
    await Deno.writeTextFile(
      publishers,
      JSON.stringify([{
        name: "mylib-release",
        issuer: issuer.issuer,
        claims: {
          repository: "acme/mylib",
          workflow_ref: "acme/mylib/.github/workflows/release.yml@refs/tags/v*",
        },
        packages: ["mylib", "mylib-*"],
        can: ["upload"],
      }]),
    );
    await using server = await startServerProcess([
      ...listenArgs(channel, tls),
      "--trusted_publishers",
      publishers,
      "--server_name",
      "localhost",
      "--audit_log",
      auditLog,
    ], { env: { DENO_CERT: issuer.caFile } });
    assert.ok(
      server.stderr.some((line) => /INFO listening .*\btokens=0 trusted_publishers=1\b/.test(line)),
    );
    const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(tls.caFile)] });
    const serverFetch = ((input: string | URL | Request, init?: RequestInit) =>
      fetch(input, { ...init, client })) as typeof fetch;
    try {
      const upload = async (token: string, spec: PackageSpec) => {
        const form = rattlerPrefixForm(packageFilename(spec), await buildPackage(spec));
        const response = await serverFetch(new URL("/api/v1/upload/main", server.url), {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": form.contentType },
          body: form.body as Uint8Array<ArrayBuffer>,
        });
        return { status: response.status, body: (await response.text()).trim() };
      };

      // older rattler: audience prefix.dev
      const jwt = await actionsIdToken(issuer.actionsEnv, "prefix.dev", issuer.fetch);
      const minted = await postMintToken(server.url, jwt, serverFetch);
      assert.equal(minted.status, 200, minted.body);
      assert.match(minted.body, /^[A-Za-z0-9_-]{43}$/, "the whole body is the token");
      assert.match(minted.contentType ?? "", /^text\/plain/);
      const mylib: PackageSpec = { name: "mylib", version: "1.2.0" };
      const published = await upload(minted.body, mylib);
      assert.equal(published.status, 201, published.body);

      // the minted token is bound to the publisher's scope
      const other = await upload(minted.body, { name: "other", version: "1.0" });
      assert.equal(other.status, 403);
      assert.equal(
        other.body,
        "Cannot upload: trusted publisher 'mylib-release' may not publish package 'other'",
      );

      // newer rattler: audience = the server's host name
      const jwtForHost = await actionsIdToken(issuer.actionsEnv, "localhost", issuer.fetch);
      const mintedForHost = await postMintToken(server.url, jwtForHost, serverFetch);
      assert.equal(mintedForHost.status, 200, mintedForHost.body);
      const core = await upload(mintedForHost.body, { name: "mylib-core", version: "1.2.0" });
      assert.equal(core.status, 201, core.body);
      assert.deepEqual(issuer.audiencesRequested, ["prefix.dev", "localhost"]);

      // refusals name the claim; a wrong token is a 401
      const evil = await postMintToken(
        server.url,
        await issuer.sign(issuer.githubClaims({ repository: "evil/mylib" })),
        serverFetch,
      );
      assert.equal(evil.status, 403);
      assert.equal(
        evil.body.trim(),
        "Cannot mint token: claim 'repository' is 'evil/mylib', which no trusted publisher accepts",
      );
      const pypi = await postMintToken(
        server.url,
        await issuer.sign(issuer.githubClaims({ aud: "pypi" })),
        serverFetch,
      );
      assert.equal(pypi.status, 401);
      assert.match(pypi.body, /^Cannot mint token: audience 'pypi' is not accepted here/);
      assert.equal((await upload("not-a-minted-token", mylib)).status, 401);

      assert.deepEqual(await channelPackages(channel), [
        "linux-64/mylib-1.2.0-0.conda",
        "linux-64/mylib-core-1.2.0-0.conda",
      ]);
      assert.deepEqual(await spoolEntries(channel), []);

      // logs, audit log and metrics name the publisher and the run, never a secret
      await server.waitForLine(
        /INFO minted upload token by=mylib-release ci_repository=acme\/mylib ci_run_id=987654321 ci_workflow=acme\/mylib\/\.github\/workflows\/release\.yml@refs\/tags\/v1\.2\.0 expires=/,
      );
      await server.waitForLine(
        /INFO published package=mylib-1\.2\.0-0\.conda .*by=mylib-release ci_repository=acme\/mylib ci_run_id=987654321/,
      );
      const audit = (await Deno.readTextFile(auditLog)).trim().split("\n").map((line) =>
        JSON.parse(line)
      );
      assert.equal(audit.length, 2);
      assert.equal(audit[0].by, "mylib-release");
      assert.equal(audit[0].ci_repository, "acme/mylib");
      assert.equal(audit[0].ci_run_id, "987654321");
      assert.equal(
        audit[0].ci_workflow,
        "acme/mylib/.github/workflows/release.yml@refs/tags/v1.2.0",
      );
      const metrics = await (await serverFetch(new URL("/metrics", server.url))).text();
      assert.match(metrics, /^auh_published_total\{identity="mylib-release"\} 2$/m);
      assert.match(
        metrics,
        /^auh_auth_failures_total 3$/m,
        "two refused mints and one wrong token",
      );
      for (const line of server.stderr) {
        for (const secret of [jwt, jwtForHost, minted.body, mintedForHost.body]) {
          assert.ok(!line.includes(secret), line);
        }
      }
    } finally {
      client.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
