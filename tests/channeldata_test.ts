import assert from "node:assert/strict";
import {
  Channeldata,
  CHANNELDATA_FLAGS,
  channeldataEntry,
  type ChanneldataInput,
} from "../src/index/channeldata.ts";
import { indexedPackage, type PackageExtras } from "../src/index/subdir_index.ts";

function input(
  version: string,
  options: { subdir?: string; timestamp?: number; extras?: PackageExtras; build?: string } = {},
): ChanneldataInput {
  const build = options.build ?? "0";
  return {
    subdir: options.subdir ?? "linux-64",
    pkg: indexedPackage(
      `foo-${version}-${build}.conda`,
      { name: "foo", version, build, timestamp: options.timestamp ?? 1700000000000 },
      options.extras,
    ),
  };
}

Deno.test("channeldataEntry() takes the newest version in conda's version order", () => {
  const entry = channeldataEntry([
    input("1.9", { extras: { about: { summary: "nine" } } }),
    input("1.10", { extras: { about: { summary: "ten" } } }),
    input("1.10a1", { extras: { about: { summary: "alpha" } } }),
    input("not a version!", { extras: { about: { summary: "junk" } } }),
  ]);
  assert.equal(entry?.version, "1.10");
  assert.equal(entry?.summary, "ten");
});

Deno.test("channeldataEntry() breaks version ties by the newer timestamp, in seconds", () => {
  const entry = channeldataEntry([
    input("1.0", { build: "a", timestamp: 1700000000000, extras: { about: { home: "old" } } }),
    input("1.0", { build: "b", timestamp: 1700000500, extras: { about: { home: "new" } } }),
  ]);
  assert.equal(entry?.home, "new");
  assert.equal(entry?.timestamp, 1700000500);
});

Deno.test("channeldataEntry() takes each field from the newest package that has it", () => {
  const entry = channeldataEntry([
    input("2.0", { extras: { about: { summary: "two", doc_url: "" } } }),
    input("1.0", { extras: { about: { summary: "one", doc_url: "https://doc", tags: ["x"] } } }),
  ]);
  assert.equal(entry?.summary, "two");
  assert.equal(entry?.doc_url, "https://doc");
  assert.deepEqual(entry?.tags, ["x"]);
  assert.equal("dev_url" in entry!, false, "unknown fields are left out, not null");
  for (const flag of CHANNELDATA_FLAGS) assert.equal(entry?.[flag], false);
});

Deno.test("channeldataEntry() keeps one run_exports per version, from its newest build", () => {
  const entry = channeldataEntry([
    input("1.0", { build: "old", timestamp: 1, extras: { runExports: { weak: ["old"] } } }),
    input("1.0", { build: "new", timestamp: 2, extras: { runExports: { weak: ["new"] } } }),
    input("2.0", { subdir: "noarch", extras: {} }),
  ]);
  assert.deepEqual(entry?.run_exports, { "1.0": { weak: ["new"] } });
  assert.deepEqual(entry?.subdirs, ["linux-64", "noarch"]);
});

Deno.test("channeldataEntry() falls back to the previous entry for packages it knows no extras of", () => {
  const previous = {
    version: "1.0",
    summary: "from disk",
    home: "https://home",
    run_exports: { "1.0": { strong: ["foo"] }, "0.5": { strong: ["gone"] } },
    binary_prefix: true,
  };
  // Loaded from repodata.json: no extras known.
  const known = channeldataEntry([input("1.0")], previous);
  assert.equal(known?.summary, "from disk");
  assert.deepEqual(known?.run_exports, { "1.0": { strong: ["foo"] } });
  assert.equal(known?.binary_prefix, true);

  // A newer version with about.json wins; the previous entry still fills the gaps.
  const newer = channeldataEntry(
    [input("1.0"), input("2.0", { extras: { about: { summary: "new" } } })],
    previous,
  );
  assert.equal(newer?.summary, "new");
  assert.equal(newer?.home, "https://home");
  assert.equal(newer?.version, "2.0");

  // An older version with about.json does not beat the previous entry of a newer one.
  const older = channeldataEntry(
    [input("1.0"), input("0.9", { extras: { about: { summary: "old" } } })],
    previous,
  );
  assert.equal(older?.summary, "from disk");

  // When the previous entry's version is gone, it only fills what nothing else has.
  const removed = channeldataEntry(
    [input("0.9", { extras: { about: { summary: "old" } } })],
    previous,
  );
  assert.equal(removed?.summary, "old");
  assert.equal(removed?.home, "https://home");
});

Deno.test("channeldataEntry() cleans description and summary like conda-index", () => {
  const entry = channeldataEntry([
    input("1.0", {
      extras: { about: { description: "  line one\nline two \n", summary: ["a\nb"] } },
    }),
  ]);
  assert.equal(entry?.description, "line one line two");
  assert.equal(entry?.summary, "a b");
  assert.equal(channeldataEntry([]), undefined);
});

Deno.test("Channeldata.toJson() writes sorted entries and drops names with no package", () => {
  const channeldata = new Channeldata();
  channeldata.update("zeta", [input("1.0")]);
  channeldata.update("alpha", [input("1.0")]);
  channeldata.update("gone", [input("1.0")]);
  channeldata.update("gone", []);
  const text = channeldata.toJson(["noarch", "linux-64"]);
  assert.ok(text.endsWith("}\n"));
  const parsed = JSON.parse(text);
  assert.deepEqual(Object.keys(parsed), ["channeldata_version", "packages", "subdirs"]);
  assert.deepEqual(Object.keys(parsed.packages), ["alpha", "zeta"]);
  assert.deepEqual(parsed.subdirs, ["linux-64", "noarch"]);
});

Deno.test("Channeldata.usePrevious() refuses what is not channeldata", () => {
  const channeldata = new Channeldata();
  assert.throws(() => channeldata.usePrevious("nope"), SyntaxError);
  assert.throws(() => channeldata.usePrevious('{"packages":[]}'), SyntaxError);
  channeldata.usePrevious('{"packages":{"foo":{"version":"1.0","summary":"s"}}}');
  channeldata.update("foo", [input("1.0")]);
  assert.equal(JSON.parse(channeldata.toJson([])).packages.foo.summary, "s");
});
