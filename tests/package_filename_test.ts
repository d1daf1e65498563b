import assert from "node:assert/strict";
import { httpErrorOf } from "../src/http/http_error.ts";
import { STATUS } from "../src/http/status.ts";
import { parsePackageFilename } from "../src/package/package_filename.ts";

function assertRefused(filename: string, status: number, pattern: RegExp): void {
  assert.throws(
    () => parsePackageFilename(filename),
    (error: unknown) => {
      assert.ok(
        error instanceof SyntaxError || error instanceof TypeError,
        `expected a filename error for ${JSON.stringify(filename)}`,
      );
      assert.equal(httpErrorOf(error)?.status, status, `status for ${JSON.stringify(filename)}`);
      assert.match(error.message, /^Cannot accept filename: /);
      assert.match(error.message, pattern);
      assert.ok(!/[\r\n]/.test(error.message));
      return true;
    },
  );
}

Deno.test("parsePackageFilename() splits .conda and .tar.bz2 names", () => {
  assert.deepEqual(parsePackageFilename("foo-1.0-0.conda"), {
    stem: "foo-1.0-0",
    format: ".conda",
  });
  assert.deepEqual(parsePackageFilename("foo-bar-1.2.3-py312h1234_5.tar.bz2"), {
    stem: "foo-bar-1.2.3-py312h1234_5",
    format: ".tar.bz2",
  });
  assert.deepEqual(parsePackageFilename("_libgcc_mutex-0.1-main.conda"), {
    stem: "_libgcc_mutex-0.1-main",
    format: ".conda",
  });
});

Deno.test("parsePackageFilename() accepts a name of exactly 255 bytes", () => {
  const name = "a".repeat(255 - ".conda".length) + ".conda";
  assert.equal(parsePackageFilename(name).stem.length, 249);
});

Deno.test("parsePackageFilename() refuses names that are not plain basenames with 400", () => {
  const cases: [string, RegExp][] = [
    ["", /empty/],
    ["a/foo-1.0-0.conda", /path separator/],
    ["/etc/foo-1.0-0.conda", /path separator/],
    ["..\\foo-1.0-0.conda", /path separator/],
    ["dir\\foo-1.0-0.tar.bz2", /path separator/],
    ["..", /"\.\."/],
    ["foo-1.0..1-0.conda", /"\.\."/],
    [".foo-1.0-0.conda", /starts with a dot/],
    [".conda", /starts with a dot/],
    [".tar.bz2", /starts with a dot/],
    ["foo\0-1.0-0.conda", /control characters/],
    ["foo\n-1.0-0.conda", /control characters/],
    ["foo\r-1.0-0.conda", /control characters/],
    ["foo\t-1.0-0.conda", /control characters/],
    ["foo\x7f-1.0-0.conda", /control characters/],
    ["a".repeat(250) + ".conda", /longer than 255 bytes/],
    // 85 three-byte characters = 255 bytes, plus the extension
    ["\u20ac".repeat(85) + ".conda", /longer than 255 bytes/],
  ];
  for (const [filename, pattern] of cases) assertRefused(filename, STATUS.BadRequest, pattern);
});

Deno.test("parsePackageFilename() refuses other extensions with 415", () => {
  for (
    const filename of [
      "foo-1.0-0.tar.gz",
      "foo-1.0-0.zip",
      "foo-1.0-0.whl",
      "foo-1.0-0.CONDA",
      "foo-1.0-0.conda.exe",
      "foo-1.0-0.bz2",
      "foo-1.0-0",
    ]
  ) {
    assertRefused(filename, STATUS.UnsupportedMediaType, /extension is not \.tar\.bz2 or \.conda/);
  }
});

Deno.test("parsePackageFilename() checks the basename before the extension", () => {
  assertRefused("../evil.txt", STATUS.BadRequest, /path separator/);
  assertRefused(".hidden", STATUS.BadRequest, /starts with a dot/);
});
