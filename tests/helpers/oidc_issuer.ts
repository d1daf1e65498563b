/**
 * A local OIDC issuer for trusted-publishing tests: its own CA and TLS
 * certificate, its own signing keys (RS256 and ES256, made by `jose` with
 * WebCrypto), and over HTTPS on loopback the OpenID discovery document and
 * the JWKS, as GitHub's and GitLab's issuers serve them. It signs ID tokens
 * with any claims, algorithm and key id, publishes new keys (a rotation),
 * and counts the requests it serves. It also plays the GitHub Actions
 * runtime's ID token endpoint (`$ACTIONS_ID_TOKEN_REQUEST_URL`), which
 * rattler-build and pixi ask for a token of an audience.
 *
 * @module
 */

import * as jose from "jose";
import { join } from "node:path";
import { createSelfSignedCertificate } from "../../src/tls/self_signed_certificate.ts";

/** A signing key of the issuer. */
interface SigningKey {
  kid: string;
  alg: "RS256" | "ES256";
  privateKey: CryptoKey;
  publicJwk: jose.JWK;
  /** Whether the JWKS lists it. */
  published: boolean;
}

/** Options for {@linkcode OidcIssuer.sign}. */
export interface SignOptions {
  /**
   * The algorithm: a published key's RS256/ES256, or `none` (no signature),
   * or `HS256` (keyed with the RS256 key's public JWK, the classic confusion).
   * @default {"RS256"}
   */
  alg?: "RS256" | "ES256" | "none" | "HS256";
  /** The key id to sign with; default: the newest published key of `alg`. */
  kid?: string;
  /** Leave `kid` out of the header. */
  omitKid?: boolean;
}

/** A running local issuer. */
export interface OidcIssuer extends AsyncDisposable {
  /** The issuer URL, `https://localhost:PORT` (the `iss` claim). */
  issuer: string;
  /** The issuer's CA certificate (PEM). */
  ca: string;
  /** A file holding {@linkcode OidcIssuer.ca}, for `DENO_CERT`. */
  caFile: string;
  /** A fetch that trusts {@linkcode OidcIssuer.ca}. */
  fetch: typeof fetch;
  /** Paths requested so far, in order. */
  requests: string[];
  /**
   * What a GitHub Actions job with `id-token: write` has in its environment:
   * `ACTIONS_ID_TOKEN_REQUEST_URL` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN`. A GET
   * of the URL with `&audience=AUD` and `Authorization: bearer TOKEN`
   * answers `{"value": "<JWT>"}` with {@linkcode OidcIssuer.githubClaims}
   * for that audience.
   */
  actionsEnv: { ACTIONS_ID_TOKEN_REQUEST_URL: string; ACTIONS_ID_TOKEN_REQUEST_TOKEN: string };
  /** The audiences asked for at the Actions endpoint, in order. */
  audiencesRequested: string[];
  /** Signs `claims` (nothing is added). */
  sign(claims: Record<string, unknown>, options?: SignOptions): Promise<string>;
  /** A new key of `alg`, published in the JWKS unless `published` is false; returns its kid. */
  addKey(alg: "RS256" | "ES256", options?: { published?: boolean }): Promise<string>;
  /** GitHub Actions-like claims for `acme/mylib`'s release workflow, valid for 5 minutes. */
  githubClaims(overrides?: Record<string, unknown>): Record<string, unknown>;
}

/** Starts an issuer on `https://localhost:0` with one published RS256 and one ES256 key. */
export async function startOidcIssuer(): Promise<OidcIssuer> {
  const pem = await createSelfSignedCertificate();
  const dir = await Deno.makeTempDir({ prefix: "auh-oidc-" });
  const caFile = join(dir, "issuer-ca.pem");
  await Deno.writeTextFile(caFile, pem.ca);
  const keys: SigningKey[] = [];
  const requests: string[] = [];
  const audiencesRequested: string[] = [];
  const requestToken = crypto.randomUUID();
  let issuer = "";
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: pem.cert,
    key: pem.key,
    onListen: () => {},
  }, async (request) => {
    const url = new URL(request.url);
    const { pathname } = url;
    requests.push(pathname);
    if (pathname === "/_apis/idtoken") {
      if (request.headers.get("authorization")?.toLowerCase() !== `bearer ${requestToken}`) {
        return new Response("bad request token\n", { status: 401 });
      }
      const audience = url.searchParams.get("audience");
      if (audience === null) return new Response("no audience\n", { status: 400 });
      audiencesRequested.push(audience);
      return Response.json({ value: await sign(githubClaims({ aud: audience })) });
    }
    if (pathname === "/.well-known/openid-configuration") {
      return Response.json({
        issuer,
        jwks_uri: `${issuer}/.well-known/jwks`,
        subject_types_supported: ["public"],
        response_types_supported: ["id_token"],
        id_token_signing_alg_values_supported: ["RS256", "ES256"],
      });
    }
    if (pathname === "/.well-known/jwks") {
      return Response.json({
        keys: keys.filter((key) => key.published).map((key) => key.publicJwk),
      });
    }
    return new Response("not found\n", { status: 404 });
  });
  issuer = `https://localhost:${server.addr.port}`;
  const client = Deno.createHttpClient({ caCerts: [pem.ca] });

  const addKey = async (alg: "RS256" | "ES256", options: { published?: boolean } = {}) => {
    const { privateKey, publicKey } = await jose.generateKeyPair(alg, { extractable: true });
    const kid = `${alg.toLowerCase()}-${keys.length + 1}`;
    const publicJwk = { ...await jose.exportJWK(publicKey), kid, alg, use: "sig" };
    keys.push({ kid, alg, privateKey, publicJwk, published: options.published ?? true });
    return kid;
  };
  await addKey("RS256");
  await addKey("ES256");

  async function sign(claims: Record<string, unknown>, options: SignOptions = {}) {
    const alg = options.alg ?? "RS256";
    if (alg === "none") {
      const part = (value: unknown) => jose.base64url.encode(JSON.stringify(value));
      return `${part({ alg: "none", typ: "JWT" })}.${part(claims)}.`;
    }
    if (alg === "HS256") {
      const rsa = keys.find((key) => key.alg === "RS256")!;
      const secret = new TextEncoder().encode(JSON.stringify(rsa.publicJwk));
      return await new jose.SignJWT(claims as jose.JWTPayload)
        .setProtectedHeader({ alg, typ: "JWT", kid: rsa.kid })
        .sign(secret);
    }
    const key = options.kid === undefined
      ? keys.findLast((candidate) => candidate.alg === alg && candidate.published)
      : keys.find((candidate) => candidate.kid === options.kid);
    if (key === undefined) throw new Error(`no ${alg} key ${options.kid ?? ""}`);
    const header: jose.JWTHeaderParameters = { alg: key.alg, typ: "JWT" };
    if (!options.omitKid) header.kid = key.kid;
    return await new jose.SignJWT(claims as jose.JWTPayload).setProtectedHeader(header)
      .sign(key.privateKey);
  }

  function githubClaims(overrides: Record<string, unknown> = {}) {
    const now = Math.floor(Date.now() / 1000);
    return {
      iss: issuer,
      aud: "prefix.dev",
      sub: "repo:acme/mylib:environment:release",
      repository: "acme/mylib",
      repository_owner: "acme",
      repository_id: "4242",
      workflow: "release",
      workflow_ref: "acme/mylib/.github/workflows/release.yml@refs/tags/v1.2.0",
      job_workflow_ref: "acme/mylib/.github/workflows/release.yml@refs/tags/v1.2.0",
      ref: "refs/tags/v1.2.0",
      environment: "release",
      run_id: "987654321",
      iat: now,
      nbf: now - 5,
      exp: now + 300,
      ...overrides,
    };
  }

  return {
    issuer,
    ca: pem.ca,
    caFile,
    fetch:
      ((input: string | URL | Request, init?: RequestInit) =>
        fetch(input, { ...init, client })) as typeof fetch,
    requests,
    actionsEnv: {
      ACTIONS_ID_TOKEN_REQUEST_URL: `${issuer}/_apis/idtoken?api-version=2.0`,
      ACTIONS_ID_TOKEN_REQUEST_TOKEN: requestToken,
    },
    audiencesRequested,
    sign,
    addKey,
    githubClaims,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      client.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
