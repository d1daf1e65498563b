import assert from "node:assert/strict";
import { isKnownSubdir, isSubdirName, KNOWN_SUBDIRS, subdirOf } from "../src/package/platforms.ts";

Deno.test("isSubdirName() takes every known subdir and new <platform>-<arch> names", () => {
  for (const name of KNOWN_SUBDIRS) assert.ok(isSubdirName(name), name);
  for (const name of ["linux-fake", "linux-loongarch64", "plan9-64", "osx-arm64e", "zos-z"]) {
    assert.ok(isSubdirName(name), name);
    assert.equal(isKnownSubdir(name), KNOWN_SUBDIRS.has(name));
  }
});

Deno.test("isSubdirName() refuses what could disguise a path or a file", () => {
  for (
    const name of [
      "",
      "noarch ",
      "Linux-64",
      "linux_64",
      "linux",
      "-64",
      "linux-",
      ".upload-spool",
      "../linux-64",
      "linux-64/..",
      "linux-64\0",
      "shards",
      "linux-６４",
      `linux-${"x".repeat(40)}`,
    ]
  ) {
    assert.ok(!isSubdirName(name), JSON.stringify(name));
  }
});

Deno.test("subdirOf() derives the subdir from platform and arch as conda does", () => {
  const cases: [Record<string, unknown>, string | undefined][] = [
    [{ subdir: "linux-64", platform: "osx", arch: "x86_64" }, "linux-64"],
    [{ platform: "osx", arch: "x86_64" }, "osx-64"],
    [{ platform: "win", arch: "x86" }, "win-32"],
    [{ platform: "linux", arch: "ppc64le" }, "linux-ppc64le"],
    [{ platform: "linux", arch: null }, "noarch"],
    [{ platform: null, arch: null, noarch: "generic" }, "noarch"],
    [{ platform: null, arch: null }, undefined],
    [{}, undefined],
    [{ subdir: 64 }, ""],
    [{ platform: "linux", arch: 64 }, undefined],
  ];
  for (const [index, expected] of cases) {
    assert.equal(subdirOf(index), expected, JSON.stringify(index));
  }
});
