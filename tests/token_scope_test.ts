import assert from "node:assert/strict";
import { matchesEverything, matchGlob } from "../src/auth/glob_pattern.ts";
import {
  checkScope,
  type Identity,
  identityFields,
  scopeFromLists,
  scopeViolation,
  UNRESTRICTED_SCOPE,
} from "../src/auth/token_scope.ts";
import { HttpError } from "../src/http/http_error.ts";

Deno.test("matchGlob() matches * and ? anchored at both ends, everything else literally", () => {
  const cases: [string, string, boolean][] = [
    ["mylib", "mylib", true],
    ["mylib", "mylib-core", false],
    ["mylib", "xmylib", false],
    ["mylib-*", "mylib-core", true],
    ["mylib-*", "mylib-", true],
    ["mylib-*", "mylib", false],
    ["*-nightly", "foo-nightly", true],
    ["*-nightly", "foo-nightly-x", false],
    ["v?.*", "v1.2.3", true],
    ["v?.*", "v10.2", false],
    ["*", "", true],
    ["", "", true],
    ["", "a", false],
    ["a*b*c", "abc", true],
    ["a*b*c", "aXbYbZc", true],
    ["a*b*c", "aXbYbZcd", false],
    [
      "acme/mylib/.github/workflows/release.yml@refs/tags/v*",
      "acme/mylib/.github/workflows/release.yml@refs/tags/v1.0",
      true,
    ],
    [
      "acme/*/.github/workflows/release.yml@*",
      "acme/x/y/.github/workflows/release.yml@refs/heads/main",
      true,
    ],
    // regex metacharacters are literal
    ["a.c", "abc", false],
    ["a+", "aa", false],
    ["(a|b)", "(a|b)", true],
    ["[ab]", "a", false],
    ["\\d", "\\d", true],
  ];
  for (const [pattern, value, expected] of cases) {
    assert.equal(matchGlob(pattern, value), expected, `${pattern} vs ${value}`);
  }
  assert.ok(matchesEverything("*") && matchesEverything("***"));
  assert.ok(!matchesEverything("*a") && !matchesEverything("?") && !matchesEverything(""));
});

Deno.test("matchGlob() stays fast on a hostile pattern and value (no backtracking blow-up)", () => {
  const pattern = "*a".repeat(50) + "b";
  const value = "a".repeat(20_000);
  const started = performance.now();
  assert.equal(matchGlob(pattern, value), false);
  // O(pattern × value) = 2 million steps at most; a backtracking regex would never finish
  assert.ok(performance.now() - started < 5_000);
});

const ciMylib: Identity = {
  kind: "token",
  name: "ci-mylib",
  scope: scopeFromLists({ channels: ["main"], packages: ["mylib", "mylib-*"], can: ["upload"] }),
};

Deno.test("scopeViolation() explains an action, channel or package outside the scope", () => {
  const upload = { channel: "main", packageName: "mylib-core", action: "upload" } as const;
  assert.equal(scopeViolation(ciMylib, upload), undefined);
  assert.equal(scopeViolation(ciMylib, { ...upload, packageName: "MyLib" }), undefined);
  assert.equal(
    scopeViolation(ciMylib, { ...upload, packageName: "other" }),
    "Cannot upload: token 'ci-mylib' may not publish package 'other'",
  );
  assert.equal(
    scopeViolation(ciMylib, { ...upload, packageName: "mylibx" }),
    "Cannot upload: token 'ci-mylib' may not publish package 'mylibx'",
  );
  assert.equal(
    scopeViolation(ciMylib, { ...upload, channel: "staging" }),
    "Cannot upload: token 'ci-mylib' may not publish to channel 'staging'",
  );
  assert.equal(
    scopeViolation(ciMylib, { ...upload, action: "overwrite" }),
    "Cannot upload: token 'ci-mylib' may not overwrite packages (it can upload)",
  );
  assert.equal(
    scopeViolation(ciMylib, { ...upload, action: "delete" }),
    "Cannot delete: token 'ci-mylib' may not delete packages (it can upload)",
  );
  const deleter: Identity = {
    kind: "publisher",
    name: "cleanup",
    scope: scopeFromLists({ channels: ["main"], can: ["delete"] }),
  };
  assert.equal(
    scopeViolation(deleter, { channel: "other", packageName: "x", action: "delete" }),
    "Cannot delete: trusted publisher 'cleanup' may not delete in channel 'other'",
  );
  assert.equal(
    scopeViolation({ ...ciMylib, name: "a\nb" }, { ...upload, packageName: "x\r\ny" }),
    "Cannot upload: token 'ab' may not publish package 'xy'",
    "no line breaks reach a reason",
  );
});

Deno.test("checkScope() throws a 403 HttpError with the reason; an unrestricted identity may do anything", () => {
  assert.throws(
    () => checkScope(ciMylib, { channel: "main", packageName: "other", action: "upload" }),
    (error) =>
      error instanceof HttpError && error.status === 403 &&
      error.message === "Cannot upload: token 'ci-mylib' may not publish package 'other'",
  );
  const admin: Identity = { kind: "token", name: "admin", scope: UNRESTRICTED_SCOPE };
  for (const action of ["upload", "overwrite", "delete"] as const) {
    checkScope(admin, { channel: "any", packageName: "thing", action });
  }
});

Deno.test("scopeFromLists() checks names, globs and actions, and treats an absent list as any", () => {
  const any = scopeFromLists({});
  assert.equal(any.channels, undefined);
  assert.equal(any.packages, undefined);
  assert.deepEqual([...any.can], ["upload", "overwrite", "delete"]);
  assert.deepEqual(scopeFromLists({ packages: ["MyLib-*"] }).packages, ["mylib-*"]);
  const bad: [Parameters<typeof scopeFromLists>[0], RegExp][] = [
    [
      { can: ["upload", "publish"] },
      /^can: 'publish' is not an action \(expected upload, overwrite, delete\)$/,
    ],
    [{ can: ["overwrite"] }, /^can: overwrite needs upload too/],
    [{ can: [] }, /^can: a list of names may not be empty/],
    [{ channels: ["main", ""] }, /^channels: a list of names may not be empty/],
    [{ channels: ["a/b"] }, /^channels: 'a\/b' is not a channel name$/],
    [{ packages: ["my lib"] }, /^packages: 'my lib' is not a package name or glob/],
    [{ packages: ["[ab]"] }, /^packages: '\[ab\]' is not a package name or glob/],
  ];
  for (const [lists, message] of bad) {
    assert.throws(() => scopeFromLists(lists), (error) => {
      assert.ok(error instanceof SyntaxError);
      assert.match(error.message, message);
      return true;
    });
  }
});

Deno.test("identityFields() names a token by its name and a trusted publisher with its CI run", () => {
  assert.deepEqual(identityFields(ciMylib), { by: "ci-mylib" });
  assert.deepEqual(
    identityFields({
      kind: "publisher",
      name: "mylib-release",
      scope: UNRESTRICTED_SCOPE,
      run: {
        repository: "acme/mylib",
        runId: "987654321",
        workflow: "acme/mylib/.github/workflows/release.yml@refs/tags/v1.2.0",
      },
    }),
    {
      by: "mylib-release",
      ci_repository: "acme/mylib",
      ci_run_id: "987654321",
      ci_workflow: "acme/mylib/.github/workflows/release.yml@refs/tags/v1.2.0",
    },
  );
});
