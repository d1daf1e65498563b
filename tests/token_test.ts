import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { DEFAULT_SALT, generateToken, hashToken, isTokenHash } from "../src/auth/token_hash.ts";
import { TokenVerifier } from "../src/auth/token_verifier.ts";

/** The original tool's salt, written out here independently of the module. */
const ORIGINAL_SALT = "42679ad04d44c96ed27470c02bfb28c3";

const TOKENS = ["mysecuretoken", "eccd989b", "tøken ✓ with spaces", "a", "token"];
const OTHER_SALT = "pepper-0123";

/**
 * sha256(salt + token) in hex for every token with the original salt (and
 * "mysecuretoken" with {@linkcode OTHER_SALT}), computed by python3's hashlib
 * from the literal salt, in one python3 run.
 */
const PYTHON_HASHES: Map<string, string> = await (async () => {
  const pairs = [
    ...TOKENS.map((token) => [ORIGINAL_SALT, token]),
    [OTHER_SALT, "mysecuretoken"],
  ];
  const output = await new Deno.Command("python3", {
    args: [
      "-c",
      "import hashlib, json, sys\n" +
      "for salt, token in json.loads(sys.argv[1]):\n" +
      "    print(hashlib.sha256((salt + token).encode('utf-8')).hexdigest())",
      JSON.stringify(pairs),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  const hashes = new TextDecoder().decode(output.stdout).trim().split("\n");
  assert.equal(hashes.length, pairs.length);
  return new Map(pairs.map(([salt, token], index) => [`${salt}:${token}`, hashes[index]!]));
})();

function pythonHash(token: string, salt = ORIGINAL_SALT): string {
  const hash = PYTHON_HASHES.get(`${salt}:${token}`);
  assert.ok(hash, `no python3 hash for ${token}`);
  return hash;
}

function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

Deno.test("DEFAULT_SALT is the original tool's salt", () => {
  assert.equal(DEFAULT_SALT, ORIGINAL_SALT);
});

Deno.test("hashToken() equals python3 hashlib.sha256(salt + token) with the original salt", async () => {
  for (const token of TOKENS) {
    const expected = pythonHash(token);
    assert.match(expected, /^[0-9a-f]{64}$/);
    assert.equal(await hashToken(token), expected, token);
    assert.equal(await hashToken(token, DEFAULT_SALT), expected, token);
  }
});

Deno.test("hashToken() uses a given salt the same way", async () => {
  const salt = OTHER_SALT;
  assert.equal(await hashToken("mysecuretoken", salt), pythonHash("mysecuretoken", salt));
  assert.notEqual(await hashToken("mysecuretoken", salt), await hashToken("mysecuretoken"));
  assert.equal(await hashToken("token", ""), sha256Hex("token"));
});

Deno.test("isTokenHash() accepts 64 hex digits in either case only", async () => {
  const hash = await hashToken("x");
  assert.ok(isTokenHash(hash));
  assert.ok(isTokenHash(hash.toUpperCase()));
  for (const bad of ["", hash.slice(1), `${hash}0`, `${hash.slice(1)}g`, ` ${hash.slice(1)}`]) {
    assert.ok(!isTokenHash(bad), bad);
  }
});

Deno.test("generateToken() returns distinct 256-bit URL-safe tokens", () => {
  const tokens = new Set(Array.from({ length: 100 }, generateToken));
  assert.equal(tokens.size, 100);
  for (const token of tokens) assert.match(token, /^[A-Za-z0-9_-]{43}$/);
});

Deno.test("TokenVerifier.identify() accepts the token of a configured hash and names it", async () => {
  const token = "mysecuretoken";
  const hash = await hashToken(token);
  const verifier = new TokenVerifier([hash]);
  assert.equal(verifier.size, 1);
  const identity = await verifier.identify(token);
  // The name derives from the hash (never the token): "token:" + 8 hex of sha256(hash).
  assert.equal(identity?.name, `token:${sha256Hex(hash).slice(0, 8)}`);
  assert.equal(identity?.kind, "token");
  assert.deepEqual(
    [...identity!.scope.can],
    ["upload", "overwrite", "delete"],
    "a bare hash may do everything",
  );
  assert.equal((await verifier.identify(token))?.name, identity.name, "stable across calls");
  assert.ok(!identity.name.includes(token));
});

Deno.test("TokenVerifier.identify() refuses wrong, empty, padded and oversized tokens", async () => {
  const token = "mysecuretoken";
  const verifier = new TokenVerifier([await hashToken(token)]);
  for (
    const wrong of [
      "",
      "mysecuretoken ",
      " mysecuretoken",
      "MYSECURETOKEN",
      "mysecuretoke",
      "mysecuretokenx",
      await hashToken(token),
      "x".repeat(5000),
    ]
  ) {
    assert.equal(await verifier.identify(wrong), undefined, JSON.stringify(wrong.slice(0, 40)));
  }
});

Deno.test("TokenVerifier.identify() accepts each of several hashes, as during a rotation", async () => {
  const tokens = ["old-token", "new-token", "ci-token"];
  const hashes = await Promise.all(tokens.map((token) => hashToken(token)));
  const verifier = new TokenVerifier([hashes[0]!, hashes[1]!.toUpperCase(), hashes[2]!]);
  assert.equal(verifier.size, 3);
  const principals = await Promise.all(
    tokens.map(async (token) => (await verifier.identify(token))?.name),
  );
  for (const [index, principal] of principals.entries()) {
    assert.equal(principal, `token:${sha256Hex(hashes[index]!).slice(0, 8)}`);
  }
  assert.equal(new Set(principals).size, 3, "each hash is its own principal");
  assert.equal(await verifier.identify("retired-token"), undefined);
  assert.equal(await new TokenVerifier([]).identify("old-token"), undefined);
});

Deno.test("TokenVerifier uses its salt for every comparison", async () => {
  const salted = new TokenVerifier([await hashToken("token", "other-salt")], "other-salt");
  assert.ok(await salted.identify("token"));
  const defaultSalt = new TokenVerifier([await hashToken("token", "other-salt")]);
  assert.equal(await defaultSalt.identify("token"), undefined);
  const original = new TokenVerifier([pythonHash("token")]);
  assert.ok(await original.identify("token"), "a hash made by the original tool works");
});

Deno.test("new TokenVerifier() throws TypeError for a hash that is not 64 hex digits", async () => {
  const hash = await hashToken("x");
  for (const bad of ["", "eccd989b", hash.slice(1), `${hash.slice(1)}z`]) {
    assert.throws(() => new TokenVerifier([hash, bad]), TypeError);
  }
});
