/**
 * Trusted publishing against a local OIDC issuer (its own CA, keys,
 * discovery document and JWKS over HTTPS on loopback): what rattler sends
 * mints a token bound to the publisher's scope and CI run; expired,
 * wrong-issuer, wrong-audience, wrong-repository, `alg: none`, HS256,
 * tampered and unknown-kid tokens are refused with a reason naming what did
 * not match; minted tokens expire; the issuer's TLS is verified with the CA
 * named by DENO_CERT.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { MintedTokens } from "../src/auth/minted_tokens.ts";
import {
  MAX_MINT_REQUEST_BYTES,
  mintTokenResponse,
  readMintTokenRequest,
} from "../src/auth/mint_token_request.ts";
import { OidcVerifier } from "../src/auth/oidc_verifier.ts";
import { TokenMinter } from "../src/auth/token_minter.ts";
import { checkScope } from "../src/auth/token_scope.ts";
import { parseTrustedPublishers } from "../src/auth/trusted_publishers.ts";
import { HttpError } from "../src/http/http_error.ts";
import { type OidcIssuer, startOidcIssuer } from "./helpers/oidc_issuer.ts";
import { actionsIdToken } from "./helpers/trusted_publishing_client.ts";

const SERVER_NAME = "conda.example.com";

function publishersFor(issuer: string, extra: Record<string, unknown>[] = []) {
  return parseTrustedPublishers(JSON.stringify([
    {
      name: "mylib-release",
      issuer,
      claims: {
        repository: "acme/mylib",
        workflow_ref: "acme/mylib/.github/workflows/release.yml@refs/tags/v*",
        environment: "release",
      },
      channels: ["main"],
      packages: ["mylib", "mylib-*"],
      can: ["upload"],
    },
    ...extra,
  ]));
}

function minterFor(
  issuer: OidcIssuer,
  options: { minted?: MintedTokens; extra?: Record<string, unknown>[] } = {},
) {
  const verifier = new OidcVerifier({ fetch: issuer.fetch, jwksCooldownMs: 0 });
  return new TokenMinter(publishersFor(issuer.issuer, options.extra), {
    serverName: SERVER_NAME,
    verifier,
    ...(options.minted ? { minted: options.minted } : {}),
  });
}

/** The HttpError `promise` rejects with. */
async function refusal(promise: Promise<unknown>): Promise<HttpError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof HttpError, String(error));
    assert.doesNotMatch(error.message, /[\r\n]/);
    return error;
  }
  assert.fail("expected a refusal");
}

Deno.test("TokenMinter.mint() exchanges what rattler posts (audience prefix.dev) for a token bound to the publisher's scope and CI run", async () => {
  await using issuer = await startOidcIssuer();
  const minter = minterFor(issuer);
  // the ID token as rattler gets it from the Actions runtime, for audience prefix.dev
  const jwt = await actionsIdToken(issuer.actionsEnv, "prefix.dev", issuer.fetch);
  assert.deepEqual(issuer.audiencesRequested, ["prefix.dev"]);
  // the request exactly as rattler_upload makes it: reqwest's .json() body
  const request = new Request("https://conda.example.com/api/oidc/mint_token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: jwt }),
  });
  const minted = await minter.mint(await readMintTokenRequest(request));
  const response = mintTokenResponse(minted.token);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("cache-control"), "no-store");
  const body = await response.text();
  assert.equal(body, minted.token, "the whole body is the token: no newline, no JSON");
  assert.match(body, /^[A-Za-z0-9_-]{43}$/);
  assert.ok(Math.abs(minted.expiresAt.getTime() - (Date.now() + 15 * 60_000)) < 60_000);

  const identity = await minter.minted.identify(body);
  assert.ok(identity);
  assert.equal(identity.kind, "publisher");
  assert.equal(identity.name, "mylib-release");
  assert.deepEqual(identity.run, {
    repository: "acme/mylib",
    runId: "987654321",
    workflow: "acme/mylib/.github/workflows/release.yml@refs/tags/v1.2.0",
  });
  assert.deepEqual(identity.scope.channels, ["main"]);
  assert.deepEqual([...identity.scope.can], ["upload"]);
  checkScope(identity, { channel: "main", packageName: "mylib-core", action: "upload" });
  assert.throws(
    () => checkScope(identity, { channel: "main", packageName: "other", action: "upload" }),
    {
      status: 403,
      message: "Cannot upload: trusted publisher 'mylib-release' may not publish package 'other'",
    },
  );
  assert.equal(
    await minter.minted.identify(jwt),
    undefined,
    "the ID token itself is no upload token",
  );
  assert.deepEqual(issuer.requests, [
    "/_apis/idtoken",
    "/.well-known/openid-configuration",
    "/.well-known/jwks",
  ]);

  // a second mint uses the cached discovery document and keys
  const second = await minter.mint(await issuer.sign(issuer.githubClaims({ run_id: "2" })));
  assert.notEqual(second.token, minted.token);
  assert.equal(issuer.requests.length, 3);
});

Deno.test("TokenMinter.mint() accepts the server's host name as audience (newer rattler) and ES256 keys", async () => {
  await using issuer = await startOidcIssuer();
  const minter = minterFor(issuer);
  const minted = await minter.mint(
    await actionsIdToken(issuer.actionsEnv, SERVER_NAME, issuer.fetch),
  );
  assert.equal((await minter.minted.identify(minted.token))?.name, "mylib-release");
  const es256 = await minter.mint(
    await issuer.sign(issuer.githubClaims({ aud: [SERVER_NAME] }), { alg: "ES256" }),
  );
  assert.equal((await minter.minted.identify(es256.token))?.name, "mylib-release");
});

Deno.test("TokenMinter.mint() refuses expired, not-yet-valid and future-issued tokens with 401", async () => {
  await using issuer = await startOidcIssuer();
  const minter = minterFor(issuer);
  const now = Math.floor(Date.now() / 1000);
  const expired = await refusal(
    minter.mint(await issuer.sign(issuer.githubClaims({ iat: now - 900, exp: now - 120 }))),
  );
  assert.equal(expired.status, 401);
  assert.equal(
    expired.message,
    `Cannot mint token: the token expired at ${new Date((now - 120) * 1000).toISOString()}`,
  );
  assert.equal(expired.headers["www-authenticate"], 'Bearer realm="artifact-upload-handler"');
  const early = await refusal(
    minter.mint(await issuer.sign(issuer.githubClaims({ nbf: now + 600 }))),
  );
  assert.equal(early.status, 401);
  assert.equal(early.message, "Cannot mint token: the token is not valid yet (nbf)");
  const future = await refusal(
    minter.mint(await issuer.sign(issuer.githubClaims({ iat: now + 600, nbf: now }))),
  );
  assert.equal(future.status, 401);
  assert.equal(future.message, "Cannot mint token: claim 'iat' is in the future");
  const ancient = await refusal(minter.mint(
    await issuer.sign(issuer.githubClaims({ iat: now - 90_000, nbf: now - 90_000 })),
  ));
  assert.equal(ancient.message, "Cannot mint token: claim 'iat' is more than a day ago");
  // a GitLab job token issued at the start of a three-hour build is still fine
  await minter.mint(
    await issuer.sign(issuer.githubClaims({ iat: now - 3 * 3600, nbf: now - 3 * 3600 })),
  );
  // within the leeway of 60 s, a slightly early clock is fine
  await minter.mint(await issuer.sign(issuer.githubClaims({ iat: now + 20, nbf: now + 20 })));
});

Deno.test("TokenMinter.mint() refuses an issuer no publisher trusts, and a token claiming a trusted issuer but signed by another", async () => {
  await using issuer = await startOidcIssuer();
  await using stranger = await startOidcIssuer();
  const minter = minterFor(issuer);
  const untrusted = await refusal(minter.mint(await stranger.sign(stranger.githubClaims())));
  assert.equal(untrusted.status, 401);
  assert.equal(
    untrusted.message,
    `Cannot mint token: issuer '${stranger.issuer}' is not a trusted publisher's issuer`,
  );
  assert.deepEqual(stranger.requests, [], "an untrusted issuer is never contacted");
  const forged = await refusal(
    minter.mint(await stranger.sign(stranger.githubClaims({ iss: issuer.issuer }))),
  );
  assert.equal(forged.status, 401);
  assert.match(forged.message, /^Cannot mint token: the signature does not verify|no key/);
});

Deno.test("TokenMinter.mint() refuses a wrong audience with 401 naming it and what is expected", async () => {
  await using issuer = await startOidcIssuer();
  const minter = minterFor(issuer);
  const error = await refusal(
    minter.mint(await issuer.sign(issuer.githubClaims({ aud: "pypi" }))),
  );
  assert.equal(error.status, 401);
  assert.equal(
    error.message,
    "Cannot mint token: audience 'pypi' is not accepted here (expected 'conda.example.com' or 'prefix.dev')",
  );
  const none = await refusal(
    minter.mint(await issuer.sign(issuer.githubClaims({ aud: undefined }))),
  );
  assert.match(none.message, /audience \(none\) is not accepted/);
});

Deno.test("TokenMinter.mint() refuses a wrong repository, workflow or environment with 403 naming the claim", async () => {
  await using issuer = await startOidcIssuer();
  const minter = minterFor(issuer);
  const repository = await refusal(
    minter.mint(await issuer.sign(issuer.githubClaims({ repository: "evil/mylib" }))),
  );
  assert.equal(repository.status, 403);
  assert.equal(
    repository.message,
    "Cannot mint token: claim 'repository' is 'evil/mylib', which no trusted publisher accepts",
  );
  const workflow = await refusal(minter.mint(
    await issuer.sign(issuer.githubClaims({
      workflow_ref: "acme/mylib/.github/workflows/pr.yml@refs/pull/7/merge",
    })),
  ));
  assert.equal(workflow.status, 403);
  assert.match(workflow.message, /^Cannot mint token: claim 'workflow_ref' is /);
  const environment = await refusal(
    minter.mint(await issuer.sign(issuer.githubClaims({ environment: undefined }))),
  );
  assert.equal(environment.status, 403);
  assert.equal(
    environment.message,
    "Cannot mint token: the token has no claim 'environment', which a trusted publisher requires",
  );
});

Deno.test("TokenMinter.mint() picks the matching publisher of several on one issuer and reports the closest miss", async () => {
  await using issuer = await startOidcIssuer();
  const minter = minterFor(issuer, {
    extra: [{
      name: "acme-nightly",
      issuer: issuer.issuer,
      audience: "nightly.example.com",
      claims: { repository_owner: "acme", ref: "refs/heads/main" },
      packages: ["*-nightly"],
    }],
  });
  const nightly = await minter.mint(
    await issuer.sign(issuer.githubClaims({
      aud: "nightly.example.com",
      repository: "acme/other",
      ref: "refs/heads/main",
    })),
  );
  assert.equal((await minter.minted.identify(nightly.token))?.name, "acme-nightly");
  // prefix.dev audience: only mylib-release accepts it, so its claim is the one reported
  const miss = await refusal(
    minter.mint(await issuer.sign(issuer.githubClaims({ repository: "acme/other" }))),
  );
  assert.equal(
    miss.message,
    "Cannot mint token: claim 'repository' is 'acme/other', which no trusted publisher accepts",
  );
});

Deno.test("TokenMinter.mint() refuses alg none, HS256 keyed with the public key, and a tampered signature", async () => {
  await using issuer = await startOidcIssuer();
  const minter = minterFor(issuer);
  const none = await refusal(
    minter.mint(await issuer.sign(issuer.githubClaims(), { alg: "none" })),
  );
  assert.equal(none.status, 401);
  assert.equal(
    none.message,
    "Cannot mint token: algorithm 'none' is not accepted (RS256, ES256 only)",
  );
  const hs256 = await refusal(
    minter.mint(await issuer.sign(issuer.githubClaims(), { alg: "HS256" })),
  );
  assert.equal(hs256.status, 401);
  assert.equal(
    hs256.message,
    "Cannot mint token: algorithm 'HS256' is not accepted (RS256, ES256 only)",
  );
  const [header, , signature] = (await issuer.sign(issuer.githubClaims())).split(".");
  const evilClaims = jsonPart(issuer.githubClaims({ repository: "acme/mylib", ref: "x" }));
  const tampered = await refusal(minter.mint(`${header}.${evilClaims}.${signature}`));
  assert.equal(tampered.status, 401);
  assert.equal(
    tampered.message,
    "Cannot mint token: the signature does not verify with the issuer's key",
  );
  const garbage = await refusal(minter.mint("not-a-jwt"));
  assert.equal(garbage.status, 401);
  assert.equal(garbage.message, "Cannot mint token: the token is not a JWT");
  assert.equal(minter.minted.size, 0, "nothing was minted");
});

Deno.test("TokenMinter.mint() fetches the JWKS again for an unknown kid: a rotated key is accepted, an unpublished one refused", async () => {
  await using issuer = await startOidcIssuer();
  const minter = minterFor(issuer);
  await minter.mint(await issuer.sign(issuer.githubClaims()));
  assert.equal(issuer.requests.filter((path) => path === "/.well-known/jwks").length, 1);

  const rotated = await issuer.addKey("RS256");
  const fresh = await minter.mint(await issuer.sign(issuer.githubClaims(), { kid: rotated }));
  assert.ok(fresh.token);
  assert.equal(issuer.requests.filter((path) => path === "/.well-known/jwks").length, 2);

  const secret = await issuer.addKey("RS256", { published: false });
  const unknown = await refusal(
    minter.mint(await issuer.sign(issuer.githubClaims(), { kid: secret })),
  );
  assert.equal(unknown.status, 401);
  assert.equal(unknown.message, `Cannot mint token: the issuer has no key '${secret}' (kid)`);
  assert.equal(
    issuer.requests.filter((path) => path === "/.well-known/jwks").length,
    3,
    "the key set was fetched again before refusing",
  );
});

Deno.test("OidcVerifier refetches the JWKS for unknown kids at most once per cool-down", async () => {
  await using issuer = await startOidcIssuer();
  const verifier = new OidcVerifier({ fetch: issuer.fetch, jwksCooldownMs: 60_000 });
  await verifier.verify(await issuer.sign(issuer.githubClaims()), issuer.issuer);
  const secret = await issuer.addKey("ES256", { published: false });
  for (let i = 0; i < 5; i++) {
    await assert.rejects(
      verifier.verify(await issuer.sign(issuer.githubClaims(), { kid: secret }), issuer.issuer),
      { name: "OidcTokenRejected" },
    );
  }
  assert.equal(issuer.requests.filter((path) => path === "/.well-known/jwks").length, 1);
});

Deno.test("TokenMinter.mint() answers 502 when the issuer cannot be reached, and asks it again only after a pause", async () => {
  await using issuer = await startOidcIssuer();
  let now = Date.now();
  const verifier = new OidcVerifier({
    jwksCooldownMs: 0,
    discoveryRetryMs: 10_000,
    now: () => now,
  });
  // the global fetch does not trust the issuer's CA (no DENO_CERT here)
  const minter = new TokenMinter(publishersFor(issuer.issuer), { verifier });
  const jwt = await issuer.sign(issuer.githubClaims());
  const error = await refusal(minter.mint(jwt));
  assert.equal(error.status, 502);
  assert.match(
    error.message,
    /^Cannot mint token: cannot fetch the issuer's discovery document https:\/\/localhost:\d+\/\.well-known\/openid-configuration: /,
  );
  const again = await refusal(minter.mint(jwt));
  assert.equal(again.message, error.message);
  now += 11_000;
  await refusal(minter.mint(jwt));
  assert.deepEqual(issuer.requests, [], "TLS failed before any request reached the issuer");
});

Deno.test("minted tokens expire after their lifetime and are then forgotten", async () => {
  await using issuer = await startOidcIssuer();
  let now = Date.now();
  const minted = new MintedTokens({ now: () => now });
  const minter = minterFor(issuer, { minted });
  const { token, expiresAt } = await minter.mint(await issuer.sign(issuer.githubClaims()));
  assert.equal(expiresAt.getTime(), now + 15 * 60_000);
  now += 15 * 60_000 - 1;
  assert.equal((await minted.identify(token))?.name, "mylib-release");
  now += 1;
  assert.equal(await minted.identify(token), undefined);
  assert.equal(minted.size, 0);
});

Deno.test("MintedTokens refuses to mint past maxLive until tokens expire (503 from the minter)", async () => {
  await using issuer = await startOidcIssuer();
  let now = Date.now();
  const minted = new MintedTokens({ now: () => now, maxLive: 2, ttlMs: 1000 });
  const minter = minterFor(issuer, { minted });
  await minter.mint(await issuer.sign(issuer.githubClaims()));
  await minter.mint(await issuer.sign(issuer.githubClaims()));
  const full = await refusal(minter.mint(await issuer.sign(issuer.githubClaims())));
  assert.equal(full.status, 503);
  assert.equal(full.headers["retry-after"], "60");
  now += 1000;
  await minter.mint(await issuer.sign(issuer.githubClaims()));
  assert.equal(minted.size, 1);
});

Deno.test('readMintTokenRequest() refuses bodies that are not {"token": "..."} with 400 and large ones with 413', async () => {
  const post = (body: BodyInit) =>
    new Request("https://x.example/api/oidc/mint_token", { method: "POST", body });
  for (const body of ["", "null", "[]", '{"token": 5}', '{"token": ""}', '{"jwt": "a.b.c"}', "{"]) {
    const error = await refusal(readMintTokenRequest(post(body)));
    assert.equal(error.status, 400, body);
    assert.equal(
      error.message,
      'Cannot mint token: expected the JSON body {"token": "<OIDC ID token>"}',
    );
  }
  const large = await refusal(
    readMintTokenRequest(post(JSON.stringify({ token: "x".repeat(MAX_MINT_REQUEST_BYTES) }))),
  );
  assert.equal(large.status, 413);
  // streamed (no Content-Length) is counted too
  const stream = new Blob([JSON.stringify({ token: "y".repeat(MAX_MINT_REQUEST_BYTES) })]).stream();
  const streamed = await refusal(readMintTokenRequest(post(stream)));
  assert.equal(streamed.status, 413);
});

Deno.test("the issuer's TLS is verified with the CA that DENO_CERT names, and refused without it", async () => {
  await using issuer = await startOidcIssuer();
  const jwt = await issuer.sign(issuer.githubClaims());
  const script = `
    import { OidcVerifier } from "./src/auth/oidc_verifier.ts";
    try {
      const claims = await new OidcVerifier().verify(Deno.args[0], Deno.args[1]);
      console.log("verified " + claims.repository);
    } catch (error) {
      console.log(error.name + ": " + error.message);
    }
  `;
  const run = async (env: Record<string, string>) => {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--quiet", "--ext=ts", script, jwt, issuer.issuer],
      cwd: fileURLToPath(new URL("..", import.meta.url)),
      env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const text = new TextDecoder().decode(output.stdout).trim();
    assert.ok(output.success, new TextDecoder().decode(output.stderr));
    return text;
  };
  const home = { HOME: Deno.env.get("HOME") ?? "/root", PATH: Deno.env.get("PATH") ?? "" };
  const cache = Deno.env.get("DENO_DIR");
  const base = cache === undefined ? home : { ...home, DENO_DIR: cache };
  assert.equal(await run({ ...base, DENO_CERT: issuer.caFile }), "verified acme/mylib");
  assert.match(
    await run(base),
    /^OidcIssuerUnavailable: cannot fetch the issuer's discovery document .*(certificate|UnknownIssuer)/i,
  );
});

function jsonPart(value: unknown): string {
  const bytes = new TextEncoder().encode(JSON.stringify(value));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_")
    .replaceAll("=", "");
}
